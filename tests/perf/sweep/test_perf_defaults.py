"""The faster default ``dnx perf`` sweep: count windows, the duration estimate printed before it starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.errors import InputError
from dnx.perf.analyzer import build_argv
from dnx.perf.levels import ConcurrencyRange
from dnx.perf.sweep import SweepOptions, estimate_sweep_seconds
from dnx.serving.server import free_port


def test_count_windows_argv():
    argv = build_argv("pa", "m", url="h:1", protocol="grpc", batch_size=1, concurrency=ConcurrencyRange(1, 16),
                      measurement_interval_ms=5000, csv_path="o.csv", measurement_mode="count_windows",
                      measurement_request_count=200)
    i = argv.index("--measurement-mode")
    assert argv[i:i + 4] == ["--measurement-mode", "count_windows", "--measurement-request-count", "200"]
    plain = build_argv("pa", "m", url="h:1", protocol="grpc", batch_size=1, concurrency=ConcurrencyRange(1, 16),
                       measurement_interval_ms=5000, csv_path="o.csv")
    assert "--measurement-mode" not in plain


def test_sweep_options_check_the_mode():
    with pytest.raises(InputError, match="measurement-mode"):
        SweepOptions(measurement_mode="fast").check()
    with pytest.raises(InputError, match="too small"):
        SweepOptions(measurement_mode="count_windows", measurement_request_count=3).check()


def test_estimate_follows_the_window_and_the_points():
    timed = SweepOptions(measurement_interval_ms=5000)
    # 18 s a point was measured with 5 s windows on the 2-core machine kind: the model reproduces it.
    assert estimate_sweep_seconds(80, timed) / 80 == pytest.approx(19.0, abs=1.5)
    counted = SweepOptions(measurement_mode="count_windows")  # dnx perf's default: windows of 50 requests
    assert counted.measurement_request_count == 50
    # Every one of the 80 points measured (nothing skipped as saturated) at the 25-33 infer/s the slowest
    # CPU variants serve on the 2-core machine: still within 10 minutes.
    assert estimate_sweep_seconds(80, counted) < 10 * 60
    assert estimate_sweep_seconds(80, counted, throughput=15) > estimate_sweep_seconds(80, counted)


@pytest.mark.server
def test_perf_prints_the_estimate_before_it_starts(triton_server):
    # The plan needs the served models, so it comes once the server answered and before any level is
    # measured: a batch size the model cannot take stops the sweep before its first perf_analyzer run.
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--models", "densenet121_onnx",
                                 "--concurrency", "1:3", "--batch-size", "512", "-q"])
    assert r.exit_code == 1, r.output
    assert "perf: up to 3 points, estimated up to" in r.output and "count windows of 50 requests" in r.output
    assert r.output.index("estimated") < r.output.index("Error: --batch-size [512] exceeds")


def test_perf_prints_no_estimate_without_a_server():
    # The server is down: the plan needs its models, so the run fails before any estimate.
    r = CliRunner().invoke(cli, ["perf", "--url", f"127.0.0.1:{free_port()}", "-q"])
    assert r.exit_code == 1 and "estimated" not in r.output and "no Triton server answers" in r.output
