"""``dnx perf``'s run: check the server, choose what to measure, sweep, keep state, write the report."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnx.errors import InputError, PerfError, ServerError, disk_full, one_line
from dnx.perf.analyzer import check_shared_memory
from dnx.perf.results import new_results_dir
from dnx.perf.served import default_metrics_url, inspect_server, launched_server, measurable, repository_manifest
from dnx.perf.sweep.loop import SweepResult, sweep
from dnx.perf.sweep.cost import CpuProbe
from dnx.perf.sweep.memory import MemoryProbe
from dnx.perf.sweep.options import PerfOptions, estimate_sweep_seconds
from dnx.perf.sweep.report import compare, tidy_rows, write_report
from dnx.perf.sweep.state import STATE_NAME, restore, save_state
from dnx.signals import Interrupted


@dataclass
class PerfRun:
    """What :func:`run_perf` measured and wrote."""

    result: SweepResult
    paths: dict[str, Path]
    comparison: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it was not measured
    rows: list[dict] = field(default_factory=list)  # the tidy rows of results.csv


def run_perf(opts: PerfOptions, resume: dict | None = None) -> PerfRun:
    """Check the server, sweep every requested model with perf_analyzer, write the report.

    The sweep state is saved after every level (``sweep-state.json``). When the server dies,
    perf_analyzer fails or a signal arrives mid-sweep, the levels already measured are kept,
    the report is written and marked incomplete with the reason, and :class:`PerfError` (or
    :class:`dnx.signals.Interrupted`) says how to continue: ``dnx perf --resume <out>``.
    ``resume`` is the state :func:`dnx.perf.sweep.state.resume_options` read; its levels are not measured again.
    """
    s = opts.sweep
    s.check()
    if not opts.launch:  # a launched server is on this machine; --url may point anywhere
        check_shared_memory(s.shared_memory, s.url)
    manifest = repository_manifest(opts.repository)
    out = Path(opts.out) if opts.out else new_results_dir("perf")
    out.mkdir(parents=True, exist_ok=True)
    result: SweepResult | None = None
    memory: MemoryProbe | None = None
    cpu: CpuProbe | None = None
    stopped: Interrupted | None = None
    try:
        with contextlib.ExitStack() as stack:
            if opts.launch:
                server = stack.enter_context(launched_server(opts.repository, opts.models, out / "tritonserver.log",
                                                             opts.endpoint_url))
                if server.remote:  # its local view (configs, manifest) goes away with the server
                    manifest = repository_manifest(server.remote.view)
                url = server.grpc_url if s.protocol == "grpc" else server.http_url
                metrics_url = server.metrics_url.removeprefix("http://")
                memory = MemoryProbe(server_pid=server.pid, metrics_url=metrics_url)
                cpu = CpuProbe(metrics_url, server_pid=server.pid, core_hour_cost=opts.core_hour_cost)
            else:
                url, metrics_url = s.url, s.metrics_url or default_metrics_url(s.url)
                memory = MemoryProbe.for_url(url, metrics_url)
                cpu = CpuProbe.for_url(url, metrics_url, core_hour_cost=opts.core_hour_cost)
            models, skipped = measurable(inspect_server(url, s.protocol, opts.models), named=bool(opts.models))
            if opts.models and skipped:
                raise InputError(f"{', '.join(skipped)}: {'; '.join(skipped.values())}; dnx perf measures fixed-shape "
                                 "models only, run perf_analyzer by hand with --shape")
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
                restore(result, resume)
            save_state(opts, result)
            sweep(models, s, out, result=result, on_level=lambda r: save_state(opts, r), memory=memory, cpu=cpu)
    except (PerfError, ServerError) as exc:
        if result is None:
            raise
        result.incomplete = str(exc)
    except Interrupted as exc:
        if result is None:
            raise
        result.incomplete, stopped = str(exc), exc
    except OSError as exc:
        if not disk_full(exc):
            raise
        if result is None:
            raise PerfError(f"no space left on the device of {out} ({one_line(exc)}); nothing was measured: "
                            "free space or pass another --out") from None
        result.incomplete = f"no space left on the device of {out} ({one_line(exc)})"
    memory_record = {"sources": memory.sources, "notes": memory.notes} if memory is not None else None
    cpu_record = {"sources": cpu.sources, "notes": cpu.notes} if cpu is not None else None
    try:
        paths = write_report(result, latency_budget_ms=opts.latency_budget_ms, manifest=manifest, skipped=skipped,
                             memory=memory_record, cpu=cpu_record)
    except OSError as exc:
        if not disk_full(exc):
            raise
        # sweep-state.json is written atomically after each level: the last one that fitted is whole.
        raise PerfError(f"no space left on the device of {out} ({one_line(exc)}); the report could not be written; "
                        f"the levels saved in {out / STATE_NAME} before the disk filled are kept: free space and "
                        f"continue with `dnx perf --resume {out}`") from None
    if result.incomplete:
        kept = (f"{result.points()} of {result.planned()} points measured and kept in {out} (report: {paths['md']}); "
                f"continue with `dnx perf --resume {out}`")
        if stopped is not None:
            raise stopped.with_detail(kept) from None
        raise PerfError(f"sweep incomplete: {result.incomplete.rstrip('.')}; {kept}")
    rows = tidy_rows(result, manifest)
    return PerfRun(result, paths, compare(rows, opts.latency_budget_ms), skipped, rows)
