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
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from dnx.errors import InputError, PerfError, ServerError
from dnx.perf.sweep import (
    SweepOptions, SweepResult, default_metrics_url, ensemble_internal_steps, inspect_server, sweep,
)


@dataclass
class PerfOptions:
    """Everything ``dnx perf`` needs; ``sweep`` carries the perf_analyzer settings."""

    sweep: SweepOptions = field(default_factory=SweepOptions)
    models: list[str] | None = None  # None: every READY model on the server
    out: Path | None = None  # None: perf/results/<timestamp>/
    latency_budget_ms: float | None = None
    launch: bool = False  # start a local server for the run and stop it after
    repository: Path | str = Path("model_repository")  # or s3://BUCKET/PREFIX (see dnx.deploy.remote)
    endpoint_url: str | None = None  # S3-compatible endpoint for an s3:// repository
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
# count_windows: the slowest CPU variants served 25-33 infer/s on the 2-core machine (perf/BENCHMARKS.md).
ASSUMED_THROUGHPUT = 30.0


def estimate_sweep_seconds(points: int, s: SweepOptions, throughput: float = ASSUMED_THROUGHPUT) -> float:
    """Expected sweep duration without retries: time windows from their length, count windows from
    ``throughput`` (requests per second; a slower server takes proportionally longer)."""
    if s.measurement_mode == "count_windows":
        window_s = s.measurement_request_count / throughput
    else:
        window_s = s.measurement_interval_ms / 1000.0
    return points * (WINDOWS_PER_POINT * window_s + POINT_OVERHEAD_S)


@contextlib.contextmanager
def launched_server(repository: Path | str, models: list[str] | None, log_file: Path, endpoint_url: str | None = None):
    """A local Triton server on free ports for the duration of a run (see :mod:`dnx.serving.server`)."""
    from dnx.serving.server import TritonServer

    server = TritonServer(repository, mode="auto", grpc_port=0, http_port=0, metrics_port=0,
                          log_file=log_file, models=models, endpoint_url=endpoint_url)
    with server:
        yield server


STATE_NAME = "sweep-state.json"


def _state(opts: PerfOptions, result: SweepResult) -> dict:
    """Everything ``--resume`` needs: the options, and every level measured so far."""
    s = result.options
    return {
        "version": 1,
        "perf": {"models": [m.name for m in result.models], "latency_budget_ms": opts.latency_budget_ms,
                 "launch": opts.launch, "repository": str(opts.repository), "collect_metrics": opts.collect_metrics,
                 "endpoint_url": opts.endpoint_url},
        "sweep": {"url": opts.sweep.url, "protocol": s.protocol, "concurrency": str(s.concurrency),
                  "batch_sizes": list(s.batch_sizes), "measurement_interval_ms": s.measurement_interval_ms,
                  "measurement_mode": s.measurement_mode, "measurement_request_count": s.measurement_request_count,
                  "percentile": s.percentile, "stability_percentage": s.stability_percentage,
                  "max_trials": s.max_trials, "retries": s.retries, "metrics_url": opts.sweep.metrics_url,
                  "verbose_csv": opts.sweep.verbose_csv, "input_data": s.input_data,
                  "skip_saturated": s.skip_saturated},
        "measurements": [{"model": model, "batch": batch, **asdict(m)}
                         for (model, batch), rows in result.measurements.items() for m in rows],
        "runs": [asdict(r) for r in result.runs],
    }


def _save_state(opts: PerfOptions, result: SweepResult) -> None:
    from dnx.model_repository.layout import atomic_write_text

    atomic_write_text(Path(result.out_dir) / STATE_NAME, json.dumps(_state(opts, result), indent=1) + "\n")


def resume_options(out: str | Path, url: str | None = None, progress: bool = True) -> tuple[PerfOptions, dict]:
    """The :class:`PerfOptions` of the interrupted sweep in ``out`` and its saved state.

    ``url`` points the rest of the sweep at another server (then nothing is launched).
    """
    from dnx.perf.sweep import ConcurrencyRange

    path = Path(out) / STATE_NAME
    try:
        state = json.loads(path.read_text())
        p, sw = state["perf"], dict(state["sweep"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{out} holds no resumable sweep ({path}: {exc.__class__.__name__}); pass the results folder "
                         "of an interrupted `dnx perf` run, or start a new sweep") from None
    sw["concurrency"] = ConcurrencyRange.parse(sw["concurrency"])
    sw["batch_sizes"] = tuple(sw["batch_sizes"])
    sweep_opts = SweepOptions(**sw, progress=progress)
    launch = p["launch"] and url is None
    if url is not None:
        sweep_opts.url = url
    return PerfOptions(sweep=sweep_opts, models=p["models"], out=Path(out), latency_budget_ms=p["latency_budget_ms"],
                       launch=launch, repository=_repository(p["repository"]), collect_metrics=p["collect_metrics"],
                       endpoint_url=p.get("endpoint_url")), state


def _repository(text: str) -> Path | str:
    """A repository as saved: an s3:// URI stays a string (Path would fold its "//")."""
    return text if text.startswith("s3://") else Path(text)


def _restore(result: SweepResult, state: dict) -> None:
    from dnx.perf.sweep import Measurement, Run

    for row in state.get("measurements", []):
        row = dict(row)
        key = (row.pop("model"), int(row.pop("batch")))
        result.measurements.setdefault(key, []).append(Measurement(**row))
    result.runs.extend(Run(**r) for r in state.get("runs", []))


def run_perf(opts: PerfOptions, resume: dict | None = None) -> PerfRun:
    """Check the server, sweep every requested model with perf_analyzer, write the report.

    The sweep state is saved after every level (``sweep-state.json``). When the server dies,
    perf_analyzer fails or a signal arrives mid-sweep, the levels already measured are kept,
    the report is written and marked incomplete with the reason, and :class:`PerfError` (or
    :class:`dnx.signals.Interrupted`) says how to continue: ``dnx perf --resume <out>``.
    ``resume`` is the state :func:`resume_options` read; its levels are not measured again.
    """
    from dnx.manifest import read_manifest
    from dnx.perf.report import compare, tidy_rows, write_report
    from dnx.signals import Interrupted

    s = opts.sweep
    s.check()
    manifest = read_manifest(opts.repository, required=False)
    out = Path(opts.out) if opts.out else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    result: SweepResult | None = None
    stopped: Interrupted | None = None
    try:
        with contextlib.ExitStack() as stack:
            if opts.launch:
                server = stack.enter_context(launched_server(opts.repository, opts.models, out / "tritonserver.log",
                                                             opts.endpoint_url))
                if server.remote:  # its local view (configs, manifest) goes away with the server
                    manifest = read_manifest(server.remote.view, required=False)
                url = server.grpc_url if s.protocol == "grpc" else server.http_url
                metrics_url = server.metrics_url.removeprefix("http://")
            else:
                url, metrics_url = s.url, s.metrics_url or default_metrics_url(s.url)
            models = inspect_server(url, s.protocol, opts.models)
            skipped = {m.name: f"variable input dims ({', '.join(m.variable_inputs)})" for m in models if m.variable_inputs}
            if not opts.models:
                skipped.update(ensemble_internal_steps(models))
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
            result = SweepResult(out_dir=out, models=models, options=s)
            if resume:
                _restore(result, resume)
            _save_state(opts, result)
            sweep(models, s, out, result=result, on_level=lambda r: _save_state(opts, r))
    except (PerfError, ServerError) as exc:
        if result is None:
            raise
        result.incomplete = str(exc)
    except Interrupted as exc:
        if result is None:
            raise
        result.incomplete, stopped = str(exc), exc
    paths = write_report(result, latency_budget_ms=opts.latency_budget_ms, manifest=manifest, skipped=skipped)
    if result.incomplete:
        kept = (f"{result.points()} of {result.planned()} points measured and kept in {out} (report: {paths['md']}); "
                f"continue with `dnx perf --resume {out}`")
        if stopped is not None:
            raise stopped.with_detail(kept) from None
        raise PerfError(f"sweep incomplete: {result.incomplete.rstrip('.')}; {kept}")
    return PerfRun(result, paths, compare(tidy_rows(result, manifest), opts.latency_budget_ms), skipped)
