"""Performance measurement: perf_analyzer sweeps (:mod:`.sweep`), reports (:mod:`.report`), and the
one-run comparison against in-process baselines (:mod:`.bench`).

:func:`run_perf` is what ``dnx perf`` calls::

    from dnx.perf import PerfOptions, run_perf
    from dnx.perf.sweep import ConcurrencyRange, SweepOptions

    run = run_perf(PerfOptions(sweep=SweepOptions(concurrency=ConcurrencyRange.parse("1:8")), launch=True))
    print(run.paths["md"])
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from dnx.errors import InputError
from dnx.perf.sweep import SweepOptions, SweepResult, default_metrics_url, inspect_server, sweep


@dataclass
class PerfOptions:
    """Everything ``dnx perf`` needs; ``sweep`` carries the perf_analyzer settings."""

    sweep: SweepOptions = field(default_factory=SweepOptions)
    models: list[str] | None = None  # None: every READY model on the server
    out: Path | None = None  # None: perf/results/<timestamp>/
    latency_budget_ms: float | None = None
    launch: bool = False  # start a local server for the run and stop it after
    repository: Path = Path("model_repository")
    collect_metrics: bool | None = None  # None: on when a measured model runs on a GPU
    on_plan: Callable[[int, float], None] | None = None  # called with (points, estimated seconds) before the sweep


@dataclass
class PerfRun:
    """What :func:`run_perf` measured and wrote."""

    result: SweepResult
    paths: dict[str, Path]
    comparison: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it was not measured


def default_out_dir(root: str | Path = "perf/results") -> Path:
    """``perf/results/<UTC timestamp>/``."""
    return Path(root) / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# Measured: `dnx perf` visits about 3.5 windows a level (3 stable + ramp) plus ~1.5 s of start-up;
# 5 s time windows gave 18 s a point on the 2-core machine kind (STACK-FACTS, 2026-11-28).
WINDOWS_PER_POINT = 3.5
POINT_OVERHEAD_S = 1.5
# count_windows: the slowest CPU variant serves ~55-65 infer/s on that machine when quiet.
ASSUMED_THROUGHPUT = 60.0


def estimate_sweep_seconds(points: int, s: SweepOptions, throughput: float = ASSUMED_THROUGHPUT) -> float:
    """Expected sweep duration without retries: time windows from their length, count windows from
    ``throughput`` (requests per second; a slower server takes proportionally longer)."""
    if s.measurement_mode == "count_windows":
        window_s = s.measurement_request_count / throughput
    else:
        window_s = s.measurement_interval_ms / 1000.0
    return points * (WINDOWS_PER_POINT * window_s + POINT_OVERHEAD_S)


@contextlib.contextmanager
def launched_server(repository: Path, models: list[str] | None, log_file: Path):
    """A local Triton server on free ports for the duration of a run (see :mod:`dnx.serving.server`)."""
    from dnx.serving.server import TritonServer

    server = TritonServer(repository, mode="auto", grpc_port=0, http_port=0, metrics_port=0,
                          log_file=log_file, models=models)
    with server:
        yield server


def run_perf(opts: PerfOptions) -> PerfRun:
    """Check the server, sweep every requested model with perf_analyzer, write the report."""
    from dnx.perf.report import compare, read_manifest, tidy_rows, write_report

    s = opts.sweep
    s.check()
    out = Path(opts.out) if opts.out else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if opts.launch:
            server = stack.enter_context(launched_server(Path(opts.repository), opts.models, out / "tritonserver.log"))
            url = server.grpc_url if s.protocol == "grpc" else server.http_url
            metrics_url = server.metrics_url.removeprefix("http://")
        else:
            url, metrics_url = s.url, s.metrics_url or default_metrics_url(s.url)
        models = inspect_server(url, s.protocol, opts.models)
        skipped = {m.name: f"variable input dims ({', '.join(m.variable_inputs)})" for m in models if m.variable_inputs}
        if opts.models and skipped:
            raise InputError(f"{', '.join(skipped)}: {'; '.join(skipped.values())}; dnx perf measures fixed-shape "
                             "models only, run perf_analyzer by hand with --shape")
        models = [m for m in models if m.name not in skipped]
        if not models:
            raise InputError(f"no fixed-shape READY model to measure (skipped: {', '.join(skipped)}); pass --models")
        collect = opts.collect_metrics if opts.collect_metrics is not None else any(m.on_gpu for m in models)
        s = replace(s, url=url, collect_metrics=collect, verbose_csv=s.verbose_csv or collect,
                    metrics_url=metrics_url if collect else None)
        if opts.on_plan is not None:
            points = len(models) * len(s.batch_sizes) * len(s.concurrency.levels())
            opts.on_plan(points, estimate_sweep_seconds(points, s))
        result = sweep(models, s, out)
    manifest = read_manifest(opts.repository)
    paths = write_report(result, latency_budget_ms=opts.latency_budget_ms, manifest=manifest, skipped=skipped)
    return PerfRun(result, paths, compare(tidy_rows(result, manifest), opts.latency_budget_ms), skipped)
