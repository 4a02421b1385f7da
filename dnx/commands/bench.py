"""``dnx bench`` (``make bench``): served Triton vs in-process baselines, one run, ratios vs targets."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from dnx.commands.options import (
    concurrency_option, models_option, quiet_option, repository_option, retries_option, shared_memory_option,
    window_options,
)


@click.command("bench")
@repository_option("Model repository to serve and to take the in-process models from.")
@click.option("--out-md", type=click.Path(path_type=Path), default=Path("perf/BENCHMARKS.md"), show_default=True,
              help="Markdown summary to write.")
@click.option("--results", type=click.Path(path_type=Path), help="Raw results folder. Default: perf/results/bench-<timestamp>/.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds per in-process (runtime, batch) point.")
@concurrency_option("1:4", "Served sweep, perf_analyzer start:end[:step].")
@window_options(interval_default=5000, interval_help="perf_analyzer window (ms).",
                stability_help="perf_analyzer stability threshold (default 10).",
                max_trials_help="perf_analyzer windows per level before it counts as unstable.")
@retries_option("Retries of an unstable level with a doubled window.")
@shared_memory_option()
@models_option("Comma list of served models to sweep. Default: every model the local server loads.")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch eager baseline.")
@click.option("--notes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Markdown file appended to BENCHMARKS.md as 'Notes' (e.g. what was tuned).")
@click.option("--quick", is_flag=True, help="Short run for CI: 1.5 s points, concurrency 1:2, 1 s windows, PyTorch batch 1.")
@click.option("--one-pass", is_flag=True,
              help="Sweep the served models with --shared-memory only, not again with the other mode.")
@click.option("--paired", is_flag=True,
              help="Only served vs in-process in paired, interleaved rounds per model and batch (1 and its max "
                   "batch): CPU per inference and throughput ratios with 95 % intervals and verdicts.")
@click.option("--budget-minutes", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="--paired: time for all pairs together.")
@click.option("--margin", type=click.FloatRange(min=0.001, max=1.0), default=0.05, show_default=True,
              help="--paired: stop a pair once its intervals are within +- this fraction.")
@click.option("--window", type=click.FloatRange(min=0.2), default=3.0, show_default=True,
              help="--paired: seconds per side and round.")
@click.option("--p99-ms", type=float,
              help="Instead of the sweep: each --models model's SLO rate (the highest MLPerf LoadGen Server rate with "
                   "p99 within this bound) in-process and served, and their ratio.")
@quiet_option("No progress output.")
def command(repository, out_md, results, duration, concurrency, measurement_interval, stability_percentage,
            max_trials, retries, shared_memory, models, no_torch, notes, quick, one_pass, paired, budget_minutes,
            margin, window, p99_ms, quiet):
    """Measure the served repository against PyTorch eager, ONNX Runtime and OpenVINO in-process.

    \b
    The served models are swept with --shared-memory, then once more with the other mode
    (none: tensors in the gRPC messages; system: in shared memory), and the ratio against the
    in-process baseline uses the better of the two.

    \b
    Examples:
      dnx bench                                   # what `make bench` runs; writes perf/BENCHMARKS.md
      dnx bench --quick --out-md /tmp/BENCH.md    # a short smoke run
      dnx bench --paired --models densenet121_onnx,densenet121_openvino_int8
      dnx bench --p99-ms 120 --models densenet121_onnx   # served / in-process at the SLO (LoadGen)
    """
    if p99_ms is not None:
        from dnx.perf.slo import SloOptions
        from dnx.perf.slo.inprocess import run_slo_bench

        base = SloOptions(progress=not quiet, min_duration_ms=2000 if quick else 10_000)
        names = [m.strip() for m in models.split(",") if m.strip()] if models else []
        slo = run_slo_bench(repository, names, p99_ms, results, base)
        for name, r in slo.models.items():
            ip, sv = r["in_process"].get("slo_rate"), (r.get("served") or {}).get("slo_rate")
            click.echo(f"{name:28s} SLO rate at p99 <= {p99_ms:g} ms: in-process {ip or 0:.2f}, served {sv or 0:.2f} "
                       f"infer/s" + (f" ({r['ratio']:.2f}x)" if r.get("ratio") else ""))
        click.echo(f"Report: {slo.paths['md']}")
        return
    from dnx.perf.bench import BenchOptions, run_bench
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.results import best_per_model

    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    if paired:
        from dnx.perf.bench.paired_run import PairedOptions, run_paired

        pairs, folder = run_paired(PairedOptions(repository=repository, models=names, budget_s=budget_minutes * 60,
                                                 margin=margin, window_s=window, results_dir=results),
                                   on_step=None if quiet else lambda msg: click.echo(f"bench: {msg}", err=True))
        for p in pairs:
            cpu = "no CPU figure" if p.cpu is None else (
                f"CPU served/in-process {p.cpu.point:.3f} [{p.cpu.low:.3f}, {p.cpu.high:.3f}]")
            tput = "" if p.throughput is None else f", throughput {p.throughput.point:.3f}"
            click.echo(f"{p.model:28s} batch {p.batch:2d}  {cpu}{tput}: {p.verdict} ({len(p.paired.a)} rounds, "
                       f"{p.paired.stopped})")
        click.echo(f"Wrote {folder / 'paired.md'} and paired.json")
        return

    opts = BenchOptions(
        repository=repository, out_md=out_md, results_dir=results, duration_s=duration,
        concurrency=ConcurrencyRange.parse(concurrency), measurement_interval_ms=measurement_interval,
        stability_percentage=stability_percentage, max_trials=max_trials, retries=retries, include_torch=not no_torch,
        served_models=names,
        command=shlex.join(["dnx", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else "dnx bench",
        progress=not quiet, notes=notes.read_text() if notes else "", shared_memory=shared_memory,
        other_pass=not one_pass,
    )
    if quick:
        opts.duration_s, opts.warmup, opts.min_iterations = min(duration, 1.5), 1, 3
        opts.concurrency, opts.measurement_interval_ms = ConcurrencyRange(1, 2, 1), 1000
        opts.stability_percentage, opts.max_trials, opts.torch_batches = stability_percentage or 100.0, 3, (1,)
        opts.other_concurrency = ConcurrencyRange(1, 2, 1)  # the second shared-memory pass: c1, c2, no fill level
    res = run_bench(opts, on_step=None if quiet else lambda msg: click.echo(f"bench: {msg}", err=True))
    for t in res.in_process:
        click.echo(f"{t.runner:28s} batch {t.batch:2d}  {t.throughput:7.1f} img/s  p50 {t.p50_ms:7.1f} ms  p99 {t.p99_ms:7.1f} ms")
    best = best_per_model(res.served)
    for name, r in best.items():
        click.echo(f"{'served ' + name:28s} c{r['concurrency']:<2d}       {r['throughput']:7.1f} infer/s p99 {r['p99_ms']:7.1f} ms"
                   f"  (shared memory {res.shared_memory})")
    for name, r in best_per_model(res.served_other).items():
        click.echo(f"{'served ' + name:28s} c{r['concurrency']:<2d}       {r['throughput']:7.1f} infer/s p99 {r['p99_ms']:7.1f} ms"
                   f"  (shared memory {r['shared_memory']})")
    untuned = best_per_model(res.untuned)  # models `dnx tune` rewrote, measured with their config.pbtxt.orig
    for name, r in untuned.items():
        tuned = f"  (tuned: {best[name]['throughput']:.1f})" if name in best else ""
        click.echo(f"{'untuned ' + name:28s} c{r['concurrency']:<2d}       {r['throughput']:7.1f} infer/s "
                   f"p99 {r['p99_ms']:7.1f} ms{tuned}")
    for r in res.ratios:
        click.echo(f"{r.name}: {r.value:.2f}x (target {r.target}) {r.verdict}")
    for w in res.warnings:
        click.echo(f"Warning: {w}", err=True)
    click.echo(f"Wrote {res.out_md} (details in {res.results_dir})")
