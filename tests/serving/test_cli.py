"""`dnx infer` and `dnx serve` through click's CliRunner (the server is the real session server)."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.serving.server import free_port


@pytest.fixture
def runner():
    return CliRunner()


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_infer_sends_bytes_to_the_ensemble_and_prints_percentages(runner, triton_server, photo_paths, reference_logits,
                                                                  served_labels):
    result = runner.invoke(cli, ["infer", str(photo_paths[0]), str(photo_paths[1]), "--url", triton_server.grpc_url])
    assert result.exit_code == 0, result.output
    for path, ref in zip(photo_paths[:2], reference_logits):
        assert str(path) in result.output
        probs = _softmax(ref)
        for rank, index in enumerate(np.argsort(ref)[::-1][:5], 1):
            assert f"{rank}. {100 * probs[index]:9.2f}%  {served_labels[index]} ({index})" in result.output
    assert "6. " not in result.output


def test_infer_client_preprocess_keeps_the_tensor_path(runner, triton_server, served_model, photo_paths,
                                                       reference_logits, served_labels):
    result = runner.invoke(cli, ["infer", str(photo_paths[0]), "--client-preprocess", "--url", triton_server.grpc_url,
                                 "--json", "-k", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == served_model and data["scores"] == "logits"
    top = np.argsort(reference_logits[0])[::-1][:2]
    got = data["results"][0]["predictions"]
    assert [p["index"] for p in got] == top.tolist()
    np.testing.assert_allclose([p["score"] for p in got], reference_logits[0][top], rtol=1e-4, atol=1e-4)


def test_every_documented_format_is_served_through_the_ensemble(runner, triton_server, photo_paths, tmp_path):
    """README: JPEG, PNG, WebP, and BMP, TIFF, PPM, GIF too. The lossless ones answer exactly as the PNG."""
    from PIL import Image

    img = Image.open(photo_paths[0]).convert("RGB")
    files = {}
    for fmt, ext in (("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("PPM", "ppm"), ("GIF", "gif"),
                     ("WEBP", "webp"), ("JPEG", "jpg")):
        files[fmt] = tmp_path / f"photo.{ext}"
        img.save(files[fmt], fmt)
    result = runner.invoke(cli, ["infer", *map(str, files.values()), "--url", triton_server.grpc_url, "--json"])
    assert result.exit_code == 0, result.output
    got = {r["file"]: r for r in json.loads(result.stdout)["results"]}
    assert len(got) == len(files) and all(r["error"] is None and len(r["predictions"]) == 5 for r in got.values())
    png = got[str(files["PNG"])]["predictions"]
    for fmt in ("BMP", "TIFF", "PPM"):
        assert got[str(files[fmt])]["predictions"] == png, fmt


def test_infer_bytes_to_a_tensor_model_says_how_to_fix(runner, triton_server, served_model, photo_paths):
    result = runner.invoke(cli, ["infer", str(photo_paths[0]), "--model", served_model, "--url", triton_server.grpc_url])
    assert result.exit_code == 1 and "takes FP32 tensors, not encoded images" in result.output
    assert "--client-preprocess" in result.output and "Traceback" not in result.output


def test_infer_json_http_async(runner, triton_server, served_model, photo_paths, reference_logits, served_labels):
    args = ["infer", *map(str, photo_paths[:3]), "--protocol", "http", "--url", triton_server.http_url,
            "--json", "--top-k", "3", "--batch-size", "2", "--async", "--model", served_model, "--client-preprocess"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == served_model
    for entry, ref in zip(data["results"], reference_logits):
        assert entry["error"] is None and [p["rank"] for p in entry["predictions"]] == [1, 2, 3]
        top = np.argsort(ref)[::-1][:3]
        assert {p["index"] for p in entry["predictions"]} == set(top.tolist())
        assert all(p["label"] == served_labels[p["index"]] for p in entry["predictions"])


def test_infer_folder_with_a_non_image(runner, triton_server, photo_paths, tmp_path):
    for p in photo_paths[:2]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "fake.png").write_text("this is text, not a PNG")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    # Bytes path: the server finds the fake in the same request as the photographs; dnx resends
    # that batch one image per request, so the photographs are still answered.
    for extra, reason in (([], "fake.png: server error: not a decodable image"),
                          (["--client-preprocess"], "fake.png: not a readable image")):
        result = runner.invoke(cli, ["infer", str(tmp_path), "--url", triton_server.grpc_url, "--json", "-k", "1", *extra])
        assert result.exit_code == 1
        data = json.loads(result.stdout)
        by_name = {e["file"].rsplit("/", 1)[-1]: e for e in data["results"]}
        assert set(by_name) == {photo_paths[0].name, photo_paths[1].name, "fake.png"}
        assert reason in by_name["fake.png"]["error"]
        assert all(len(by_name[p.name]["predictions"]) == 1 for p in photo_paths[:2])
        assert "Error: 1 of 3 files could not be classified" in result.stderr


def test_infer_server_down(runner, photo_paths):
    result = runner.invoke(cli, ["infer", str(photo_paths[0]), "--url", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach Triton at 127.0.0.1:")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_infer_unknown_model(runner, triton_server, photo_paths):
    result = runner.invoke(cli, ["infer", str(photo_paths[0]), "--url", triton_server.grpc_url, "--model", "nope"])
    assert result.exit_code == 1 and "Error: model 'nope' is not ready" in result.output


def test_infer_no_images(runner, tmp_path):
    result = runner.invoke(cli, ["infer", str(tmp_path)])
    assert result.exit_code == 1 and "Error: no image files found" in result.output


def test_serve_help(runner):
    result = runner.invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--repository", "--mode", "--host", "--grpc-port", "--http-port", "--metrics-port", "--log-file", "--timeout"):
        assert option in result.output
    assert "auto|local|docker" in result.output


def test_serve_missing_repository(runner, tmp_path):
    result = runner.invoke(cli, ["serve", "--repository", str(tmp_path / "nope"), "--mode", "local"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: model repository") and result.output.count("\n") == 1


@pytest.mark.parametrize("damage", ["truncated", "not json"])
def test_serve_refuses_a_corrupt_manifest_in_one_line(runner, fp32_repository, tmp_path, damage):
    from tests.fixtures_server import _link_tree

    repo = tmp_path / "model_repository"
    _link_tree(fp32_repository, repo)
    manifest = repo / "dnx-manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2] if damage == "truncated" else "\x00garbage")
    result = runner.invoke(cli, ["serve", "--repository", str(repo), "--mode", "local", "--grpc-port", "0",
                                 "--http-port", "0", "--metrics-port", "0", "--log-file", str(tmp_path / "log")])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: {manifest} is unreadable or corrupt")
    assert "rebuild the repository with `dnx export`" in result.output
    assert not (tmp_path / "log").exists()  # refused before any server started


def test_serve_busy_port(runner, triton_server, serving_repository, tmp_path):
    result = runner.invoke(cli, ["serve", "--repository", str(serving_repository), "--mode", "local",
                                 "--http-port", str(triton_server.http_port), "--grpc-port", "0", "--metrics-port", "0",
                                 "--log-file", str(tmp_path / "log")])
    assert result.exit_code == 1
    assert "Error: http port" in result.output and "already in use" in result.output and "--http-port" in result.output
