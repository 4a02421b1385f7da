"""``dnx perf`` and ``dnx bench`` under faults: the server killed mid-sweep, SIGTERM / SIGINT with --launch.

Promised: every level measured before the fault is kept (report marked incomplete, non-zero
exit), ``dnx perf --resume`` continues, the launched tritonserver is gone within 15 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from dnx.serving.server import TritonServer
from tests.faults.conftest import (
    assert_group_gone, children, cmdline, fill_disk, finish, one_error_line, send, tritonserver_child, wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.server]

# Short windows, loose stability; a window that ends before any request finished is retried doubled.
FAST = ["--measurement-interval", "1000", "--stability-percentage", "100", "--max-trials", "3", "--retries", "1", "-q"]


def measured(out) -> list[int]:
    try:
        state = json.loads((out / "sweep-state.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted(m["concurrency"] for m in state["measurements"])


def test_server_killed_mid_sweep_keeps_levels_and_resume_finishes(dnx, serving_repository, triton_server, tmp_path):
    server = TritonServer(serving_repository, mode="local", grpc_port=0, http_port=0, metrics_port=0,
                          models=["densenet121_onnx"], ready_timeout=300).start()
    out = tmp_path / "sweep"
    try:
        proc = dnx.start("perf", "--url", server.grpc_url, "--models", "densenet121_onnx", "--concurrency", "1:3",
                         "--out", out, "--repository", serving_repository, *FAST)
        wait_for(lambda: measured(out), 300, "the first level on disk", proc)
        os.killpg(server._proc.pid, signal.SIGKILL)  # the server dies under load
        code, _, err = finish(proc, timeout=300)
    finally:
        server.stop()

    assert code == 1
    line = one_error_line(err)
    kept = measured(out)
    assert kept and kept != [1, 2, 3], kept
    assert line.startswith("Error: sweep incomplete: ")
    assert f"{len(kept)} of 3 points measured and kept in {out}" in line and f"dnx perf --resume {out}" in line
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["incomplete_reason"]
    assert sorted(r["concurrency"] for r in report["results"]) == kept
    assert "**Incomplete sweep**" in (out / "report.md").read_text()
    before = {r["concurrency"]: r["throughput"] for r in report["results"]}

    # Resume against another server: only the missing levels are measured.
    r = dnx.run("perf", "--resume", out, "--url", triton_server.grpc_url, "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True
    rows = {x["concurrency"]: x["throughput"] for x in report["results"]}
    assert sorted(rows) == [1, 2, 3]
    assert all(rows[c] == before[c] for c in kept)  # kept levels were not measured again
    assert all(rows[c] > 0 for c in rows)


@pytest.mark.parametrize("command,sig", [("perf", signal.SIGTERM), ("bench", signal.SIGINT)],
                         ids=["perf-launch-sigterm", "bench-sigint"])
def test_launched_server_is_gone_after_a_signal(dnx, serving_repository, tmp_path, command, sig):
    out = tmp_path / "results"
    if command == "perf":
        args = ["perf", "--launch", "--repository", serving_repository, "--models", "densenet121_onnx",
                "--concurrency", "1:4", "--out", out, *FAST]
        ready = lambda: measured(out)  # noqa: E731
        what = "the first level on disk"
    else:
        args = ["bench", "--repository", serving_repository, "--quick", "--no-torch", "--models", "densenet121_onnx",
                "--out-md", tmp_path / "BENCH.md", "--results", out, "-q"]
        ready = lambda: any((out / "raw").glob("*.log")) if (out / "raw").is_dir() else False  # noqa: E731
        what = "the served sweep to start"
    proc = dnx.start(*args)
    server = wait_for(lambda: tritonserver_child(proc.pid), 600, "the launched tritonserver", proc)
    wait_for(ready, 600, what, proc)
    t0 = send(proc, sig)
    code, _, err = finish(proc, timeout=120)
    took = assert_group_gone(server, t0)
    print(f"{command} {signal.Signals(sig).name}: tritonserver group gone {took:.1f}s after the signal")

    assert code == 128 + sig
    line = one_error_line(err)
    assert line.startswith(f"Error: interrupted by {signal.Signals(sig).name}; ")
    if command == "perf":
        report = json.loads((out / "report.json").read_text())
        assert report["complete"] is False and report["incomplete_reason"].startswith("interrupted by SIGTERM")
        assert report["results"] and f"dnx perf --resume {out}" in line
    else:
        partial = json.loads((out / "bench-partial.json").read_text())
        assert partial["incomplete"] == "interrupted by SIGINT"
        assert {t["family"] for t in partial["in_process"]} >= {"onnxruntime"}
        assert not (tmp_path / "BENCH.md").exists()


def test_sigkill_of_dnx_perf_leaves_no_perf_analyzer(dnx, triton_server, tmp_path):
    """Nothing of dnx runs on SIGKILL: perf_analyzer's PR_SET_PDEATHSIG is what stops it loading the server."""
    out = tmp_path / "sweep"
    proc = dnx.start("perf", "--url", triton_server.grpc_url, "--models", "densenet121_onnx", "--concurrency", "2",
                     "--out", out, "--measurement-interval", "20000", "--stability-percentage", "1", "-q")
    analyzer = wait_for(lambda: next((c for c in children(proc.pid) if "perf_analyzer" in cmdline(c)), None), 120,
                        "perf_analyzer to start", proc)
    time.sleep(1.0)  # under load: the measurement window runs
    t0 = send(proc, signal.SIGKILL)
    finish(proc, timeout=60)

    def gone() -> bool:  # exited (reaped, or a zombie), or the pid now belongs to something else
        try:
            state = open(f"/proc/{analyzer}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z" or "perf_analyzer" not in cmdline(analyzer)

    while not gone() and time.monotonic() - t0 < 5.0:
        time.sleep(0.1)
    if not gone():
        took = time.monotonic() - t0
        os.kill(analyzer, signal.SIGKILL)  # the test's own clean-up of the orphan
        pytest.fail(f"perf_analyzer (pid {analyzer}) still ran {took:.1f}s after dnx was killed")
    print(f"SIGKILL of dnx perf: perf_analyzer gone {time.monotonic() - t0:.1f}s later")
    for left in dnx.tmpdir.glob("dnx-*"):  # dnx could not clean up (the next run removes it: dead owner)
        shutil.rmtree(left) if left.is_dir() else left.unlink()


def test_disk_full_mid_sweep_is_one_line_and_resume_finishes(dnx, triton_server, tmpfs):
    """The results disk fills while a level runs: one line saying what was kept and how to resume, no traceback."""
    disk = tmpfs("16m")
    out = disk / "sweep"
    proc = dnx.start("perf", "--url", triton_server.grpc_url, "--models", "densenet121_onnx", "--concurrency", "1:3",
                     "--out", out, *FAST)
    wait_for(lambda: measured(out), 300, "the first level on disk", proc)
    fill_disk(disk)
    code, _, err = finish(proc, timeout=300)
    assert code == 1 and "Traceback" not in err, err
    line = one_error_line(err)
    assert "no space left on the device of" in line.lower() or "no space left on device" in line.lower(), line
    assert f"dnx perf --resume {out}" in line
    kept = measured(out)
    assert kept and kept != [1, 2, 3], kept

    (disk / "filler").unlink()
    r = dnx.run("perf", "--resume", out, "--url", triton_server.grpc_url, "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True and sorted(x["concurrency"] for x in report["results"]) == [1, 2, 3]
