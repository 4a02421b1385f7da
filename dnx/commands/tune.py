"""``dnx tune``: find the fastest served config on this machine and write it into the repository."""

from __future__ import annotations

from pathlib import Path

import click

from dnx.commands.options import (
    concurrency_option, latency_budget_option, models_option, quiet_option, repository_option, shared_memory_option,
    window_options,
)


class _Objective(click.Choice):
    """The objectives; ``throughput`` (the saturation objective's previous name) is still accepted, unlisted."""

    def convert(self, value, param, ctx):
        return super().convert("saturation" if value == "throughput" else value, param, ctx)


@click.command("tune")
@repository_option("Model repository to tune (its config.pbtxt files are rewritten unless --dry-run).")
@models_option("Model to tune (repeat). Default: measure every served model, tune the --top best.", multiple=True)
@click.option("--objective", type=_Objective(["load", "saturation", "latency", "slo"]), default="load", show_default=True,
              help="load: best geometric mean of infer/s over --concurrency, never >3% slower than the current "
                   "config at any level; saturation: best infer/s at any level up to the fill level "
                   "(--max-concurrency), for batch-heavy services; latency: lowest p99 at the lowest level; slo: "
                   "highest open-loop (Poisson) rate whose p99 stays within --p99-ms (LoadGen's Server scenario).")
@latency_budget_option("Only configs whose p99 stays within this budget (at every level of the load) count.")
@click.option("--p99-ms", type=float, help="--objective slo: the p99 bound of the open-loop rate (required there), e.g. 50.")
@click.option("--loadgen-min-duration-ms", type=click.IntRange(min=100), default=10000, show_default=True,
              help="--objective slo: LoadGen min_duration_ms of each open-loop run.")
@click.option("--max-rate-runs", type=click.IntRange(min=2), default=8, show_default=True,
              help="--objective slo: LoadGen Server runs per config in its rate search.")
@click.option("--budget-minutes", type=float, default=14.0, show_default=True,
              help="Time for the whole run; the search stops when the next candidate would not fit.")
@click.option("--url", help="A running server (gRPC host:port, --model-control-mode explicit). Default: launch one.")
@click.option("--launch", is_flag=True, help="Start a local server on --repository for the run (the default).")
@click.option("--dry-run", is_flag=True, help="Measure and report only; the repository is not changed.")
@click.option("--top", type=click.IntRange(min=1), default=2, show_default=True,
              help="Without --models: how many of the best variants to search.")
@concurrency_option("1:16", "The load the server will see: start:end doubles (1:16 is 1,2,4,8,16), or a list "
                           "(1,2,4), or one level (16).")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=32, show_default=True,
              help="saturation: highest level added to fill a candidate's batches (2 x instances x batch).")
@window_options(interval_default=1500, interval_type=click.IntRange(min=200),
                interval_help="perf_analyzer window (ms) per level.",
                stability_default=15.0, stability_help="perf_analyzer stability threshold between windows.",
                max_trials_help="perf_analyzer windows per level before it counts as unstable (then measured relaxed, "
                                "flagged).")
@shared_memory_option()
@click.option("--out", type=click.Path(path_type=Path), help="Report folder. Default: perf/results/<timestamp>-tune/.")
@click.option("--wait", is_flag=True, help="Wait for another dnx writing this repository instead of failing.")
@quiet_option()
def command(repository, models, objective, latency_budget_ms, p99_ms, loadgen_min_duration_ms, max_rate_runs,
            budget_minutes, url, launch, dry_run, top,
            concurrency, max_concurrency, measurement_interval, stability_percentage, max_trials, shared_memory, out, wait,
            quiet):
    """Search each model's served settings with perf_analyzer and write the fastest into config.pbtxt.

    Candidates (instances, threads, streams, hints, batch sizes, queue delay) are loaded into the
    running server with load_model(config=...) and measured at every level of the load. The winner
    and the current config are measured again, interleaved, before anything is written; the
    previous config is kept as config.pbtxt.orig. The ensemble's preprocess model (instances,
    queue delay) is measured through the ensemble, sent real photographs (dnx.photos' mix).

    \b
    Examples:
      dnx tune                                           # launch a local server, tune the 2 best variants
      dnx tune --models densenet121_openvino_int8 --budget-minutes 5
      dnx tune --concurrency 16                          # clients keep 16 requests in flight
      dnx tune --models densenet121_preprocess           # the bytes-in ensemble's decoding
      dnx tune --objective latency --dry-run
      dnx tune --url 127.0.0.1:8001 --latency-budget-ms 50
      dnx tune --objective slo --p99-ms 200 --models densenet121_openvino_int8
    """
    from dnx.errors import InputError
    from dnx.perf.tune.curves import Load
    from dnx.perf.tune.options import TuneOptions
    from dnx.perf.tune.run import run_tune

    if url and launch:
        raise InputError("--url and --launch exclude each other; pass one (default: --launch)")
    if budget_minutes <= 0:
        raise InputError(f"--budget-minutes {budget_minutes:g} must be > 0, e.g. 10")
    opts = TuneOptions(
        repository=repository, models=list(models) or None, objective=objective, latency_budget_ms=latency_budget_ms,
        budget_minutes=budget_minutes, url=url, dry_run=dry_run, top=top,
        concurrency=Load.parse(concurrency).levels, max_concurrency=max_concurrency,
        window_ms=measurement_interval, stability_percentage=stability_percentage, max_trials=max_trials,
        out=out, progress=not quiet, wait=wait, shared_memory=shared_memory, p99_ms=p99_ms,
        loadgen_min_duration_ms=loadgen_min_duration_ms, max_rate_runs=max_rate_runs,
    )
    res = run_tune(opts)
    for name, d in res.decisions.items():
        if d.written:
            gain = f", {d.gain:+.1%}" if d.gain is not None else ""
            source = "open-loop figures" if d.slo is not None else "rerun figures"
            click.echo(f"{name:28s} {d.winner}: {d.figure} (was {d.previous_figure}{gain}, {source}); "
                       "wrote config.pbtxt")
        else:
            click.echo(f"{name:28s} kept: {d.previous_figure or '-'}" + (f" ({d.reason})" if d.reason else ""))
        for t in d.choice.trade_offs if d.choice and d.slo is None else ():
            click.echo(f"{'':28s} trade-off {t.label}: {t.summary()}"
                       + ("" if d.written else "; the current config stays unless you state that load")
                       + f": {t.advice()}")
    click.echo(f"Report: {res.paths['md']}")
