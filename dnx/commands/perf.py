"""``dnx perf``: perf_analyzer concurrency sweeps against a Triton server, with a report and plots."""

from __future__ import annotations

from pathlib import Path

import click

from dnx.commands import int_list
from dnx.commands.options import (
    concurrency_option, latency_budget_option, models_option, quiet_option, repository_option, retries_option,
    shared_memory_option, window_options,
)


@click.command("perf")
@models_option("Comma list of models. Default: every READY model on the server.")
@concurrency_option("1:16", "perf_analyzer range start:end[:step].")
@click.option("--batch-size", default="1", show_default=True, help="Comma list of request batch sizes, e.g. 1,4.")
@click.option("--url", default="127.0.0.1:8001", show_default=True, help="Server address (gRPC port for grpc).")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@shared_memory_option()
@click.option("--out", type=click.Path(path_type=Path), help="Results folder. Default: perf/results/<timestamp>/.")
@click.option("--measurement-mode", type=click.Choice(["count_windows", "time_windows"]), default="count_windows",
              show_default=True, help="count_windows: windows of --measurement-request-count requests (adapts to the "
              "model's speed); time_windows: windows of --measurement-interval ms.")
@click.option("--measurement-request-count", type=click.IntRange(min=10), default=50, show_default=True,
              help="Requests per window in count_windows mode; doubled for a retry of an unstable level.")
@window_options(interval_default=5000, percentile=True,
                interval_help="perf_analyzer window (ms) in time_windows mode; doubled for a retry of an unstable level.",
                stability_help="Allowed variation between windows (perf_analyzer: 10).",
                max_trials_type=int, max_trials_default=None,
                max_trials_help="Windows per level before it counts as unstable (perf_analyzer: 10).")
@click.option("--skip-saturated/--all-levels", default=True, show_default=True,
              help="Stop raising a model's concurrency once 3 levels in a row gained < 3 % over the best before them "
                   "(never below the level that fills its padded batches); --all-levels measures every level.")
@retries_option("Retries of an unstable level with a longer window before it is reported unstable.")
@latency_budget_option("Report the best throughput with p99 within this budget.")
@click.option("--collect-metrics/--no-collect-metrics", default=None,
              help="perf_analyzer --collect-metrics --verbose-csv. Default: on when a model runs on a GPU.")
@click.option("--metrics-url", help="Server metrics endpoint. Default: <host of --url>:8002/metrics.")
@click.option("--core-hour-cost", type=click.FloatRange(min=0), metavar="USD",
              help="Price of one CPU core-hour: the report adds the server's cost per million inferences.")
@click.option("--launch", is_flag=True, help="Start a local server on --repository for the run, stop it after.")
@click.option("--photos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Photographs sent to bytes-in (ensemble) models: every JPEG/PNG/WebP under this folder. "
                   "Default: the shipped photographs plus a generated 12 MP phone JPEG.")
@repository_option("Model repository, a folder or s3://BUCKET/PREFIX (served with --launch; its "
                   "dnx-manifest.json names precision/runtime).", path_type=str, default="model_repository")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", show_envvar=True,
              help="S3-compatible endpoint for an s3:// --repository. Default: AWS S3.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the interrupted sweep in this results folder (its options; --url may point elsewhere).")
@click.option("--scenario", type=click.Choice(["concurrency", "server", "single-stream", "offline"]),
              default="concurrency", show_default=True,
              help="concurrency: the closed-loop perf_analyzer sweep. server / single-stream / offline: MLPerf LoadGen's "
                   "open-loop scenarios over gRPC (server: Poisson arrivals; the highest rate whose p99 stays within "
                   "--p99-ms).")
@click.option("--p99-ms", type=float, help="p99 latency bound for --scenario server (required there), e.g. 50.")
@click.option("--loadgen-min-duration-ms", type=click.IntRange(min=100), default=10000, show_default=True,
              help="LoadGen min_duration_ms of each scenario run.")
@click.option("--loadgen-min-query-count", type=click.IntRange(min=1), default=600, show_default=True,
              help="LoadGen min_query_count of each Server run (its early stopping needs ~460 to confirm a p99).")
@click.option("--max-rate-runs", type=click.IntRange(min=2), default=8, show_default=True,
              help="LoadGen Server runs per model in the rate search.")
@click.option("--undecided-rerun-s", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="A Server run LoadGen's early stopping could not decide is rerun once, as long as it asked for, "
                   "up to this many seconds (0: never; the rate then counts as not VALID).")
@click.option("--confirm-rate/--no-confirm-rate", default=True, show_default=True,
              help="With --scenario server: run the found rate once more with another arrival schedule; if it does "
                   "not hold, report the next lower VALID rate.")
@click.option("--closed-loop/--no-closed-loop", default=True, show_default=True,
              help="With --scenario server: perf_analyzer's closed-loop p99 at the same mean rate, beside the open-loop one.")
@quiet_option()
@click.pass_context
def command(ctx, models, concurrency, batch_size, url, protocol, shared_memory, out, measurement_mode, measurement_request_count,
            measurement_interval, percentile,
            stability_percentage, max_trials, skip_saturated, retries, latency_budget_ms, collect_metrics, metrics_url,
            core_hour_cost, launch, photos, repository, endpoint_url, resume, scenario, p99_ms, loadgen_min_duration_ms,
            loadgen_min_query_count, max_rate_runs, undecided_rerun_s, confirm_rate, closed_loop, quiet):
    """Sweep concurrency with perf_analyzer and write CSVs, report.md, report.json and plots.

    \b
    Examples:
      make serve &
      dnx perf --concurrency 1:16
      dnx perf --models densenet121_onnx --concurrency 1:16:2 --batch-size 1,4 --latency-budget-ms 50
      dnx perf --launch --concurrency 1:4 --measurement-interval 2000
      dnx perf --launch --shared-memory system    # tensors through /dev/shm, not gRPC
      dnx perf --resume perf/results/20261128T040000Z
      dnx perf --scenario server --p99-ms 50 --models densenet121_onnx   # open loop (MLPerf LoadGen)

    Each level is on disk as soon as it is measured: when the server dies or the run is
    interrupted, the report is written, marked incomplete, and --resume continues it.
    """
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.sweep import PerfOptions, SweepOptions, resume_options, run_perf

    if scenario != "concurrency" or p99_ms is not None:
        from dnx.perf.slo import SloOptions, run_slo

        slo = run_slo(SloOptions(
            scenario=scenario, p99_ms=p99_ms, url=url, out=out, launch=launch, repository=repository,
            endpoint_url=endpoint_url, photos=str(photos) if photos else None, protocol=protocol,
            min_duration_ms=loadgen_min_duration_ms, min_query_count=loadgen_min_query_count,
            max_runs=max_rate_runs, max_rerun_s=undecided_rerun_s, confirm=confirm_rate, closed_loop=closed_loop, progress=not quiet,
            resume=resume,
            models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        ))
        _show_slo(slo)
        return
    if resume is not None:
        given = ctx.get_parameter_source("url") is click.core.ParameterSource.COMMANDLINE
        opts, state = resume_options(resume, url=url if given else None, progress=not quiet)
        _show(run_perf(opts, resume=state), opts.latency_budget_ms)
        return
    sweep = SweepOptions(
        url=url, protocol=protocol, shared_memory=shared_memory, concurrency=ConcurrencyRange.parse(concurrency),
        batch_sizes=int_list(batch_size, "--batch-size"), measurement_interval_ms=measurement_interval,
        measurement_mode=measurement_mode, measurement_request_count=measurement_request_count,
        percentile=percentile, stability_percentage=stability_percentage, max_trials=max_trials,
        retries=retries, metrics_url=metrics_url, progress=not quiet, skip_saturated=skip_saturated,
        photos=str(photos) if photos else None,
    )
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None

    def plan(points: int, seconds: float) -> None:
        how = (f"count windows of {measurement_request_count} requests, assuming >= 30 infer/s; a slower server "
               "takes longer" if measurement_mode == "count_windows" else f"{measurement_interval} ms windows")
        upto = "up to " if skip_saturated else ""
        click.echo(f"perf: {upto}{points} points, estimated {upto}{seconds / 60:.1f} min ({how}; retries of unstable "
                   "levels add more" + ("; levels past saturation are skipped" if skip_saturated else "") + ")", err=True)

    run = run_perf(PerfOptions(sweep=sweep, models=names, out=out, latency_budget_ms=latency_budget_ms,
                               launch=launch, repository=repository, collect_metrics=collect_metrics,
                               endpoint_url=endpoint_url, on_plan=plan, core_hour_cost=core_hour_cost))
    _show(run, latency_budget_ms)


def cost_lines(rows: list[dict]) -> list[str]:
    """Per model, the CPU cost at its best-throughput level (nothing where CPU was not measured)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r.get("server_cpu_ms_per_inference") is not None and r["throughput"] > best.get(r["model"], {}).get("throughput", -1):
            best[r["model"]] = r
    out = []
    for model, r in best.items():
        line = (f"{model:28s} server CPU {r['server_cpu_ms_per_inference']:.2f} ms/inference "
                f"({r['cores_per_1000_infer_s']:.2f} cores per 1000 infer/s), client {r['client_cpu_ms_per_request']:.2f} "
                f"ms/request at c{r['concurrency']}" + (" [client-bound]" if r["client_bound"] else ""))
        if r.get("usd_per_million") is not None:
            line += f"; ${r['usd_per_million']:.4f} per million inferences"
        out.append(line)
    return out


def _show(run, latency_budget_ms) -> None:
    for c in run.comparison:
        b, w = c["best"], c["within_budget"]
        line = (f"{c['model']:28s} best {b['throughput']:8.1f} infer/s (batch {b['batch']}, concurrency "
                f"{b['concurrency']}, p99 {b['p99_ms']:.1f} ms)")
        if latency_budget_ms is not None:
            line += (f"; within p99 {latency_budget_ms:g} ms: {w['throughput']:.1f} infer/s at c{w['concurrency']}"
                     if w else f"; nothing within p99 {latency_budget_ms:g} ms")
        click.echo(line)
    for line in cost_lines(run.rows):
        click.echo(line)
    for name, why in run.skipped.items():
        click.echo(f"{name:28s} not measured: {why}")
    click.echo(f"Report: {run.paths['md']}")


def _show_slo(run) -> None:
    for m in run.models:
        ss = m.single_stream or {}
        line = f"{m.name:28s} single-stream p90 {ss.get('p90_ms') or 0:.1f} ms, p99 {ss.get('p99_ms') or 0:.1f} ms"
        if m.search is not None:
            lo, hi = m.search.interval
            line += (f"; SLO rate {lo:.2f} infer/s (VALID; {hi:.2f} was not)" if lo is not None and hi is not None
                     else f"; SLO rate {lo:.2f} infer/s (VALID; no higher rate failed)" if lo is not None
                     else "; no rate was VALID at the bound")
        if m.offline is not None:
            line += f"; offline {m.offline.get('throughput') or 0:.1f} infer/s"
        if m.closed_loop is not None:
            c = m.closed_loop["closed_loop"]
            line += (f"; p99 open loop {m.closed_loop.get('open_loop_p99_ms') or 0:.1f} ms vs closed loop "
                     f"{c['p99_ms']:.1f} ms (concurrency {c['concurrency']}, {c['throughput']:.1f}/s)")
        click.echo(line)
        for note in m.notes:
            click.echo(f"{'':28s} {note}")
    click.echo(f"Report: {run.paths['md']}")
