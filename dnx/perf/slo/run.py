"""``dnx perf --scenario``: LoadGen's SingleStream, Server (the SLO rate search) and Offline scenarios
against a served model, with the closed-loop p99 at the same mean rate beside the open-loop one.

Per model: a SingleStream run first (one query at a time: the p90/p99 of one request, the floor
no bound can go below, and the start of the rate search); then the Server search
(:func:`dnx.perf.slo.search.search_rate`) or one Offline run. Every LoadGen run keeps its log
files under ``<out>/loadgen/<model>/<run>/``; ``report.json`` and ``report.md`` are rewritten after
every run, so a server that dies mid-search leaves what was measured so far.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dnx.errors import InputError, PerfError, ServerError
from dnx.perf.analyzer import Analyzer, LevelSettings
from dnx.perf.results import new_results_dir
from dnx.perf.served import ServedModel, inspect_server, launched_server, measurable, repository_manifest, variant_of
from dnx.perf.slo.loadgen import ScenarioSettings, Target, run_loadgen
from dnx.perf.slo.options import SloOptions
from dnx.perf.slo.report import write_slo_report
from dnx.perf.slo.search import Point, SearchResult, bracket_answer, search_rate
from dnx.perf.slo.summary import TOO_SHORT, LoadGenSummary
from dnx.perf.slo.targets import GrpcTarget, sample_inputs

# One longer rerun of a run LoadGen's early stopping could not decide, up to this many queries.
MAX_QUERIES = 5000


@dataclass
class ModelSlo:
    """What was measured for one model."""

    name: str
    precision: str = "?"
    runtime: str = "?"
    single_stream: dict | None = None
    search: SearchResult | None = None
    offline: dict | None = None
    closed_loop: dict | None = None
    confirmation: dict | None = None  # the found rate rerun with another arrival schedule
    notes: list[str] = field(default_factory=list)

    @property
    def slo_rate(self) -> float | None:
        return self.search.slo_rate if self.search else None

    def to_dict(self, opts: SloOptions) -> dict:
        s = self.search
        out = {
            "model": self.name, "precision": self.precision, "runtime": self.runtime, "scenario": opts.scenario,
            "p99_bound_ms": opts.p99_ms, "single_stream": self.single_stream, "notes": self.notes,
        }
        if s is not None:
            undecided = [p.rate for p in s.undecided]
            out.update({
                "slo_rate": s.slo_rate,  # inferences/s: one batch-1 request per LoadGen sample
                "slo_interval": list(s.interval), "search_stopped": s.stopped,
                "points": [p.to_dict() for p in s.curve()],
                "early_stopping_undecided_rates": undecided, "confirmation": self.confirmation,
            })
        if self.offline is not None:
            out["offline"] = self.offline
        if self.closed_loop is not None:
            out["coordinated_omission"] = self.closed_loop
        return out


@dataclass
class SloRun:
    out: Path
    models: list[ModelSlo]
    paths: dict[str, Path]
    incomplete: str | None = None


def _summary_record(summary: LoadGenSummary, logdir: Path, out: Path) -> dict:
    return {**summary.to_dict(), "logs": str(logdir.relative_to(out))}


def _say(opts: SloOptions, text: str) -> None:
    if opts.progress:
        print(text, file=sys.stderr, flush=True)


def single_stream(target: Target, name: str, opts: SloOptions, out: Path) -> dict:
    """One LoadGen SingleStream run (its logs under ``<out>/loadgen/<name>/single-stream``): p90, p99, mean."""
    logdir = out / "loadgen" / name / "single-stream"
    settings = ScenarioSettings(scenario="single-stream", min_duration_ms=opts.min_duration_ms,
                                min_query_count=max(opts.min_query_count // 4, 64), expected_latency_ms=10.0)
    s = run_loadgen(target, settings, logdir, where=f" to {name}")
    rec = _summary_record(s, logdir, out)
    rec.update({"p90_ms": s.p("90"), "p99_ms": s.p("99"), "mean_ms": s.mean_ms, "settings": settings.to_dict()})
    return rec


def server_judge(target: Target, model: str, opts: SloOptions, out: Path, seed: int = 0,
                 folder: str = "server") -> Callable[[float], Point]:
    """``rate -> Point``: one LoadGen Server run at ``rate`` with the p99 bound, rerun once longer when
    LoadGen's early stopping says it was too short to decide. ``seed`` picks LoadGen's arrival schedule."""

    def judge(rate: float) -> Point:
        queries = max(opts.min_query_count, int(math.ceil(rate * opts.min_duration_ms / 1000)))
        attempt = 0
        while True:
            logdir = out / "loadgen" / model / f"{folder}_{rate:.2f}qps" / (f"longer{attempt}" if attempt else "")
            settings = ScenarioSettings(scenario="server", target_qps=rate, target_latency_ms=opts.p99_ms,
                                        min_duration_ms=opts.min_duration_ms, min_query_count=queries, seed=seed)
            s = run_loadgen(target, settings, logdir, where=f" to {model}")
            more = s.more_queries_needed
            if (s.verdict == TOO_SHORT and attempt == 0 and s.constraints_met is not False and more
                    and (s.processed or 0) + more <= min(MAX_QUERIES, rate * opts.max_rerun_s)):
                queries, attempt = int(((s.processed or queries) + more) * 1.1), 1
                continue
            point = Point(rate, s.verdict, s.p("99"), s.scheduled_qps, s.completed_qps,
                          {"loadgen": _summary_record(s, logdir, out), "min_query_count": queries})
            return point

    return judge


def closed_loop_at(url: str, model: str, rate: float, out: Path, max_level: int = 16,
                   interval_ms: int = 2000) -> dict:
    """perf_analyzer (closed loop) at the concurrency whose throughput is nearest ``rate``: its p99 beside
    the open-loop one shows what a closed loop hides (coordinated omission)."""
    analyzer = Analyzer(out / "closed_loop")
    settings = LevelSettings(url=url, protocol="grpc", measurement_mode="time_windows",
                             measurement_interval_ms=interval_ms, stability_percentage=50, max_trials=5, retries=0)
    levels = []
    for c in range(1, max_level + 1):
        m = analyzer.measure_level(model, c, settings, stem="{model}_b{batch}_c{level}_w{window}_closed")
        levels.append({"concurrency": c, "throughput": m.throughput, "p99_ms": m.p99_ms, "stable": m.stable})
        if m.throughput >= rate:
            break
    best = min(levels, key=lambda x: abs(x["throughput"] - rate))
    rec = {"rate": rate, "closed_loop": best, "levels": levels}
    if best["concurrency"] == 1 and best["throughput"] > 1.1 * rate:
        # A closed loop cannot offer less than one request in flight: its slowest mean rate is above this one.
        rec["note"] = (f"the closed loop's lowest level (concurrency 1) already runs at {best['throughput']:.1f}/s, "
                       f"above {rate:.1f}/s; its p99 there is the closest closed-loop figure")
    return rec


def check_bound(p99_ms: float, models: list[ModelSlo]) -> None:
    """:class:`InputError` when the bound is below a model's single-stream p99: no offered rate can meet it."""
    for m in models:
        p99 = (m.single_stream or {}).get("p99_ms")
        if p99 is not None and p99_ms < p99:
            raise InputError(f"--p99-ms {p99_ms:g} is below what one request takes: {m.name}'s measured "
                             f"single-stream p99 is {p99:.1f} ms; pass --p99-ms above {math.ceil(p99)}")


def run_slo(opts: SloOptions) -> SloRun:
    """Measure every requested model in ``opts.scenario`` (see the module doc); write the report."""
    opts.check()
    remote = str(opts.repository).startswith("s3://")
    manifest = repository_manifest(opts.repository) if not remote and Path(str(opts.repository)).exists() else None
    out = Path(opts.out) if opts.out else new_results_dir("perf")
    out.mkdir(parents=True, exist_ok=True)
    done: list[ModelSlo] = []
    incomplete: str | None = None
    paths: dict[str, Path] = {}

    def save() -> None:
        paths.update(write_slo_report(out, opts, [m.to_dict(opts) for m in done], incomplete))

    with contextlib.ExitStack() as stack:
        if opts.launch:
            server = stack.enter_context(launched_server(opts.repository, opts.models, out / "tritonserver.log",
                                                         opts.endpoint_url))
            url = server.grpc_url
            if server.remote:  # its local view (configs, manifest) goes away with the server
                manifest = repository_manifest(server.remote.view)
        else:
            url = opts.url
        models, skipped = measurable(inspect_server(url, "grpc", opts.models), named=bool(opts.models))
        if opts.models and skipped:
            raise InputError(f"{', '.join(skipped)}: {'; '.join(skipped.values())}; dnx perf measures fixed-shape "
                             "models only")
        if not models:
            raise InputError(f"no fixed-shape READY model to measure (skipped: {', '.join(skipped)}); pass --models")
        targets: dict[str, GrpcTarget] = {}
        try:
            # Every model's single-stream run first: a bound below one request's p99 is refused before any search.
            for model in models:
                precision, runtime = variant_of(model.name, manifest)
                rec = ModelSlo(model.name, precision, runtime)
                done.append(rec)
                targets[model.name] = stack.enter_context(contextlib.closing(
                    GrpcTarget(url, model, sample_inputs(model, photos=opts.photos),
                               timeout_s=max(30.0, 20 * (opts.p99_ms or 0) / 1000))))
                _say(opts, f"{model.name}: single-stream ({opts.min_duration_ms / 1000:g} s)")
                rec.single_stream = single_stream(targets[model.name], model.name, opts, out)
                save()
            if opts.scenario == "server":
                check_bound(opts.p99_ms, done)
            for model, rec in zip(models, done):
                _measure_scenario(rec, targets[model.name], model, url, opts, out, save)
                save()
        except (ServerError, PerfError) as exc:
            incomplete = str(exc)
        except InputError:
            save()
            raise
        save()
    if incomplete:
        measured = sum(len(m.search.points) if m.search else 0 for m in done)
        raise PerfError(f"measurement incomplete: {incomplete.rstrip('.')}; what was measured so far "
                        f"({measured} Server rates) is kept in {out} (report: {paths['md']})")
    return SloRun(out, done, paths)


def _measure_scenario(rec: ModelSlo, target: GrpcTarget, model: ServedModel, url: str, opts: SloOptions, out: Path,
                      save: Callable[[], None]) -> None:
    ss = rec.single_stream or {}
    one_ms = ss.get("mean_ms") or ss.get("p90_ms") or 10.0
    if opts.scenario == "offline":
        rate = model.instances * 1000.0 / one_ms
        logdir = out / "loadgen" / model.name / "offline"
        s = run_loadgen(target, ScenarioSettings(scenario="offline", offline_expected_qps=rate,
                                                 min_duration_ms=opts.min_duration_ms,
                                                 min_query_count=opts.min_query_count), logdir, where=f" to {model.name}")
        rec.offline = {**_summary_record(s, logdir, out), "throughput": s.completed_qps}
        return
    if opts.scenario != "server":
        return
    search_slo(rec, target, model.instances, opts, out, save)
    if rec.search.slo_rate is None:
        return
    if opts.closed_loop:
        _say(opts, f"{model.name}: closed loop at {rec.search.slo_rate:.2f} infer/s (perf_analyzer)")
        co = closed_loop_at(url, model.name, rec.search.slo_rate, out)
        open_point = next(p for p in rec.search.points if p.valid and p.rate == rec.search.slo_rate)
        co["open_loop_p99_ms"] = open_point.p99_ms
        rec.closed_loop = co


def search_slo(rec: ModelSlo, target: Target, instances: int, opts: SloOptions, out: Path,
               save: Callable[[], None] = lambda: None) -> None:
    """The Server-scenario rate search for ``rec`` (its single-stream run done), notes included."""
    ss = rec.single_stream or {}
    one_ms = ss.get("mean_ms") or ss.get("p90_ms") or 10.0
    # Start below capacity (one request at a time per instance takes one_ms); the search grows from there.
    start = 0.5 * instances * 1000.0 / one_ms

    def on_point(p: Point) -> None:
        rec_points.append(p)
        rec.search = SearchResult(list(rec_points), *bracket_answer(rec_points), "running")
        _say(opts, f"{rec.name}: {p.rate:.2f} q/s -> {p.verdict} (p99 {p.p99_ms or float('nan'):.1f} ms)")
        save()

    rec_points: list[Point] = []
    rec.search = search_rate(server_judge(target, rec.name, opts, out), start, precision=opts.precision,
                             max_runs=opts.max_runs, on_point=on_point)
    if rec.search.undecided:
        rec.notes.append("LoadGen's early stopping could not decide at "
                         + ", ".join(f"{p.rate:.2f}" for p in rec.search.undecided)
                         + " q/s (runs too short for its p99 estimate; counted as not VALID)")
    if rec.search.slo_rate is None:
        rec.notes.append(f"no offered rate was VALID at p99 <= {opts.p99_ms:g} ms")
    elif opts.confirm:
        confirm_slo(rec, target, opts, out)
    save()


def confirm_slo(rec: ModelSlo, target: Target, opts: SloOptions, out: Path) -> None:
    """Run the found rate once more with another arrival schedule (seed 1). A rate that does not hold
    is reported with that, and the SLO rate steps down to the next lower VALID rate of the search
    (not confirmed again): one lucky schedule must not make the figure."""
    rate = rec.search.slo_rate
    _say(opts, f"{rec.name}: confirming {rate:.2f} q/s with another arrival schedule")
    p = server_judge(target, rec.name, opts, out, seed=1, folder="confirm")(rate)
    rec.confirmation = p.to_dict()
    if p.valid:
        return
    lower = [q.rate for q in rec.search.points if q.valid and q.rate < rate]
    rec.notes.append(f"{rate:.2f} q/s did not hold with another arrival schedule ({p.verdict}, p99 "
                     f"{p.p99_ms or float('nan'):.1f} ms); the SLO rate is the next lower VALID rate"
                     + (f", {max(lower):.2f}" if lower else ": none"))
    rec.search = SearchResult(rec.search.points, max(lower) if lower else None, rate, "not confirmed")
