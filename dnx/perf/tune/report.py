"""``dnx tune``'s report: ``candidates.csv``, ``report.md`` (per model: the decision, each candidate's
curve over the load against the current config, the trade-offs, the rerun), ``report.json``
(each decision's ``to_dict()`` and its confirmation's) and ``tune-<model>.png`` per model
(:func:`dnx.perf.tune.pareto.plot_pareto`: the curves and the throughput-vs-p99 Pareto front)."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from dataclasses import asdict
from pathlib import Path

from dnx.model_repository.layout import atomic_write_text
from dnx.perf.tune.objective import MIN_GAIN, SLACK, share
from dnx.perf.tune.options import TuneResult
from dnx.perf.tune.pareto import plot_pareto, report_markdown
from dnx.perf.tune.slo import report_lines

CSV_COLUMNS = ("model", "candidate", "label", "status", "baseline", "winner", "score", "throughput", "p99_ms",
               "at_concurrency", "c1_throughput", "c1_p99_ms", "load_s", "seconds", "stopped", "error", "knobs",
               "points")


def _csv_rows(result: TuneResult) -> list[dict]:
    rows = []
    for c in result.candidates:
        p = max(c.points, key=lambda q: q["throughput"], default={})
        c1 = next((q for q in c.points if q["concurrency"] == 1), {})
        rows.append({
            "model": c.model, "candidate": c.index, "label": c.label, "status": c.status, "baseline": c.baseline,
            "winner": c.winner, "score": c.score, "throughput": p.get("throughput"), "p99_ms": p.get("p99_ms"),
            "at_concurrency": p.get("concurrency"), "c1_throughput": c1.get("throughput"), "c1_p99_ms": c1.get("p99_ms"),
            "load_s": round(c.load_s, 2), "seconds": round(c.seconds, 1), "stopped": c.stopped, "error": c.error,
            "knobs": json.dumps(c.knobs), "points": json.dumps(c.points),
        })
    return rows


def machine_words(m: dict) -> str:
    """``Intel(R) Xeon(R) ..., 2 cores (avx2, avx512f, ...)``."""
    return f"{m.get('cpu')}, {m.get('cores')} cores" + (f" ({', '.join(m['isa'])})" if m.get("isa") else "")


def _objective_words(o) -> str:
    if o.objective == "slo":
        return (f"the highest open-loop (Poisson) rate whose p99 stays within {o.p99_ms:g} ms, LoadGen's Server "
                "scenario; the closed-loop search ranks the candidates by their best throughput below the first level "
                "(from c1 up) whose p99 is over that bound, and the current config and the winner are measured in "
                "the open loop")
    if o.objective == "load":
        return (f"the geometric mean of throughput over {o.load.describe()}, never more than {share(SLACK)} slower "
                f"than the current config at any level")
    if o.objective == "saturation":
        return f"the best throughput at any level up to the fill level (at most c{o.max_concurrency})"
    return f"the lowest p99 at c{o.levels[0]}"


def write_tune_report(result: TuneResult) -> dict[str, Path]:
    """``candidates.csv``, ``report.md``, ``report.json`` and ``tune-<model>.png`` in the result folder."""
    out, o = result.out_dir, result.options
    rows = _csv_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write_text(out / "candidates.csv", buf.getvalue())
    paths = {"csv": out / "candidates.csv", "md": out / "report.md", "json": out / "report.json"}
    m = result.machine
    budget = f", p99 within {o.latency_budget_ms:g} ms" if o.latency_budget_ms is not None else ""
    lines = [
        "# dnx tune report", "",
        f"- created: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"
        + (" (**interrupted**: repository unchanged)" if result.interrupted else "")
        + (" (dry run: repository unchanged)" if o.dry_run and not result.interrupted else ""),
        f"- repository `{o.repository}`, server `{result.url}`, objective **{o.objective}** "
        f"({_objective_words(o)}){budget}, load `--concurrency {o.load}`, budget {o.budget_minutes:g} min, "
        f"perf_analyzer windows {o.window_ms} ms (stability {o.stability_percentage:g} %, up to {o.max_trials} windows), "
        f"shared memory `{o.shared_memory}`",
        f"- machine: {machine_words(m)}, load average at start {', '.join(map(str, m.get('load_average', [])))}",
        *[f"- `{pre}` is measured through its ensemble `{ens}` (perf_analyzer sends it photographs: the shipped ones "
          "and a 12 MP phone JPEG); its answers are checked on encoded bytes" for pre, ens in result.through.items()],
        *([f"- **the budget ended the search**: {len(result.candidates)} candidates measured, the next one and the "
           f"confirm step would not have fitted {o.budget_minutes:g} min; pass a larger --budget-minutes to search "
           "further"] if result.budget_stopped else []),
        ("- a winner must hold its SLO rate in an A/B round where the current config does not (section Open loop) "
         "before it is written; the figure recorded is its confirmed SLO rate." if o.objective == "slo" else
         f"- a winner must gain {share(MIN_GAIN)} and hold on a rerun (it and the current config measured again, "
         "back to back, interleaved at every level, with the runners-up within the noise of it where they fit) before "
         "it is written; the figures recorded are the rerun's."), "",
        "## Winners", "",
        "| model | current config | current | chosen | chosen figure | gain | written |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in result.decisions.items():
        g = "-" if d.gain is None else f"{d.gain:+.1%}"
        lines.append(f"| `{name}` | {d.previous or '-'} | {d.previous_figure or '-'} | "
                     f"{d.best_found or '-'} | {d.best_found_figure or '-'} | {g} | "
                     f"{'yes' if d.written else 'no' + (': ' + d.reason if d.reason else '')} |")
    if result.slo:
        lines += ["", *report_lines(result)]
    for name, d in result.decisions.items():
        if d.choice is None:
            continue
        png = f"tune-{name}.png"
        try:
            paths[f"plot:{name}"] = plot_pareto(d.choice, out / png, title=f"{name}: " + (
                f"{d.choice.winner.label} chosen" if d.choice.changes else "the current config stays"))
        except (OSError, ValueError):  # the report itself matters more than its figure
            png = None
        lines += ["", f"## `{name}`", "", report_markdown(d.choice, confirmation=d.confirmation, plot=png)]
    lines += ["## Candidates", "",
              "| model | # | settings | status | best infer/s | p99 ms | at c | c1 p99 ms | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        status = r["status"] + (" (current)" if r["baseline"] else "") + (" **kept**" if r["winner"] else "")
        if r["error"]:
            status += f": {r['error']}"
        elif r["stopped"]:
            status += f"; stopped early: {r['stopped']}"
        lines.append(f"| `{r['model']}` | {r['candidate']} | {r['label']} | {status} | {f(r['throughput'])} | "
                     f"{f(r['p99_ms'])} | {r['at_concurrency'] or '-'} | {f(r['c1_p99_ms'])} | {r['seconds']} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    doc = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
           "load": str(o.load), "url": result.url, "machine": result.machine, "versions": result.versions,
           "interrupted": result.interrupted, "measured_through": result.through,
           "budget_stopped": result.budget_stopped, "decisions": {n: d.to_dict() for n, d in result.decisions.items()},
           "candidates": rows}
    atomic_write_text(out / "report.json", json.dumps(doc, indent=2, default=str) + "\n")
    return paths
