"""``dnx tune``'s report: ``candidates.csv``, ``report.md`` (winner per model and its gain), ``report.json``
and ``tune.png`` (throughput vs p99, one point per candidate, the winner marked)."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from dataclasses import asdict
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.model_repository.layout import atomic_write_bytes, atomic_write_text
from dnx.perf.tune.decision import MIN_GAIN
from dnx.perf.tune.options import TuneResult

CSV_COLUMNS = ("model", "candidate", "label", "status", "baseline", "winner", "score", "throughput", "p99_ms",
               "at_concurrency", "c1_throughput", "c1_p99_ms", "load_s", "seconds", "error", "knobs", "points")


def _csv_rows(result: TuneResult) -> list[dict]:
    o = result.options
    rows = []
    for c in result.candidates:
        p = c.at_score(o.objective, o.latency_budget_ms) or {}
        c1 = next((q for q in c.points if q["concurrency"] == 1), {})
        rows.append({
            "model": c.model, "candidate": c.index, "label": c.label, "status": c.status, "baseline": c.baseline,
            "winner": c.winner, "score": c.score, "throughput": p.get("throughput"), "p99_ms": p.get("p99_ms"),
            "at_concurrency": p.get("concurrency"), "c1_throughput": c1.get("throughput"), "c1_p99_ms": c1.get("p99_ms"),
            "load_s": round(c.load_s, 2), "seconds": round(c.seconds, 1), "error": c.error,
            "knobs": json.dumps(c.knobs), "points": json.dumps(c.points),
        })
    return rows


def _plot(result: TuneResult) -> bytes | None:
    o = result.options
    models = list(dict.fromkeys(c.model for c in result.candidates if c.score is not None))
    if not models:
        return None
    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = lazy_import("matplotlib.pyplot")
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        for c in (c for c in result.candidates if c.model == name and c.score is not None):
            p = c.at_score(o.objective, o.latency_budget_ms)
            style = dict(marker="*", s=220, color="tab:red", zorder=3, label="winner") if c.winner else \
                dict(marker="s", s=60, color="tab:gray", label="previous config") if c.baseline else \
                dict(marker="o", s=30, color="tab:blue")
            ax.scatter([p["p99_ms"]], [p["throughput"]], **style)
            ax.annotate(str(c.index), (p["p99_ms"], p["throughput"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set(xlabel="p99 latency (ms)", ylabel="throughput (infer/s)", title=f"{name} (labels: candidate #)")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_tune_report(result: TuneResult) -> dict[str, Path]:
    """``candidates.csv``, ``report.md``, ``report.json`` and ``tune.png`` in the result folder."""
    out, o = result.out_dir, result.options
    rows = _csv_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write_text(out / "candidates.csv", buf.getvalue())
    paths = {"csv": out / "candidates.csv", "md": out / "report.md", "json": out / "report.json"}
    png = _plot(result)
    if png:
        atomic_write_bytes(out / "tune.png", png)
        paths["plot"] = out / "tune.png"
    m = result.machine
    budget = f", p99 within {o.latency_budget_ms:g} ms" if o.latency_budget_ms is not None else ""
    lines = [
        "# dnx tune report", "",
        f"- created: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"
        + (" (**interrupted**: repository unchanged)" if result.interrupted else "")
        + (" (dry run: repository unchanged)" if o.dry_run and not result.interrupted else ""),
        f"- repository `{o.repository}`, server `{result.url}`, objective **{o.objective}**{budget}, "
        f"budget {o.budget_minutes:g} min, concurrency {', '.join(map(str, o.levels))}, perf_analyzer windows "
        f"{o.window_ms} ms (stability {o.stability_percentage:g} %, up to {o.max_trials} windows), "
        f"shared memory `{o.shared_memory}`",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores"
        + (f" ({', '.join(m['isa'])})" if m.get("isa") else "")
        + f", load average at start {', '.join(map(str, m.get('load_average', [])))}",
        f"- a winner is written only when it beats the previous config by {MIN_GAIN:.0%}.", "",
        "## Winners", "",
        "| model | previous config | previous | winner | winner figure | gain | written |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in result.decisions.items():
        g = "-" if d.gain is None else f"{d.gain:+.1%}"
        lines.append(f"| `{name}` | {d.previous or '-'} | {d.previous_figure or '-'} | "
                     f"{d.best_found or '-'} | {d.best_found_figure or '-'} | {g} | "
                     f"{'yes' if d.written else 'no' + (': ' + d.reason if d.reason else '')} |")
    if "plot" in paths:
        lines += ["", "![throughput vs p99 per candidate](tune.png)"]
    lines += ["", "## Candidates", "",
              "| model | # | settings | status | infer/s | p99 ms | at c | c1 p99 ms | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        status = r["status"] + (" (previous)" if r["baseline"] else "") + (" **winner**" if r["winner"] else "")
        if r["error"]:
            status += f": {r['error']}"
        lines.append(f"| `{r['model']}` | {r['candidate']} | {r['label']} | {status} | {f(r['throughput'])} | "
                     f"{f(r['p99_ms'])} | {r['at_concurrency'] or '-'} | {f(r['c1_p99_ms'])} | {r['seconds']} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    doc = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
           "url": result.url, "machine": result.machine, "versions": result.versions,
           "interrupted": result.interrupted, "decisions": {n: asdict(d) for n, d in result.decisions.items()},
           "candidates": rows}
    atomic_write_text(out / "report.json", json.dumps(doc, indent=2, default=str) + "\n")
    return paths
