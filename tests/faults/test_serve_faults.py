"""``dnx serve``, ``dnx infer`` and ``dnx validate --served`` under faults: signals, busy ports, hung servers."""

from __future__ import annotations

import shutil
import signal
import socket
import time

import pytest

from dnx.serving.server import TritonServer
from tests.faults.conftest import (assert_group_gone, finish, handles_sigterm, one_error_line, send, tritonserver_child,
                                   wait_for)

pytestmark = [pytest.mark.faults]


@pytest.mark.server
@pytest.mark.parametrize("sig,times", [(signal.SIGTERM, 1), (signal.SIGINT, 2)], ids=["sigterm", "sigint-twice"])
def test_serve_stops_its_server_on_signals(dnx, serving_repository, sig, times):
    proc = dnx.start("serve", "--repository", serving_repository, "--mode", "local", "--grpc-port", "0",
                     "--http-port", "0", "--metrics-port", "0", "--log-file", dnx.cwd / "server.log")
    server = wait_for(lambda: tritonserver_child(proc.pid), 120, "tritonserver to start", proc)
    # Ready: with explicit model control the services start after the models loaded.
    log = dnx.cwd / "server.log"
    wait_for(lambda: log.is_file() and "Started GRPCInferenceService" in log.read_text(errors="replace"),
             300, "the server to be ready", proc)
    t0 = send(proc, sig, times)
    code, out, err = finish(proc, timeout=60)
    took = assert_group_gone(server, t0)
    print(f"{signal.Signals(sig).name} x{times}: tritonserver group gone {took:.1f}s after the signal")
    assert code == 128 + sig, err  # like every command (docs/RELIABILITY.md), after the server is stopped
    assert one_error_line(err) == f"Error: interrupted by {signal.Signals(sig).name}; tritonserver stopped"
    assert "Traceback" not in err


@pytest.mark.server
def test_sigkill_of_dnx_serve_still_stops_its_server(dnx, serving_repository):
    """Nothing of dnx runs on SIGKILL: the local server's PR_SET_PDEATHSIG is what stops it."""
    proc = dnx.start("serve", "--repository", serving_repository, "--mode", "local", "--grpc-port", "0",
                     "--http-port", "0", "--metrics-port", "0", "--log-file", dnx.cwd / "server.log")
    server = wait_for(lambda: tritonserver_child(proc.pid), 120, "tritonserver to start", proc)
    t0 = send(proc, signal.SIGKILL)
    finish(proc, timeout=60)
    took = assert_group_gone(server, t0)
    print(f"SIGKILL of dnx serve: tritonserver group gone {took:.1f}s later")
    for run in dnx.tmpdir.glob("dnx-triton-*"):  # dnx could not clean up (the next run removes it: dead owner)
        shutil.rmtree(run)


def test_busy_port_is_one_line_and_leaves_nothing(dnx, serving_repository):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = dnx.run("serve", "--repository", serving_repository, "--mode", "local", "--grpc-port", port,
                    "--http-port", "0", "--metrics-port", "0", timeout=120)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert f"grpc port {port} on 127.0.0.1 is already in use" in line and "--grpc-port" in line


def test_host_beyond_loopback_warns_about_authentication(dnx, tmp_path):
    r = dnx.run("serve", "--host", "0.0.0.0", "--repository", tmp_path / "missing", "--mode", "local", timeout=120)
    assert r.returncode == 1  # the repository is missing; the warning comes first
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning: ")]
    assert len(warning) == 1 and "no authentication" in warning[0]
    assert "reverse proxy" in warning[0] and "Kubernetes" in warning[0]
    r = dnx.run("serve", "--repository", tmp_path / "missing", "--mode", "local", timeout=120)
    assert "Warning" not in r.stderr


@pytest.fixture
def own_server(serving_repository):
    """A server this test may stop, hang or kill (not the session one)."""
    server = TritonServer(serving_repository, mode="local", grpc_port=0, http_port=0, metrics_port=0,
                          models=["densenet121_onnx"], ready_timeout=300).start()
    yield server
    import os

    try:
        os.killpg(server._proc.pid, signal.SIGCONT)
    except (ProcessLookupError, AttributeError):
        pass
    server.stop()


@pytest.mark.server
def test_hung_server_times_out_then_killed_server_is_one_line(dnx, own_server, photos):
    """SIGSTOP freezes the server: `dnx infer --timeout 3` gives up in one line; SIGKILL: connection lost."""
    import os

    os.killpg(own_server._proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    r = dnx.run("infer", photos[0], "--url", own_server.grpc_url, "--model", "densenet121_onnx", "--timeout", "3",
                timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "no answer within 3s" in line and "--timeout" in line
    print(f"dnx infer against a frozen server gave up after {took:.1f}s (--timeout 3, incl. interpreter start)")
    os.killpg(own_server._proc.pid, signal.SIGCONT)

    os.killpg(own_server._proc.pid, signal.SIGKILL)
    r = dnx.run("infer", photos[0], "--url", own_server.grpc_url, "--model", "densenet121_onnx", timeout=120)
    assert r.returncode == 1
    assert "cannot reach Triton" in one_error_line(r.stderr)


@pytest.mark.server
def test_validate_served_interrupted_is_one_line(dnx, triton_server, serving_repository):
    proc = dnx.start("validate", "--served", "--url", triton_server.grpc_url, "--repository", serving_repository,
                     "--models", "densenet121_onnx")
    # The CLI catches SIGTERM from the moment the command starts; validate then still has its
    # reference model (ONNX Runtime) to load and run, seconds of work, so the signal lands mid-run.
    wait_for(lambda: handles_sigterm(proc.pid), 60, "dnx to install its SIGTERM handler", proc, poll=0.02)
    send(proc, signal.SIGTERM)
    code, _, err = finish(proc, timeout=60)
    assert code == 128 + signal.SIGTERM, err  # exit 0 would mean the signal was ignored: a failure, not a skip
    assert one_error_line(err) == "Error: interrupted by SIGTERM"
