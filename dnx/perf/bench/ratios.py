"""``dnx bench``'s ratios against the targets: served Triton vs the in-process baselines.

Each ratio is a :class:`Ratio` (``bench.json`` and BENCHMARKS.md keep their columns through
:meth:`Ratio.to_dict`); rows of served figures are tidy perf rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnx.perf.bench.timing import Timing
from dnx.perf.results import best_row
from dnx.perf.served import variant_of


@dataclass(frozen=True)
class Ratio:
    """One measured ratio, its target and whether it met it (None: not measurable)."""

    name: str
    value: float | None
    target: str  # e.g. ">= 0.8x"
    passed: bool | None
    detail: str

    @classmethod
    def of(cls, name: str, value: float | None, target: float, higher_is_better: bool, detail: str) -> "Ratio":
        """The ratio ``value`` checked against ``target`` (``>=`` when higher is better, else ``<=``)."""
        ok = None if value is None else (value >= target if higher_is_better else value <= target)
        return cls(name, value, f"{'>=' if higher_is_better else '<='} {target:g}x", ok, detail)

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``n/a``."""
        return "n/a" if self.passed is None else ("pass" if self.passed else "FAIL")

    def to_dict(self) -> dict:
        """As recorded in ``bench.json`` (``pass`` for :attr:`passed`)."""
        return {"name": self.name, "value": self.value, "target": self.target, "pass": self.passed,
                "detail": self.detail}


def _fastest(in_process: list[Timing], family: str | None = None, precision: str | None = None,
             max_batch: int | None = None) -> Timing | None:
    """The highest-throughput in-process timing (of ``family`` and ``precision``, up to ``max_batch``)."""
    mine = [t for t in in_process if (family is None or t.family == family)
            and (precision is None or t.precision == precision) and (max_batch is None or t.batch <= max_batch)]
    return max(mine, key=lambda t: t.throughput, default=None)


def _served(row: dict) -> str:
    """A served row as the ratios quote it: ``model c2 12.3 infer/s``."""
    return f"{row['model']} c{row['concurrency']} {row['throughput']:.1f} infer/s"


def compute_ratios(in_process: list[Timing], served: list[dict], ort_model: str) -> list[Ratio]:
    """Served vs in-process ONNX Runtime and PyTorch eager (the project's first targets)."""
    ort = [t for t in in_process if t.family == "onnxruntime" and t.precision == "fp32"]
    torch1 = next((t for t in in_process if t.family == "pytorch" and t.batch == 1), None)
    mine = [r for r in served if r["model"] == ort_model and r["batch"] == 1]
    best = best_row(mine)
    c1 = next((r for r in mine if r["concurrency"] == 1), None)
    ort_best = _fastest(in_process, "onnxruntime", "fp32")
    ort1 = next((t for t in ort if t.batch == 1), None)
    out = []
    if best and ort_best:
        out.append(Ratio.of("served best throughput / in-process ONNX Runtime best", best["throughput"] / ort_best.throughput,
                            0.8, True, f"{best['throughput']:.1f} infer/s ({ort_model}, concurrency {best['concurrency']}) vs "
                            f"{ort_best.throughput:.1f} img/s (batch {ort_best.batch})"))
    if best and torch1:
        out.append(Ratio.of("served best throughput / PyTorch eager batch 1", best["throughput"] / torch1.throughput, 3.0,
                            True, f"{best['throughput']:.1f} vs {torch1.throughput:.1f} img/s"))
    if c1 and ort1:
        out.append(Ratio.of("served p99 at concurrency 1 / in-process ONNX Runtime batch-1 p99", c1["p99_ms"] / ort1.p99_ms,
                            1.5, False, f"{c1['p99_ms']:.1f} ms vs {ort1.p99_ms:.1f} ms (in-process median "
                            f"{ort1.p50_ms:.1f} ms)"))
    # The CPU-variants view: the best served variant of any runtime.
    if served and in_process:
        sb = best_row(served)
        ib = _fastest(in_process)
        served_fig = _served(sb)
        out.append(Ratio.of("best served variant / fastest in-process runner", sb["throughput"] / ib.throughput, 0.85, True,
                            f"{served_fig} vs {ib.runner} batch {ib.batch} {ib.throughput:.1f} img/s"))
        if ort_best:
            out.append(Ratio.of("best served variant / in-process ONNX Runtime fp32 best",
                                sb["throughput"] / ort_best.throughput, 1.6, True,
                                f"{served_fig} vs {ort_best.throughput:.1f} img/s"))
        if torch1:
            out.append(Ratio.of("best served variant / PyTorch eager batch 1", sb["throughput"] / torch1.throughput, 3.0,
                                True, f"{served_fig} vs {torch1.throughput:.1f} img/s"))
        precision, runtime = variant_of(sb["model"], None)
        same = next((t for t in in_process if t.family == runtime and t.precision == precision and t.batch == 1), None)
        sc1 = next((r for r in served if r["model"] == sb["model"] and r["batch"] == 1 and r["concurrency"] == 1), None)
        if same and sc1:
            out.append(Ratio.of("best served variant: p99 at concurrency 1 / its in-process batch-1 p99",
                                sc1["p99_ms"] / same.p99_ms, 1.5, False,
                                f"{sb['model']} {sc1['p99_ms']:.1f} ms vs {same.runner} {same.p99_ms:.1f} ms "
                                f"(in-process median {same.p50_ms:.1f} ms)"))
    return out


def tuned_ratios(in_process: list[Timing], served: list[dict], ort_model: str, manifest: dict | None = None) -> list[Ratio]:
    """The best served variant vs the fastest in-process run of its runtime and precision
    (batch 1..8, sync or async), and served ONNX Runtime fp32 vs in-process ONNX Runtime fp32 best."""
    out = []
    if served:
        sb = best_row(served)
        precision, runtime = variant_of(sb["model"], manifest)
        ib = _fastest(in_process, runtime, precision, max_batch=8)
        if ib:
            out.append(Ratio.of("best served variant / fastest in-process run of its runtime and precision (batch 1..8)",
                                sb["throughput"] / ib.throughput, 0.9, True,
                                f"{_served(sb)} vs {ib.runner} batch {ib.batch} {ib.throughput:.1f} img/s"))
    ort, so = _fastest(in_process, "onnxruntime", "fp32"), best_row(served, ort_model, batch=1)
    if ort and so:
        detail = f"{_served(so)} vs batch {ort.batch} {ort.throughput:.1f} img/s"
        out.append(Ratio.of("served ONNX Runtime fp32 / in-process ONNX Runtime fp32 best (tuned)",
                            so["throughput"] / ort.throughput, 0.95, True, detail))
    return out


def shared_memory_ratio(in_process: list[Timing], served: list[dict], manifest=None) -> list[Ratio]:
    """The best served variant, with the better of the two shared-memory passes (rows carry
    ``shared_memory``), vs the fastest in-process run of its runtime and precision (batch 1..8).

    The target follows the mode that won: >= 0.9x through system shared memory, >= 0.8x with tensors over gRPC.
    """
    best = {mode: best_row([r for r in served if r.get("shared_memory", "none") == mode]) for mode in ("none", "system")}
    best = {mode: row for mode, row in best.items() if row}
    if len(best) < 2:
        return []
    mode = max(best, key=lambda k: best[k]["throughput"])
    sb = best[mode]
    precision, runtime = variant_of(sb["model"], manifest)
    ib = _fastest(in_process, runtime, precision, max_batch=8)
    if not ib:
        return []
    other = next(k for k in best if k != mode)
    return [Ratio.of("best served variant, better of shared memory none/system / fastest in-process run of its "
                     "runtime and precision (batch 1..8)", sb["throughput"] / ib.throughput, 0.9 if mode == "system" else 0.8,
                     True, f"shared memory {mode}: {_served(sb)} (with {other}: {_served(best[other])}) vs {ib.runner} "
                     f"batch {ib.batch} {ib.throughput:.1f} img/s")]
