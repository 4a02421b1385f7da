"""dnx.serving.client against the real session server: labels, logits, per-file errors, server errors."""

import numpy as np
import pytest

from dnx.errors import ServerError
from dnx.serving.client import classify, infer_logits, parse_classification
from dnx.serving.server import free_port


TOL = 1e-4


def test_parse_classification():
    p = parse_classification(b"12.5:281:tabby, tabby cat")
    assert (p.score, p.index, p.label) == (12.5, 281, "tabby, tabby cat")
    assert parse_classification("0.5:3").label == ""


@pytest.mark.parametrize("protocol,async_", [("grpc", False), ("grpc", True), ("http", False), ("http", True)])
def test_classify_top_k_matches_in_process(triton_server, served_model, photo_paths, reference_logits, served_labels, protocol, async_):
    results = classify(photo_paths, url=triton_server.urls[protocol], model=served_model, protocol=protocol,
                       top_k=3, batch_size=3, async_=async_)
    assert [r.path for r in results] == [str(p) for p in photo_paths]
    for r, ref in zip(results, reference_logits):
        assert r.ok and len(r.predictions) == 3
        np.testing.assert_allclose([p.score for p in r.predictions], np.sort(ref)[::-1][:3], atol=TOL)
        for p in r.predictions:
            assert abs(ref[p.index] - p.score) <= TOL and p.label == served_labels[p.index]


def test_unreadable_file_gets_its_own_error(triton_server, served_model, photo_paths, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    results = classify([photo_paths[0], bad, photo_paths[1]], url=triton_server.grpc_url, model=served_model, top_k=2)
    assert [r.ok for r in results] == [True, False, True]
    assert "broken.jpg: not a readable image" in results[1].error
    assert all(len(r.predictions) == 2 for r in results if r.ok)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_logits_parity(triton_server, served_model, photo_inputs, reference_logits, protocol):
    served = infer_logits(photo_inputs, url=triton_server.urls[protocol], model=served_model, protocol=protocol, batch_size=100)
    err = np.abs(served - reference_logits).max()
    print(f"infer_logits over {protocol}: max abs error {err:.3g}")
    assert err <= TOL


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_line_server_error(photo_paths, protocol):
    with pytest.raises(ServerError, match=r"cannot reach Triton at 127.0.0.1:\d+ over .*start it with `dnx serve`") as exc:
        classify(photo_paths[:1], url=f"127.0.0.1:{free_port()}", protocol=protocol)
    assert "\n" not in str(exc.value)


def test_model_not_ready_lists_ready_models(triton_server, served_model, photo_paths):
    with pytest.raises(ServerError, match=f"model 'densenet121_nope' is not ready .*{served_model}"):
        classify(photo_paths[:1], url=triton_server.grpc_url, model="densenet121_nope")
    with pytest.raises(ServerError, match="dnx_test_plan' is not ready"):
        infer_logits(np.zeros((1, 3, 224, 224), np.float32), url=triton_server.http_url, model="dnx_test_plan", protocol="http")


def test_plain_tritonclient_example(triton_server, served_model, photo_paths, reference_logits, served_labels):
    """examples/tritonclient_grpc.py runs with no dnx import and prints the server's top-5."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "tritonclient_grpc.py"
    assert "import dnx" not in script.read_text() and "from dnx" not in script.read_text()
    out = subprocess.run([sys.executable, str(script), str(photo_paths[1]), "--url", triton_server.grpc_url,
                          "--model", served_model], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5
    top = np.argsort(reference_logits[1])[::-1][:5]
    assert {int(line.rsplit("(", 1)[1].rstrip(")")) for line in lines} == set(top.tolist())
    assert all(any(served_labels[i] in line for line in lines) for i in top)


@pytest.mark.parametrize("async_", [False, True])
def test_folder_is_streamed_batch_by_batch(triton_server, served_model, photo_paths, reference_logits, tmp_path, async_):
    """48 images in a folder, batch 2: peak Python memory stays far below the folder decoded at once."""
    import os
    import tracemalloc

    folder = tmp_path / "many"
    folder.mkdir()
    n = 48
    for i in range(n):
        src = photo_paths[i % len(photo_paths)]
        os.link(src, folder / f"{i:03d}{src.suffix}")
    whole = n * 3 * 224 * 224 * 4  # the folder as float32 tensors: 29 MB
    tracemalloc.start()
    try:
        results = classify([folder], url=triton_server.grpc_url, model=served_model, top_k=1, batch_size=2, async_=async_)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"classify 48 images, batch 2, async={async_}: peak traced memory {peak / 2**20:.1f} MiB "
          f"(the folder decoded: {whole / 2**20:.1f} MiB)")
    assert len(results) == n and all(r.ok for r in results)
    for i, r in enumerate(results):  # answers matched to the right files
        ref = reference_logits[i % len(photo_paths)]
        assert r.predictions[0].index == int(np.argmax(ref))
    assert peak < whole / 2  # measured: 5.0 MiB sync, 9.3 MiB async (4 batches in flight) of 27.6
