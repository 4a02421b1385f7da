"""Real tritonserver replicas serving a repository published to a real S3-compatible server (moto)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.deploy.publish import publish
from dnx.serving.server import TritonServer

pytestmark = [pytest.mark.server, pytest.mark.s3]
MODEL = "densenet121_onnx"


@pytest.fixture(scope="module")
def published(fp32_repository, s3_server):
    """fp32_repository published once for this module: (s3 uri, endpoint)."""
    import os

    uri = f"s3://{s3_server.bucket}/serve-{uuid.uuid4().hex[:8]}"
    env = s3_server.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        publish(fp32_repository, uri, endpoint_url=s3_server.url, progress=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return uri, s3_server.url


@pytest.fixture(scope="module")
def reference(fp32_repository, photo_array):
    """In-process ONNX Runtime logits of the shipped photographs, from the local model file."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(fp32_repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": photo_array})[0]


def _server(uri, endpoint, tmp_path, name, **kw):
    return TritonServer(uri, mode="local", grpc_port=0, http_port=0, metrics_port=0, ready_timeout=300,
                        endpoint_url=endpoint, log_file=tmp_path / f"{name}.log", **kw)


@pytest.mark.parametrize("sync", [False, True], ids=["triton-reads-s3", "synced-copy"])
def test_served_from_s3_answers_like_the_local_folder(sync, published, s3_env, fp32_repository, photos, tmp_path,
                                                      triton_server_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri, endpoint = published
    args = ["infer", *map(str, photos[:3]), "--json", "--top-k", "5"]
    local = triton_server_factory(fp32_repository, log_file=tmp_path / "local.log")
    from_local = CliRunner().invoke(cli, [*args, "--url", local.grpc_url])
    assert from_local.exit_code == 0, from_local.output
    with _server(uri, endpoint, tmp_path, "s3", s3_sync=sync) as server:
        assert server.loaded == local.loaded and MODEL in server.loaded
        version = server.remote.published.version
        if sync:  # a verified copy under the cache, named after the version
            copy = tmp_path / "cache" / "dnx" / "s3" / server.remote.published.version_location.bucket
            # Triton reads it through a view of links (repository_view), so nothing is written into the copy.
            served = Path(server.argv[1].split("=", 1)[1]) / MODEL / "1" / "model.onnx"
            assert str(served.resolve()).startswith(f"{copy.resolve()}/") and served.stat().st_size > 30_000_000
            assert version in str(served.resolve())
        else:
            assert server.argv[1].startswith(f"--model-repository=s3://{endpoint}/") and version in server.argv[1]
        from_s3 = CliRunner().invoke(cli, [*args, "--url", server.grpc_url])
    assert from_s3.exit_code == 0, from_s3.output
    a, b = json.loads(from_local.stdout)["results"], json.loads(from_s3.stdout)["results"]
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert [p["index"] for p in x["predictions"]] == [p["index"] for p in y["predictions"]]
        assert [p["label"] for p in x["predictions"]] == [p["label"] for p in y["predictions"]]
        np.testing.assert_allclose([p["score"] for p in x["predictions"]], [p["score"] for p in y["predictions"]], atol=1e-5)


def test_two_replicas_share_one_published_repository(published, s3_env, reference, photo_array, tmp_path):
    import tritonclient.grpc as grpcclient

    uri, endpoint = published
    with _server(uri, endpoint, tmp_path, "a") as a, _server(uri, endpoint, tmp_path, "b") as b:
        assert a.grpc_port != b.grpc_port and a.remote.uri == b.remote.uri
        urls = [a.grpc_url, b.grpc_url]
        before = [_successes(u) for u in urls]  # the config's warm-up request counts too
        errors, worst, lock = [], [0.0], threading.Lock()

        def client(t, requests=6):
            clients = [grpcclient.InferenceServerClient(u) for u in urls]
            try:
                for k in range(requests):  # round-robin over the replicas, as a Service would spread them
                    i = (t + k) % len(photo_array)
                    inp = grpcclient.InferInput("input", [1, *photo_array.shape[1:]], "FP32")
                    inp.set_data_from_numpy(np.ascontiguousarray(photo_array[i : i + 1]))
                    out = clients[(t + k) % 2].infer(MODEL, [inp]).as_numpy("logits")
                    with lock:
                        worst[0] = max(worst[0], float(np.abs(out[0] - reference[i]).max()))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
            finally:
                for c in clients:
                    c.close()

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert errors == [] and worst[0] < 1e-4, (errors, worst)
        # Triton updates its statistics after the response is sent: give the last one a moment to land.
        deadline, counts = time.monotonic() + 10, None
        while counts != [12, 12] and time.monotonic() < deadline:
            counts = [_successes(u) - n for u, n in zip(urls, before)]
            time.sleep(0.2) if counts != [12, 12] else None
        assert counts == [12, 12]  # both replicas answered their share


def _successes(url: str) -> int:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as c:
        stats = c.get_inference_statistics(MODEL, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


def test_serve_cli_missing_bucket_is_one_line(s3_env):
    result = CliRunner().invoke(cli, ["serve", "--repository", "s3://no-such-bucket-dnx/x", "--endpoint-url", s3_env.url,
                                      "--mode", "local", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"])
    assert result.exit_code == 1
    assert "Error: bucket 'no-such-bucket-dnx' does not exist" in result.stderr and result.stderr.count("\n") == 1


def test_serve_cli_unpublished_prefix(s3_env):
    result = CliRunner().invoke(cli, ["serve", "--repository", f"s3://{s3_env.bucket}/never-published",
                                      "--endpoint-url", s3_env.url, "--grpc-port", "0", "--http-port", "0",
                                      "--metrics-port", "0", "--mode", "local"])
    assert result.exit_code == 1
    assert "holds no dnx-current.json; publish a repository there first with `dnx publish`" in result.stderr


@pytest.mark.slow
def test_perf_launch_serves_the_published_version(published, s3_env, tmp_path):
    import csv

    uri, endpoint = published
    out = tmp_path / "perf"
    result = CliRunner().invoke(cli, ["perf", "--launch", "--repository", uri, "--endpoint-url", endpoint,
                                      "--models", MODEL, "--concurrency", "1:1", "--batch-size", "1", "--out", str(out),
                                      "--measurement-interval", "1000", "--stability-percentage", "100",
                                      "--max-trials", "3", "-q"])
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and float(rows[0]["throughput"]) > 0
    assert (rows[0]["model"], rows[0]["precision"], rows[0]["runtime"]) == (MODEL, "fp32", "onnxruntime")
    # The launched server read the published version from S3 (Triton prints its repository path).
    log = (out / "tritonserver.log").read_text()
    assert f"s3://{endpoint}/" in log and "/versions/" in log
