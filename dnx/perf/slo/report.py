"""``dnx perf --scenario`` report: report.json, report.md, slo_points.csv and the p99-vs-rate plot.

Written after every LoadGen run (atomically), so an interrupted search leaves a readable report.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.model_repository.layout import atomic_write_text
from dnx.perf.results import machine_info


def _f(x, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def points_csv(models: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "offered_qps", "scheduled_qps", "completed_qps", "p99_ms", "verdict"])
    for m in models:
        for p in m.get("points", []):
            w.writerow([m["model"], f"{p['rate']:.3f}", _f(p["scheduled_qps"], ".3f"), _f(p["completed_qps"], ".3f"),
                        _f(p["p99_ms"], ".3f"), p["verdict"]])
    return buf.getvalue()


def markdown(opts, models: list[dict], incomplete: str | None, machine: dict) -> str:
    bound = f"{opts.p99_ms:g} ms" if opts.p99_ms is not None else "-"
    lines = [f"# dnx perf: {opts.scenario} scenario (MLPerf LoadGen, open loop)", ""]
    if incomplete:
        lines += [f"**Incomplete:** {incomplete}", ""]
    lines += [f"CPU: {machine.get('cpu')} ({machine.get('cores')} cores; ISA: {', '.join(machine.get('isa') or [])}); "
              f"load average {machine.get('load_average')}.", "",
              f"p99 bound: {bound}. Server: Poisson arrivals at the offered rate (LoadGen), one batch-1 request "
              "per query over gRPC (async); a rate counts only when LoadGen's summary says VALID "
              "(p99 under the bound and its early-stopping estimate confirmed).", ""]
    if opts.scenario == "server":
        lines += ["| model | precision | runtime | single-stream p90 ms | single-stream p99 ms | SLO rate infer/s "
                  "| next rate not VALID | closed-loop p99 ms at that rate | open-loop p99 ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in models:
            ss, co = m.get("single_stream") or {}, m.get("coordinated_omission") or {}
            lo, hi = m.get("slo_interval") or (None, None)
            closed = (co.get("closed_loop") or {})
            closed_s = (f"{closed['p99_ms']:.1f} (c{closed['concurrency']}, {closed['throughput']:.1f}/s)"
                        if closed else "-")
            lines.append(f"| {m['model']} | {m['precision']} | {m['runtime']} | {_f(ss.get('p90_ms'))} | "
                         f"{_f(ss.get('p99_ms'))} | {_f(lo, '.2f')} | {_f(hi, '.2f')} | {closed_s} | "
                         f"{_f(co.get('open_loop_p99_ms'))} |")
        for m in models:
            lines += ["", f"## {m['model']}: p99 vs offered rate", "",
                      "| offered q/s | scheduled q/s | completed q/s | p99 ms | LoadGen |", "|---|---|---|---|---|"]
            for p in m.get("points", []):
                verdict = {"valid": "VALID", "over": "INVALID (p99 over the bound)",
                           "too_short": "too short to decide (early stopping)"}[p["verdict"]]
                lines.append(f"| {p['rate']:.2f} | {_f(p['scheduled_qps'], '.2f')} | {_f(p['completed_qps'], '.2f')} | "
                             f"{_f(p['p99_ms'])} | {verdict} |")
            conf = m.get("confirmation")
            if conf:
                lines += ["", f"Confirmation: {conf['rate']:.2f} q/s rerun with another arrival schedule (LoadGen seed 1): "
                          f"{'VALID' if conf['verdict'] == 'valid' else conf['verdict'].replace('_', ' ')}, "
                          f"p99 {_f(conf['p99_ms'])} ms."]
            for note in m.get("notes", []):
                lines += ["", f"- {note}"]
            if (m.get("coordinated_omission") or {}).get("closed_loop"):
                lines += ["", "Coordinated omission: perf_analyzer's closed loop at the concurrency whose mean rate is "
                          "nearest the SLO rate waits for each answer before sending the next, so its p99 omits the "
                          "queueing that independent arrivals meet; the open-loop p99 is LoadGen's at the SLO rate."]
                if m["coordinated_omission"].get("note"):
                    lines += ["", f"- {m['coordinated_omission']['note']}"]
            if m.get("points"):
                lines += ["", f"![p99 vs offered rate](slo_{m['model']}.png)"]
    else:
        lines += ["| model | precision | runtime | single-stream p90 ms | p99 ms | offline infer/s | LoadGen |",
                  "|---|---|---|---|---|---|---|"]
        for m in models:
            ss, off = m.get("single_stream") or {}, m.get("offline") or {}
            verdict = (off or ss).get("verdict", "-")
            lines.append(f"| {m['model']} | {m['precision']} | {m['runtime']} | {_f(ss.get('p90_ms'))} | "
                         f"{_f(ss.get('p99_ms'))} | {_f(off.get('throughput'))} | {verdict} |")
    lines += ["", "LoadGen's own logs (summary, detail) are under `loadgen/<model>/<run>/`.", ""]
    return "\n".join(lines)


def plot(path: Path, model: dict, bound_ms: float | None) -> None:
    mpl = lazy_import("matplotlib")
    mpl.use("Agg")
    plt = lazy_import("matplotlib.pyplot")
    pts = [p for p in model.get("points", []) if p["p99_ms"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for verdict, marker in (("valid", "o"), ("over", "x"), ("too_short", "^")):
        sel = [p for p in pts if p["verdict"] == verdict]
        ax.plot([p["rate"] for p in sel], [p["p99_ms"] for p in sel], marker, label=verdict.replace("_", " "))
    ax.plot([p["rate"] for p in pts], [p["p99_ms"] for p in pts], "-", color="grey", alpha=0.5)
    if bound_ms is not None:
        ax.axhline(bound_ms, color="red", linestyle="--", label=f"p99 bound {bound_ms:g} ms")
    ax.set_xlabel("offered rate (queries/s, Poisson)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(f"{model['model']}: open-loop p99 vs offered rate")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_slo_report(out: Path, opts, models: list[dict], incomplete: str | None) -> dict[str, Path]:
    machine = machine_info()
    report = {
        "scenario": opts.scenario, "p99_bound_ms": opts.p99_ms, "complete": incomplete is None,
        "incomplete_reason": incomplete, "machine": machine, "load_engine": "mlperf_loadgen",
        "loadgen": {"min_duration_ms": opts.min_duration_ms, "min_query_count": opts.min_query_count,
                    "max_runs": opts.max_runs, "precision": opts.precision},
        "models": {m["model"]: m for m in models},
    }
    paths = {"json": out / "report.json", "md": out / "report.md", "csv": out / "slo_points.csv"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(paths["md"], markdown(opts, models, incomplete, machine))
    atomic_write_text(paths["csv"], points_csv(models))
    if opts.scenario == "server":
        for m in models:
            if m.get("points"):
                paths[f"plot_{m['model']}"] = out / f"slo_{m['model']}.png"
                plot(paths[f"plot_{m['model']}"], m, opts.p99_ms)
    return paths
