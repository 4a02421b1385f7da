"""Starting and stopping a real local tritonserver: model choice, readiness, errors, signals."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dnx.errors import InputError, MissingDependencyError, ServerError
from dnx.serving.servable import choose_models
from dnx.serving.server import TritonServer, check_ports, free_port
from tests.fixtures_server import (
    ENSEMBLE_MODEL, PLAN_MODEL, PREPROCESS_MODEL, SOFTMAX_MODEL, TINY_MODEL, add_test_models,
)


def _ready(url: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{url}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_loads_servable_models_and_skips_plans(triton_server, served_model):
    assert triton_server.running and triton_server.mode == "local"
    assert set(triton_server.loaded) == {served_model, TINY_MODEL, ENSEMBLE_MODEL, PREPROCESS_MODEL, SOFTMAX_MODEL}
    assert "TensorRT" in triton_server.skipped[PLAN_MODEL]
    assert _ready(triton_server.http_url, f"/v2/models/{served_model}/ready") == 200
    assert _ready(triton_server.http_url, f"/v2/models/{PLAN_MODEL}/ready") != 200
    argv = " ".join(triton_server.argv)
    assert "--model-control-mode=explicit" in argv and f"--load-model={PLAN_MODEL}" not in argv
    assert "--grpc-address=127.0.0.1" in argv and "--http-address=127.0.0.1" in argv
    log = triton_server.log_file.read_text()
    assert f"successfully loaded '{served_model}'" in log
    # Every config dnx renders is whole: the server must not start a Python stub per load to
    # auto-complete it (the backends' table in the log echoes each backend's settings).
    assert '"auto-complete-config":"false"' in log and '"auto-complete-config":"true"' not in log


def test_busy_port_is_refused_before_launch(triton_server, serving_repository):
    server = TritonServer(serving_repository, grpc_port=triton_server.grpc_port, http_port=0, metrics_port=0)
    with pytest.raises(ServerError, match=r"grpc port \d+ on 127.0.0.1 is already in use.*--grpc-port") as exc:
        server.start()
    assert "\n" not in str(exc.value)
    assert server.argv == [] and not server.running  # nothing was launched


def test_duplicate_ports_are_refused():
    port = free_port()
    with pytest.raises(InputError, match="both"):
        check_ports("127.0.0.1", {"grpc": port, "http": port})


def test_missing_repository(tmp_path):
    with pytest.raises(InputError, match=r"model repository .*missing does not exist; build it with `dnx export`") as exc:
        TritonServer(tmp_path / "missing", grpc_port=0, http_port=0, metrics_port=0).start()
    assert "\n" not in str(exc.value)


def test_missing_binary(serving_repository, tmp_path):
    server = TritonServer(serving_repository, grpc_port=0, http_port=0, metrics_port=0, tritonserver=tmp_path / "tritonserver")
    with pytest.raises(MissingDependencyError, match="tritonserver binary not found.*nvidia-pytriton"):
        server.start()
    assert server._workdir is None  # the generated backend folder was removed


def test_nothing_servable(tmp_path):
    add_test_models(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / TINY_MODEL)
    with pytest.raises(ServerError, match=f"nothing in .* can be served in local mode .*{PLAN_MODEL}: TensorRT"):
        TritonServer(tmp_path, grpc_port=0, http_port=0, metrics_port=0).start()


def test_model_choice_by_mode(serving_repository, served_model):
    local = {c.name: c for c in choose_models(serving_repository, mode="local", gpu=True)}
    docker_gpu = {c.name: c for c in choose_models(serving_repository, mode="docker", gpu=True)}
    docker_cpu = {c.name: c for c in choose_models(serving_repository, mode="docker", gpu=False)}
    assert local[served_model].load and local[TINY_MODEL].load
    assert not local[PLAN_MODEL].load and "TensorRT" in local[PLAN_MODEL].reason
    assert docker_gpu[PLAN_MODEL].load and not docker_cpu[PLAN_MODEL].load
    assert local[ENSEMBLE_MODEL].load and local[PREPROCESS_MODEL].load and local[SOFTMAX_MODEL].load


def test_ensemble_over_a_skipped_variant_is_skipped(serving_repository, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(serving_repository, repo)
    cfg = repo / ENSEMBLE_MODEL / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('model_name: "densenet121_onnx"', f'model_name: "{PLAN_MODEL}"'))
    local = {c.name: c for c in choose_models(repo, mode="local", gpu=False)}
    assert not local[ENSEMBLE_MODEL].load
    assert f"its step {PLAN_MODEL} is not served (TensorRT plan needs an NVIDIA GPU" in local[ENSEMBLE_MODEL].reason
    assert local[PREPROCESS_MODEL].load


@pytest.mark.server
@pytest.mark.slow
def test_failed_model_load_reports_log_tail(tmp_path):
    add_test_models(tmp_path)
    cfg = tmp_path / TINY_MODEL / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('name: "x"', 'name: "not_in_graph"'))
    server = TritonServer(tmp_path, grpc_port=0, http_port=0, metrics_port=0, log_file=tmp_path / "t.log")
    with pytest.raises(ServerError, match=r"tritonserver exited with code \d+ while starting: .*not_in_graph") as exc:
        server.start()
    assert "\n" not in str(exc.value) and str(tmp_path / "t.log") in str(exc.value)
    assert not server.running


def _group_members(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    out.append(int(d.name))
            except (ProcessLookupError, PermissionError):
                pass
    return out


@pytest.mark.server
def test_stop_leaves_no_process_behind(tmp_path):
    add_test_models(tmp_path)
    with TritonServer(tmp_path, grpc_port=0, http_port=0, metrics_port=0, log_file=tmp_path / "log") as server:
        pid = server._proc.pid
        members = _group_members(pid)
        assert len(members) >= 2, "expected tritonserver and its Python backend stub"
        workdir = server._workdir
    assert _group_members(pid) == []
    assert not workdir.exists()
    check_ports("127.0.0.1", {"grpc": server.grpc_port, "http": server.http_port})  # ports free again


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_dnx_serve_stops_cleanly_on_signal(tmp_path, sig):
    add_test_models(tmp_path)
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnx", "serve", "--repository", str(tmp_path), "--mode", "local",
         "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--log-file", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        text = "".join(lines)
        assert "Ctrl-C to stop" in text, text
        assert f"loaded   {TINY_MODEL}" in text and f"skipped  {PLAN_MODEL}: TensorRT" in text
        http = re.search(r"http\s+(\S+)", text).group(1)
        assert _ready(http, f"/v2/models/{TINY_MODEL}/ready") == 200
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, rest
    assert f"Error: interrupted by {signal.Signals(sig).name}; tritonserver stopped" in rest
    assert "successfully unloaded" in log.read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{http}/v2/health/live", timeout=5)


@pytest.mark.server
def test_serving_leaves_the_repository_as_exported(fp32_repository, tmp_path):
    """The Python stubs import the preprocessing model.py from the repository: serving (and answering
    through the ensemble) must not add __pycache__/ to it, or publish refuses it and the version id moves."""
    import numpy as np
    import tritonclient.http as httpclient

    from dnx.deploy.publish import check_files, scan_repository, version_id
    from dnx.ops.golden import golden_images
    from tests.fixtures_server import _link_tree

    repo = tmp_path / "model_repository"
    _link_tree(fp32_repository, repo)
    before = scan_repository(repo)
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, log_file=tmp_path / "log") as server:
        assert PREPROCESS_MODEL in server.loaded
        client = httpclient.InferenceServerClient(server.http_url)
        inp = httpclient.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[golden_images(1)[0][1]]], dtype=np.object_))
        out = client.infer(ENSEMBLE_MODEL, [inp]).as_numpy("probabilities")
        assert out.shape == (1, 1000) and abs(float(out.sum()) - 1) < 1e-3
        client.close()
    after = scan_repository(repo)
    assert [f.path for f in after if "__pycache__" in f.path] == []
    assert after == before and version_id(after) == version_id(before)
    assert check_files(repo, after) == []  # what `dnx publish` checks first: nothing extra, nothing changed
