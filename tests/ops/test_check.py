"""`dnx check` against real tritonservers: what passes, and every way it must fail (one line, exit 1)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.ops import golden as g

MODELS = ("densenet121_onnx", "densenet121_preprocess", "densenet121_softmax", "densenet121")


def _check(*args):
    return CliRunner().invoke(cli, ["check", *args])


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert line.startswith("Error: ")
    return line


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_faithful_server_passes(ops_server, fp32_repository, protocol):
    url = ops_server.grpc_url if protocol == "grpc" else ops_server.http_url
    result = _check("--url", url, "--protocol", protocol, "--repository", str(fp32_repository))
    assert result.exit_code == 0, result.output
    for model in MODELS:
        assert f"{url}  {model}" in result.output
    assert "FAIL" not in result.output
    # ready + config each; answers and labels for the two that answer
    assert result.output.count("PASS") == 4 * 2 + 2 * 2
    assert re.search(r"densenet121 +labels +PASS +20 top-5 labels equal to the repository's labels.txt", result.output)


def test_json_report_and_latency_budget(ops_server, fp32_repository):
    url = ops_server.grpc_url
    ok = _check("--url", url, "--repository", str(fp32_repository), "--requests", "6", "--concurrency", "2",
                "--p99-ms", "600000", "--json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["passed"] is True
    lat = data["latency"][url]
    assert lat["model"] == "densenet121" and lat["ok"] == 6 and lat["errors"] == 0 and lat["p99_ms"] > 0
    checks = {(f["model"], f["check"]) for f in data["findings"]}
    assert ("densenet121_onnx", "answers") in checks and ("densenet121", "latency") in checks
    tight = _check("--url", url, "--repository", str(fp32_repository), "--requests", "4", "--p99-ms", "0.001")
    line = _one_line_error(tight)
    assert f"{url} densenet121 latency: p50" in line and "(budget 0.001 ms)" in line


def test_needs_neither_torch_nor_onnxruntime(ops_server, fp32_repository):
    """What the client image has: the check runs with torch, ONNX Runtime, OpenVINO and Polygraphy unimportable."""
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision', 'onnxruntime', 'openvino', 'polygraphy', 'onnx', 'tensorrt'):\n"
        "    sys.modules[m] = None  # import raises ImportError\n"
        "from dnx.cli import main\n"
        "try:\n"
        f"    main(['check', '--url', {ops_server.grpc_url!r}, '--repository', {str(fp32_repository)!r}])\n"
        "except SystemExit as e:\n"
        "    sys.exit(e.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "densenet121_onnx" in out.stdout and "FAIL" not in out.stdout


def test_another_exports_weights_fail_naming_the_model_and_the_cosine(seed1_server, fp32_repository):
    """The served models were exported with seed 1; the golden set is seed 0's."""
    result = _check("--url", seed1_server.grpc_url, "--repository", str(fp32_repository))
    line = _one_line_error(result)
    assert f"{seed1_server.grpc_url} densenet121_onnx answers: cosine" in line and "< 0.99999" in line
    assert "densenet121  " in result.stdout and "(gate of densenet121_onnx)" in result.stdout


def test_a_second_replica_on_another_version_fails(ops_server, seed1_server, fp32_repository):
    result = _check("--url", ops_server.grpc_url, "--url", seed1_server.grpc_url, "--repository", str(fp32_repository))
    line = _one_line_error(result)
    assert seed1_server.grpc_url in line and ops_server.grpc_url not in line
    rows = [r for r in result.stdout.splitlines() if r.startswith(ops_server.grpc_url)]
    assert rows and all(" PASS " in r for r in rows)


def test_server_down_is_one_line(fp32_repository):
    from dnx.serving.server import free_port

    url = f"127.0.0.1:{free_port()}"
    line = _one_line_error(_check("--url", url, "--repository", str(fp32_repository), "--timeout", "5"))
    assert f"cannot reach a Triton server at {url} over grpc" in line
    line = _one_line_error(_check("--url", url, "--protocol", "http", "--repository", str(fp32_repository),
                                  "--timeout", "5"))
    assert "over http" in line


def test_missing_model_and_changed_config_are_named(ops_server, fp32_repository, tmp_path):
    doc = g.read_golden(fp32_repository / g.GOLDEN_NAME)
    extra = json.loads(json.dumps(doc["models"]["densenet121_onnx"]))
    doc["models"]["densenet121_onnx_int8"] = {**extra, "precision": "int8"}
    doc["models"]["densenet121_onnx"]["config"]["max_batch_size"] = 16
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(doc))
    result = _check("--url", ops_server.grpc_url, "--golden", str(path))
    line = _one_line_error(result)
    assert "densenet121_onnx config: max_batch_size: expected 16, served 8" in line and "(and 1 more" in line
    assert re.search(r"densenet121_onnx_int8 +ready +FAIL +model missing", result.stdout)


def test_golden_set_of_another_model_is_one_line(ops_server, fp32_repository, tmp_path):
    doc = g.read_golden(fp32_repository / g.GOLDEN_NAME)
    other = {"format": doc["format"], "model": "resnet50", "images": doc["images"], "trained": False,
             "models": {k.replace("densenet121", "resnet50"): v for k, v in doc["models"].items()}}
    path = tmp_path / "resnet50-golden.json"
    path.write_text(json.dumps(other))
    line = _one_line_error(_check("--url", ops_server.grpc_url, "--golden", str(path)))
    assert "the golden set is for resnet50" in line and "pass the golden set of the repository that is deployed" in line
    # Not a golden file at all (the manifest), and a changed golden file under --repository:
    line = _one_line_error(_check("--url", ops_server.grpc_url, "--golden", str(fp32_repository / "dnx-manifest.json")))
    assert "is not a dnx golden set" in line


def test_golden_file_changed_after_export_is_refused(ops_server, fp32_repository, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(fp32_repository / "dnx-manifest.json", repo)
    doc = g.read_golden(fp32_repository / g.GOLDEN_NAME)
    doc["models"]["densenet121_onnx"]["gate"]["min_cosine"] = 0.0
    (repo / g.GOLDEN_NAME).write_text(json.dumps(doc))
    line = _one_line_error(_check("--url", ops_server.grpc_url, "--repository", str(repo)))
    assert "does not match the sha256 the manifest recorded" in line


@pytest.mark.s3
def test_golden_set_from_a_published_version(ops_server, fp32_repository, s3_env):
    import uuid

    from dnx.deploy.publish import publish

    uri = f"s3://{s3_env.bucket}/check-{uuid.uuid4().hex[:8]}"
    publish(fp32_repository, uri, endpoint_url=s3_env.url, progress=False)
    result = _check("--url", ops_server.grpc_url, "--repository", uri, "--endpoint-url", s3_env.url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"Golden set: {uri}/versions/")


def test_a_manifest_model_without_golden_answers_is_still_checked_for_readiness(ops_server, fp32_repository, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(fp32_repository / g.GOLDEN_NAME, repo)
    for model in MODELS:
        (repo / model).mkdir()
        shutil.copy(fp32_repository / model / "config.pbtxt", repo / model)
    manifest = json.loads((fp32_repository / "dnx-manifest.json").read_text())
    manifest["models"]["densenet121_onnx_fp16"] = {**manifest["models"]["densenet121_onnx"], "precision": "fp16"}
    (repo / "dnx-manifest.json").write_text(json.dumps(manifest))
    (repo / "densenet121_onnx_fp16").mkdir()
    (repo / "densenet121_onnx_fp16" / "config.pbtxt").write_text(
        (fp32_repository / "densenet121_onnx" / "config.pbtxt").read_text().replace("densenet121_onnx", "densenet121_onnx_fp16"))
    result = _check("--url", ops_server.grpc_url, "--repository", str(repo))
    line = _one_line_error(result)
    assert "densenet121_onnx_fp16 ready: model missing" in line
    assert re.search(r"densenet121_onnx +answers +PASS", result.stdout)


@pytest.fixture(scope="module")
def shuffled_labels_server(triton_server_factory, fp32_repository, tmp_path_factory):
    """A copy of the repository whose label files are reversed: every class index gets another class's name."""
    from tests.fixtures_server import _link_tree

    repo = tmp_path_factory.mktemp("shuffled") / "model_repository"
    _link_tree(fp32_repository, repo)
    for labels in repo.glob("*/labels.txt"):
        labels.write_text("\n".join(reversed(labels.read_text().splitlines())) + "\n")
    return triton_server_factory(repo, log_file=tmp_path_factory.mktemp("shuffled-log") / "tritonserver.log")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_served_label_file_that_differs_fails_naming_the_model_and_class(shuffled_labels_server, fp32_repository,
                                                                          protocol):
    """Answers and configs are right; only the labels the server answers with are not the repository's."""
    labels = (fp32_repository / "densenet121_onnx" / "labels.txt").read_text().splitlines()
    url = shuffled_labels_server.grpc_url if protocol == "grpc" else shuffled_labels_server.http_url
    result = _check("--url", url, "--protocol", protocol, "--repository", str(fp32_repository))
    line = _one_line_error(result)
    m = re.search(r"densenet121_onnx labels: class (\d+) served as '([^']*)', the repository's labels.txt says '([^']*)'",
                  line)
    assert m, line
    k = int(m.group(1))
    assert m.group(2) == labels[len(labels) - 1 - k] != labels[k] == m.group(3)
    assert "(and 1 more failing check)" in line  # the ensemble's labels
    assert re.search(r"densenet121 +labels +FAIL +class \d+ served as", result.stdout)
    for model in ("densenet121_onnx", "densenet121"):
        assert re.search(rf"{model} +answers +PASS", result.stdout)


def test_a_label_file_changed_in_the_repository_is_refused(ops_server, fp32_repository, tmp_path):
    from tests.fixtures_server import _link_tree

    repo = tmp_path / "repo"
    _link_tree(fp32_repository, repo)
    labels = repo / "densenet121" / "labels.txt"
    labels.write_text(labels.read_text().replace("\n", " (renamed)\n", 1))
    line = _one_line_error(_check("--url", ops_server.grpc_url, "--repository", str(repo)))
    assert f"{labels} does not match the sha256 dnx-manifest.json recorded" in line
