"""Turn a :class:`~dnx.perf.sweep.loop.SweepResult` into a tidy CSV, ``report.md``, ``report.json`` and plots."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from dataclasses import asdict
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.model_repository.layout import atomic_write_bytes, atomic_write_text
from dnx.perf.results import best_row
from dnx.perf.served import variant_of
from dnx.perf.sweep.loop import SweepResult

TIDY_NAME = "results.csv"
TIDY_COLUMNS = (
    "model", "precision", "runtime", "batch", "concurrency", "throughput",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms",
    "server_queue_ms", "server_compute_input_ms", "server_compute_infer_ms", "server_compute_output_ms",
    "client_send_ms", "network_ms", "client_recv_ms", "gpu_utilization", "stable", "window_ms",
    "shared_memory", "rss_mib", "server_rss_mib", "triton_cpu_memory_mib",
    "server_cpu_ms_per_inference", "client_cpu_ms_per_request", "server_cores_busy", "cores_per_1000_infer_s",
    "client_bound", "usd_per_million", "preprocess_cpu_ms_per_request",
)
SHARED_MEMORY_WORDS = {"none": "tensors in the gRPC/HTTP messages", "system": "tensors in system shared memory"}


def tidy_rows(result: SweepResult, manifest: dict | None = None) -> list[dict]:
    """One dict per (model, batch, concurrency), in :data:`TIDY_COLUMNS` order, times in ms."""
    rows = []
    for (model, batch), measurements in result.measurements.items():
        precision, runtime = variant_of(model, manifest)
        for m in measurements:
            d = asdict(m)
            d.update(model=model, precision=precision, runtime=runtime, batch=batch,
                     shared_memory=result.options.shared_memory)
            rows.append({k: d[k] for k in TIDY_COLUMNS})
    return rows


def compare(rows: list[dict], latency_budget_ms: float | None = None) -> list[dict]:
    """Per model: the best throughput, and the best whose p99 fits ``latency_budget_ms``."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        best = best_row(mine)
        entry = {
            "model": model, "precision": best["precision"], "runtime": best["runtime"],
            "best": _point(best), "within_budget": None,
        }
        if latency_budget_ms is not None:
            fits = [r for r in mine if r["p99_ms"] <= latency_budget_ms]
            entry["within_budget"] = _point(best_row(fits)) if fits else None
        out.append(entry)
    return sorted(out, key=lambda e: -e["best"]["throughput"])


def preprocessing_cost(result: SweepResult, rows: list[dict]) -> list[dict]:
    """Per ensemble measured beside its tensor-in variant: server CPU per request of each, and the
    difference (decoding, resizing, the softmax step and the extra hop), at every common level."""
    out = []
    cpu = {(r["model"], r["batch"], r["concurrency"]): r["server_cpu_ms_per_inference"] for r in rows}
    for m in result.models:
        for variant in (s for s in m.ensemble_steps if any(r["model"] == s for r in rows)):
            for (name, batch, level), bytes_in in cpu.items():
                tensor_in = cpu.get((variant, batch, level))
                if name == m.name and bytes_in is not None and tensor_in is not None:
                    own = next((r["preprocess_cpu_ms_per_request"] for r in rows if (r["model"], r["batch"],
                                r["concurrency"]) == (name, batch, level)), None)
                    out.append({"ensemble": m.name, "variant": variant, "batch": batch, "concurrency": level,
                                "bytes_in_cpu_ms": bytes_in, "tensor_in_cpu_ms": tensor_in,
                                "difference_cpu_ms": round(bytes_in - tensor_in, 3), "preprocessing_cpu_ms": own})
    return out


def _point(r: dict) -> dict:
    return {k: r[k] for k in ("batch", "concurrency", "throughput", "p50_ms", "p99_ms", "stable")}


def _f(x: float, nd: int = 1) -> str:
    return f"{x:.{nd}f}"


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _opt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _render_md(result: SweepResult, rows: list[dict], comparison: list[dict], meta: dict,
               latency_budget_ms: float | None, plots: dict[str, str]) -> str:
    o = result.options
    lines = [
        "# dnx perf report", "",
        f"- created: {meta['created']}",
        f"- server: `{o.url}` ({o.protocol}), perf_analyzer `{meta['perf_analyzer']}`",
        f"- concurrency `{o.concurrency}`, batch sizes {', '.join(map(str, o.batch_sizes))}, "
        f"measurement window {o.measurement_interval_ms} ms"
        + (f", percentile p{o.percentile}" if o.percentile else "")
        + (f", stability {o.stability_percentage:g}%" if o.stability_percentage else ""),
        f"- perf_analyzer shared memory: `{o.shared_memory}` ({SHARED_MEMORY_WORDS.get(o.shared_memory, '?')})",
        "- throughput is inferences (images) per second; latencies are client-side, in ms; "
        "queue/compute are the server's averages.",
        "- memory, read after each level: " + (", ".join((meta.get("memory") or {}).get("sources") or []) or "none")
        + " (RSS MiB: the model's own processes, its backend stubs; Triton CPU MiB: the host's used memory as "
        "Triton exports it)." + "".join(f" Not read: {n}" for n in (meta.get("memory") or {}).get("notes") or []),
        "- CPU, read around each level: " + (", ".join((meta.get("cpu") or {}).get("sources") or []) or "none")
        + "".join(f" {n}." for n in (meta.get("cpu") or {}).get("notes") or [])
        + " Server CPU ms per inference x 1000 infer/s = cores needed; **client-bound** marks a level where "
        "perf_analyzer used more CPU than the server (on a shared machine its figure is the client's limit).",
        "- exact perf_analyzer command lines: `commands.txt`; raw CSVs and logs: `raw/`.", "",
    ]
    if result.incomplete:
        lines += [f"**Incomplete sweep**: {result.points()} of {result.planned()} points measured "
                  f"(every completed level is kept). Reason: {result.incomplete}", "",
                  f"Continue it with `dnx perf --resume {result.out_dir}`.", ""]
    lines += [
        "## Comparison", "",
    ]
    budget = f"best within p99 <= {latency_budget_ms:g} ms" if latency_budget_ms is not None else None
    head = ["model", "precision", "runtime", "best infer/s", "at batch x conc.", "p99 ms there"]
    if budget:
        head += [budget, "at batch x conc.", "p99 ms"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in comparison:
        b = c["best"]
        cells = [f"`{c['model']}`", c["precision"], c["runtime"], _f(b["throughput"]),
                 f"{b['batch']} x {b['concurrency']}", _f(b["p99_ms"])]
        if budget:
            w = c["within_budget"]
            cells += ([_f(w["throughput"]), f"{w['batch']} x {w['concurrency']}", _f(w["p99_ms"])]
                      if w else ["none", "-", "-"])
        lines.append("| " + " | ".join(cells) + " |")
    if meta.get("preprocessing"):
        lines += ["", "## What preprocessing costs (bytes in vs tensor in)", "",
                  "Server CPU per request of the ensemble (encoded photographs in) and of its variant "
                  "(tensors in), measured in this sweep, and the preprocessing model's own processes per request "
                  "(decoding and resizing): the difference of the first two also carries what a spinning thread "
                  "pool charges while it waits. The photographs: " + (f"`{o.photos}`" if o.photos else
                                                                       "the shipped ones plus a 12 MP phone JPEG") + ".",
                  "", "| ensemble | variant | batch x conc. | bytes in CPU ms | tensor in CPU ms | preprocessing CPU ms |",
                  "|---|---|---|---|---|---|"]
        for c in meta["preprocessing"]:
            own = "-" if c["preprocessing_cpu_ms"] is None else f"{c['preprocessing_cpu_ms']:.2f}"
            lines.append(f"| `{c['ensemble']}` | `{c['variant']}` | {c['batch']} x {c['concurrency']} | "
                         f"{c['bytes_in_cpu_ms']:.2f} | {c['tensor_in_cpu_ms']:.2f} | {own} |")
    if "concurrency" in plots:
        lines += ["", f"![throughput vs concurrency]({plots['concurrency']})"]
    if "cpu" in plots:
        lines += ["", f"![server CPU ms per inference vs concurrency]({plots['cpu']})"]
    if meta.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"`{k}` ({v})" for k, v in meta["skipped"].items()) + "."]
    if result.saturated:
        past = "; ".join(f"`{m}` batch {b}: c{', c'.join(map(str, levels))}"
                         for (m, b), levels in sorted(result.saturated.items()))
        lines += ["", f"Past saturation, not measured (throughput flat for 3 levels; `--all-levels` measures them): {past}."]
    unstable = [r for r in rows if not r["stable"]]
    if unstable:
        pts = ", ".join(f"{r['model']} b{r['batch']} c{r['concurrency']}" for r in unstable)
        lines += ["", f"**Unstable** (no stable window even after longer windows; numbers from a relaxed "
                      f"stability check, treat with care): {pts}."]
    for m in result.models:
        precision, runtime = variant_of(m.name, meta.get("manifest"))
        s = m.summary()
        lines += ["", f"## `{m.name}` ({runtime}, {precision})", "",
                  f"Config read back from the server: backend `{s['backend']}`, version {s['version']}, "
                  f"max_batch_size {s['max_batch_size']}, instance_group "
                  + ", ".join(f"{g['count']} x {g['kind']}" for g in s["instance_group"])
                  + f", dynamic_batching `{json.dumps(s['dynamic_batching'])}`"
                  + f", parameters `{json.dumps(s['parameters'])}`.", ""]
        head = ["batch", "conc.", "infer/s", "p50", "p90", "p95", "p99", "avg", "queue", "compute", "stable",
                "RSS MiB", "Triton CPU MiB", "server CPU ms/inf", "client CPU ms/req", "server cores busy"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in rows if r["model"] == m.name):
            compute = r["server_compute_input_ms"] + r["server_compute_infer_ms"] + r["server_compute_output_ms"]
            lines.append("| " + " | ".join([
                str(r["batch"]), str(r["concurrency"]), _f(r["throughput"]), _f(r["p50_ms"]), _f(r["p90_ms"]),
                _f(r["p95_ms"]), _f(r["p99_ms"]), _f(r["avg_ms"]), _f(r["server_queue_ms"]), _f(compute),
                "yes" if r["stable"] else "**no**", _mib(r["rss_mib"]), _mib(r["triton_cpu_memory_mib"]),
                _opt(r["server_cpu_ms_per_inference"]),
                _opt(r["client_cpu_ms_per_request"]) + (" **client-bound**" if r["client_bound"] else ""),
                _opt(r["server_cores_busy"]),
            ]) + " |")
        if m.name in plots:
            lines += ["", f"![{m.name}: throughput vs p99]({plots[m.name]})"]
    return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _by_concurrency(plt, series: dict, column: str, ylabel: str, title: str, path: Path, from_zero: bool = False) -> str:
    """One line per (model, batch) of ``column`` against concurrency, written to ``path``; its name under plots/."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (m, b), pts in series.items():
        ax.plot([p["concurrency"] for p in pts], [p[column] for p in pts], marker="o", label=f"{m} b{b}")
    ax.set(xlabel="concurrency", ylabel=ylabel, title=title, **({"ylim": (0, None)} if from_zero else {}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)
    return f"plots/{path.name}"


def write_plots(rows: list[dict], out_dir: Path) -> dict[str, str]:
    """PNG plots (matplotlib Agg): throughput vs p99 per model, throughput vs concurrency for all.

    Returns ``{model or "concurrency": path relative to out_dir}``.
    """
    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg", force=True)
    plt = lazy_import("matplotlib.pyplot")
    plots: dict[str, str] = {}
    series: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        series.setdefault((r["model"], r["batch"]), []).append(r)
    for model in dict.fromkeys(r["model"] for r in rows):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (m, b), pts in series.items():
            if m != model:
                continue
            ax.plot([p["p99_ms"] for p in pts], [p["throughput"] for p in pts], marker="o", label=f"batch {b}")
            for p in pts:
                ax.annotate(str(p["concurrency"]), (p["p99_ms"], p["throughput"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set(xlabel="p99 latency (ms)", ylabel="throughput (infer/s)", title=f"{model}: throughput vs p99")
        ax.grid(alpha=0.3)
        ax.legend(title="labels: concurrency", fontsize=8)
        rel = f"plots/{model}_throughput_vs_p99.png"
        atomic_write_bytes(out_dir / rel, _png(fig))
        plt.close(fig)
        plots[model] = rel
    plots["concurrency"] = _by_concurrency(plt, series, "throughput", "throughput (infer/s)", "throughput vs concurrency",
                                           out_dir / "plots/throughput_vs_concurrency.png")
    costed = {k: [p for p in pts if p["server_cpu_ms_per_inference"] is not None] for k, pts in series.items()}
    if any(costed.values()):
        plots["cpu"] = _by_concurrency(plt, {k: v for k, v in costed.items() if v}, "server_cpu_ms_per_inference",
                                       "server CPU ms per inference", "CPU cost per inference",
                                       out_dir / "plots/cpu_ms_per_inference.png", from_zero=True)
    return plots


def write_report(result: SweepResult, *, latency_budget_ms: float | None = None,
                 manifest: dict | None = None, skipped: dict[str, str] | None = None,
                 extra: dict | None = None, memory: dict | None = None, cpu: dict | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``commands.txt``, ``report.md``, ``report.json`` and plots into the result's folder.

    ``memory``: where the rows' memory figures came from (``sources``) and why one was given up (``notes``).
    """
    out = Path(result.out_dir)
    rows = tidy_rows(result, manifest)
    comparison = compare(rows, latency_budget_ms)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TIDY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write_text(out / TIDY_NAME, buf.getvalue())
    atomic_write_text(out / "commands.txt", "".join(run.command + "\n" for run in result.runs))

    plots = write_plots(rows, out) if rows else {}
    meta = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "perf_analyzer": result.perf_analyzer,
        "manifest": manifest,
        "skipped": skipped or {},
        "memory": memory,
        "cpu": cpu,
        "preprocessing": preprocessing_cost(result, rows),
    }
    atomic_write_text(out / "report.md", _render_md(result, rows, comparison, meta, latency_budget_ms, plots))
    o = result.options
    doc = {
        "created": meta["created"],
        "server": {"url": o.url, "protocol": o.protocol},
        "perf_analyzer": result.perf_analyzer,
        "options": {
            "concurrency": str(o.concurrency), "batch_sizes": list(o.batch_sizes),
            "measurement_interval_ms": o.measurement_interval_ms, "percentile": o.percentile,
            "stability_percentage": o.stability_percentage, "max_trials": o.max_trials, "retries": o.retries,
            "collect_metrics": o.collect_metrics, "latency_budget_ms": latency_budget_ms,
            "shared_memory": o.shared_memory,
        },
        "memory": memory or {"sources": [], "notes": []},
        "cpu": cpu or {"sources": [], "notes": ["CPU not measured"]},
        "models": {
            m.name: {"precision": p, "runtime": rt, "config": m.summary(), "server_config": m.config}
            for m in result.models for p, rt in [variant_of(m.name, manifest)]
        },
        "comparison": comparison,
        "preprocessing_cost": meta["preprocessing"],
        "results": rows,
        "runs": [asdict(r) for r in result.runs],
        "plots": plots,
        "skipped": skipped or {},
        "complete": result.incomplete is None,
        "incomplete_reason": result.incomplete,
        "points": {"measured": result.points(), "planned": result.planned()},
        "saturated": [{"model": m, "batch": b, "skipped_levels": levels} for (m, b), levels in result.saturated.items()],
        **(extra or {}),
    }
    atomic_write_text(out / "report.json", json.dumps(doc, indent=2) + "\n")
    paths = {"csv": out / TIDY_NAME, "md": out / "report.md", "json": out / "report.json",
             "commands": out / "commands.txt"}
    paths.update({f"plot:{k}": out / v for k, v in plots.items()})
    return paths
