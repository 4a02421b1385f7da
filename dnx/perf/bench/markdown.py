"""``perf/BENCHMARKS.md``: the machine, versions, ratios vs targets, in-process and served tables."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from dnx.perf.bench.result import BenchOptions, BenchResult
from dnx.perf.bench.untuned import untuned_markdown
from dnx.perf.results import is_stable
from dnx.perf.served import repository_calibration

KEEP_MARKER = "<!-- dnx bench keeps everything below this line -->"


def kept_sections(path: Path) -> str:
    """The part of an existing BENCHMARKS.md from :data:`KEEP_MARKER` on (other runs' figures), or ''."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    at = text.find(KEEP_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def _fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def render_markdown(res: BenchResult, opts: BenchOptions) -> str:
    """``perf/BENCHMARKS.md``."""
    m = res.machine
    lines = [
        "# Benchmarks", "",
        f"Written by `dnx bench` (`make bench`) on {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}: "
        f"one run, one machine, the same preprocessed photographs for every runtime (scikit-image `{res.photo}` for "
        "perf_analyzer and batch 1, the shipped photographs cycled for larger batches).", "",
        f"Calibration: {repository_calibration(opts.repository)}", "",
        "## Machine", "",
        f"- CPU: {m['cpu']}, {m['cores']} logical cores, bf16: {'yes' if m['bf16'] else 'no'}"
        + (f"; ISA flags: {', '.join(m['isa'])}" if m.get("isa") else ""),
        f"- RAM: {m['ram_gib']} GiB; load average at start: {', '.join(map(str, m['load_average']))}",
        f"- OS: {m['os']}; Python {m['python']}",
        *(f"- **Warning**: {w}" for w in res.warnings), "",
        "## Versions", "",
        ", ".join(f"{k} {v}" for k, v in res.versions.items() if v), "",
        "## Ratios vs targets", "",
        "| ratio | value | target | result | figures |", "|---|---|---|---|---|",
    ]
    for r in res.ratios:
        verdict = "**FAIL**" if r.verdict == "FAIL" else r.verdict
        lines.append(f"| {r.name} | {_fmt(r.value, 2)}x | {r.target} | {verdict} | {r.detail} |")
    if not all(map(is_stable, res.served + res.served_other)):
        lines += ["", "Served figures in the ratios are each model's best *stable* level; a level marked unstable "
                      "below counts only where none of that model's levels was stable."]
    lines += ["", "## In-process", "",
              f"Each point runs for ~{opts.duration_s:g} s (at least {opts.min_iterations} runs) after {opts.warmup} warm-up "
              "runs; throughput = batch x iterations / time.", "",
              "| runner | batch | threads | iterations | mean ms | p50 ms | p99 ms | img/s | notes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in res.in_process:
        lines.append(f"| {t.runner} | {t.batch} | {t.threads or '-'} | {t.iterations} | {_fmt(t.mean_ms)} | "
                     f"{_fmt(t.p50_ms)} | {_fmt(t.p99_ms)} | {_fmt(t.throughput)} | {t.notes} |")
    lines += ["", "## Served by Triton (local server launched by dnx, perf_analyzer over gRPC, batch 1)", "",
              f"Main sweep with perf_analyzer `--shared-memory {res.shared_memory}`"
              + (f"; the second pass `--shared-memory {opts.other_shared_memory}` "
                 f"({'tensors in system shared memory' if opts.other_shared_memory == 'system' else 'tensors in the gRPC messages'})"
                 if res.served_other else "")
              + ". RSS: the model's own processes (its backend stubs) after the level; Triton CPU: the host's used "
              "memory as Triton's metrics export it.", "",
              "| model | shared memory | concurrency | infer/s | p50 ms | p99 ms | queue ms | compute ms | RSS MiB | "
              "Triton CPU MiB | stable |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(res.served + res.served_other, key=lambda r: (r["model"], r.get("shared_memory") != res.shared_memory)):
        compute = r["server_compute_input_ms"] + r["server_compute_infer_ms"] + r["server_compute_output_ms"]
        lines.append(f"| `{r['model']}` | {r.get('shared_memory', '-')} | {r['concurrency']} | {_fmt(r['throughput'])} | "
                     f"{_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['server_queue_ms'])} | {_fmt(compute)} | "
                     f"{_fmt(r.get('rss_mib'), 0)} | {_fmt(r.get('triton_cpu_memory_mib'), 0)} | "
                     f"{'yes' if r['stable'] else '**no**'} |")
    lines += ["", "Configs read back from the server:", ""]
    for name, c in res.served_configs.items():
        lines.append(f"- `{name}`: `{json.dumps(c)}`")
    lines += untuned_markdown(res.untuned, res.served)
    if opts.notes:
        lines += ["", "## Notes", "", opts.notes.strip()]
    lines += ["", "## Commands", "", "```"] + res.commands + ["```", "",
              f"Full results (raw perf_analyzer CSVs, report, plots): `{res.results_dir}`."]
    return "\n".join(lines) + "\n"
