"""One MLPerf LoadGen test against a :class:`Target` (anything that answers a sample asynchronously).

LoadGen owns the clock: it issues queries on its schedule (Server: Poisson arrivals at
``target_qps``, whether or not earlier queries were answered, so the measured latency includes
the time a query waited because the server was late: no coordinated omission), and the target
completes each sample from its own response callback. LoadGen's log files (summary, detail; not the trace) are kept in ``outdir``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from dnx._lazy import lazy_import
from dnx.errors import InputError, ServerError
from dnx.perf.slo.summary import LoadGenSummary, parse_summary

SCENARIOS = ("server", "single-stream", "offline")
_LG_SCENARIOS = {"server": "Server", "single-stream": "SingleStream", "offline": "Offline"}
SUMMARY_FILE = "mlperf_log_summary.txt"


class Target(Protocol):
    """What LoadGen drives: ``send`` must not block; ``done(error_or_None)`` is called once per sample."""

    sample_count: int

    def send(self, index: int, done: Callable[[str | None], None]) -> None: ...


@dataclass
class ScenarioSettings:
    """LoadGen's TestSettings as dnx uses them (times in ms)."""

    scenario: str = "server"
    target_qps: float = 10.0  # Server: the Poisson arrival rate
    target_latency_ms: float = 50.0  # Server: the p99 bound
    latency_percentile: float = 0.99
    min_duration_ms: int = 10_000
    min_query_count: int = 100
    max_duration_ms: int = 0  # 0: LoadGen's default (no limit)
    expected_latency_ms: float = 10.0  # SingleStream: LoadGen's first guess of one query's latency
    offline_expected_qps: float = 10.0  # Offline: sizes the one big query (with min_duration)
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def test_settings(s: ScenarioSettings):
    """The ``mlperf_loadgen.TestSettings`` for ``s`` (PerformanceOnly)."""
    if s.scenario not in SCENARIOS:
        raise InputError(f"--scenario {s.scenario!r} is unknown; use one of {', '.join(SCENARIOS)}")
    lg = lazy_import("mlperf_loadgen")
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, _LG_SCENARIOS[s.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.server_target_qps = float(s.target_qps)
    ts.server_target_latency_ns = int(s.target_latency_ms * 1e6)
    ts.server_target_latency_percentile = float(s.latency_percentile)
    ts.single_stream_expected_latency_ns = max(1, int(s.expected_latency_ms * 1e6))
    ts.offline_expected_qps = float(s.offline_expected_qps)
    ts.min_duration_ms = int(s.min_duration_ms)
    ts.min_query_count = int(s.min_query_count)
    if s.max_duration_ms:
        ts.max_duration_ms = int(s.max_duration_ms)
    # Different arrival schedules per seed; the default (0) reproduces LoadGen's own.
    ts.schedule_rng_seed = ts.schedule_rng_seed + s.seed
    return ts


class _Failures:
    def __init__(self):
        self.lock, self.count, self.first = threading.Lock(), 0, None

    def add(self, error: str) -> None:
        with self.lock:
            self.count += 1
            self.first = self.first or error


def run_loadgen(target: Target, settings: ScenarioSettings, outdir: str | Path, where: str = "") -> LoadGenSummary:
    """Run one LoadGen test against ``target``; its logs go to ``outdir``; returns its parsed summary.

    A sample whose request fails is still completed (LoadGen would wait for it forever); when any
    failed, :class:`ServerError` names how many and the first error, after the logs are written.
    """
    lg = lazy_import("mlperf_loadgen")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    failures = _Failures()
    issued = [0]

    def complete(sample_id: int) -> Callable[[str | None], None]:
        def done(error: str | None) -> None:
            if error is not None:
                failures.add(error)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])
        return done

    def issue_queries(samples) -> None:
        for s in samples:
            issued[0] += 1
            try:
                target.send(s.index, complete(s.id))
            except Exception as exc:  # noqa: BLE001 - completed as failed, reported after the run
                complete(s.id)(f"{type(exc).__name__}: {exc}")

    def flush_queries() -> None:
        pass

    count = max(1, target.sample_count)
    sut = lg.ConstructSUT(issue_queries, flush_queries)
    qsl = lg.ConstructQSL(count, count, lambda _: None, lambda _: None)
    log_out = lg.LogOutputSettings()
    log_out.outdir = str(outdir)
    log_out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_out
    # The trace (2.6 MB per 600-query run here) repeats per-sample times the detail log already has.
    log_settings.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, test_settings(settings), log_settings)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if failures.count:
        raise ServerError(f"{failures.count} of {issued[0]} requests{where} failed during the LoadGen run "
                          f"({failures.first}); LoadGen's logs are in {outdir}")
    path = outdir / SUMMARY_FILE
    try:
        return parse_summary(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServerError(f"LoadGen wrote no readable summary in {outdir} ({exc})") from None
