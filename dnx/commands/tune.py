"""``dnx tune``: find the fastest served config on this machine and write it into the repository."""

from __future__ import annotations

from pathlib import Path

import click

from dnx.commands import int_list
from dnx.commands.options import (
    concurrency_option, latency_budget_option, models_option, quiet_option, repository_option, shared_memory_option,
    window_options,
)


@click.command("tune")
@repository_option("Model repository to tune (its config.pbtxt files are rewritten unless --dry-run).")
@models_option("Model to tune (repeat). Default: measure every served model, tune the --top best.", multiple=True)
@click.option("--objective", type=click.Choice(["throughput", "latency"]), default="throughput", show_default=True,
              help="throughput: best infer/s (within --latency-budget-ms); latency: lowest p99 at concurrency 1.")
@latency_budget_option("Only configs whose p99 stays within this budget count.")
@click.option("--budget-minutes", type=float, default=14.0, show_default=True,
              help="Time for the whole run; the search stops when the next candidate would not fit.")
@click.option("--url", help="A running server (gRPC host:port, --model-control-mode explicit). Default: launch one.")
@click.option("--launch", is_flag=True, help="Start a local server on --repository for the run (the default).")
@click.option("--dry-run", is_flag=True, help="Measure and report only; the repository is not changed.")
@click.option("--top", type=click.IntRange(min=1), default=2, show_default=True,
              help="Without --models: how many of the best variants to search.")
@concurrency_option("1,2,4", "Concurrency levels measured per candidate.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=32, show_default=True,
              help="Highest level added to fill a candidate's batches (2 x instances x batch).")
@window_options(interval_default=1500, interval_type=click.IntRange(min=200),
                interval_help="perf_analyzer window (ms) per level.",
                stability_default=15.0, stability_help="perf_analyzer stability threshold between windows.",
                max_trials_help="perf_analyzer windows per level before it counts as unstable (then measured relaxed, "
                                "flagged).")
@shared_memory_option()
@click.option("--out", type=click.Path(path_type=Path), help="Report folder. Default: perf/results/<timestamp>-tune/.")
@click.option("--wait", is_flag=True, help="Wait for another dnx writing this repository instead of failing.")
@quiet_option()
def command(repository, models, objective, latency_budget_ms, budget_minutes, url, launch, dry_run, top,
            concurrency, max_concurrency, measurement_interval, stability_percentage, max_trials, shared_memory, out, wait,
            quiet):
    """Search each model's served settings with perf_analyzer and write the fastest into config.pbtxt.

    Candidates (instances, threads, streams, hints, batch sizes, queue delay) are loaded into the
    running server with load_model(config=...); the previous config is kept as config.pbtxt.orig.

    \b
    Examples:
      dnx tune                                           # launch a local server, tune the 2 best variants
      dnx tune --models densenet121_openvino_int8 --budget-minutes 5
      dnx tune --objective latency --dry-run
      dnx tune --url 127.0.0.1:8001 --latency-budget-ms 50
    """
    from dnx.errors import InputError
    from dnx.perf.tune.options import TuneOptions
    from dnx.perf.tune.run import run_tune

    if url and launch:
        raise InputError("--url and --launch exclude each other; pass one (default: --launch)")
    if budget_minutes <= 0:
        raise InputError(f"--budget-minutes {budget_minutes:g} must be > 0, e.g. 10")
    opts = TuneOptions(
        repository=repository, models=list(models) or None, objective=objective, latency_budget_ms=latency_budget_ms,
        budget_minutes=budget_minutes, url=url, dry_run=dry_run, top=top,
        concurrency=int_list(concurrency, "--concurrency"), max_concurrency=max_concurrency,
        window_ms=measurement_interval, stability_percentage=stability_percentage, max_trials=max_trials,
        out=out, progress=not quiet, wait=wait, shared_memory=shared_memory,
    )
    res = run_tune(opts)
    for name, d in res.decisions.items():
        if d.written:
            gain = f"{d.gain:+.1%}" if d.gain is not None else ""
            click.echo(f"{name:28s} {d.best_found}: {d.best_found_figure} (was {d.previous_figure}, {gain}); "
                       "wrote config.pbtxt")
        else:
            click.echo(f"{name:28s} kept: {d.previous_figure or '-'}" + (f" ({d.reason})" if d.reason else
                       f"; best found {d.best_found}: {d.best_found_figure}"))
    click.echo(f"Report: {res.paths['md']}")
