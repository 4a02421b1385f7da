"""LoadGen over an in-process system under test (dnx bench --p99-ms's counterpart of the served model)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.perf.slo.inprocess import InProcessTarget
from dnx.perf.slo.loadgen import ScenarioSettings, run_loadgen
from dnx.errors import ServerError

SERVICE_MS = 10.0


def sleeper():
    def fn(x):
        time.sleep(SERVICE_MS / 1000.0)
        return x
    return fn


def test_single_stream_and_two_workers(tmp_path):
    one = InProcessTarget(sleeper, [0, 1, 2], workers=1)
    try:
        s = run_loadgen(one, ScenarioSettings(scenario="single-stream", min_duration_ms=1000, min_query_count=64,
                                              expected_latency_ms=SERVICE_MS), tmp_path / "ss")
    finally:
        one.close()
    # time.sleep's overshoot and LoadGen's callback add well under 3 ms on this machine.
    assert SERVICE_MS <= s.p("90") <= SERVICE_MS + 3, s.p("90")
    # Offline: everything queued at once; two workers answer twice as fast as one service time allows.
    two = InProcessTarget(sleeper, [0], workers=2)
    try:
        off = run_loadgen(two, ScenarioSettings(scenario="offline", offline_expected_qps=200, min_duration_ms=1000,
                                                min_query_count=100), tmp_path / "off")
    finally:
        two.close()
    assert off.scenario == "Offline"
    assert 1.3 * 1000 / SERVICE_MS <= off.completed_qps <= 2 * 1000 / SERVICE_MS, off.completed_qps


def test_failing_samples_are_reported_after_the_run(tmp_path):
    def broken():
        def fn(x):
            raise RuntimeError("no such tensor")
        return fn

    t = InProcessTarget(broken, [0], workers=1)
    try:
        with pytest.raises(ServerError, match=r"requests failed during the LoadGen run \(RuntimeError: no such tensor\)"):
            run_loadgen(t, ScenarioSettings(scenario="single-stream", min_duration_ms=200, min_query_count=10), tmp_path / "x")
    finally:
        t.close()
    assert (tmp_path / "x" / "mlperf_log_summary.txt").is_file()  # LoadGen's logs are still written


def test_bench_p99_needs_models(tmp_path):
    (tmp_path / "repo").mkdir()
    r = CliRunner().invoke(cli, ["bench", "--p99-ms", "100", "--repository", str(tmp_path / "repo")])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "needs --models" in lines[0], r.output
