"""The speed stage: each CPU variant that passed its gate, timed in this process on this CPU.

Which variant is fastest depends on the CPU (int8 runs 1.7-2.3x fp32 on one, no faster on
another; bf16 exists only where the CPU has it), so the export measures the machine it runs on
instead of trusting a figure from elsewhere. Rounds are interleaved (every variant once per
round, the order rotating) and each variant's figure is the median of its rounds, so a machine
whose speed drifts moves every variant alike. The ensemble then serves the fastest
(:func:`dnx.model_repository.ensemble.choose_variant`), and a lower precision that is not
:data:`WORTH_IT` faster than fp32 of the same runtime is named in one line.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from dnx.cpu import this_cpu
from dnx.pipeline.engine import Context, StageResult, Status
from dnx.pipeline.entries import ModelEntry
from dnx.runtimes import onnxruntime
from dnx.runtimes.openvino import OpenVinoModel

ROUNDS = 3
# A lower precision is worth serving for speed when it is at least this much faster than fp32.
WORTH_IT = 1.2
TIMED_RUNTIMES = ("onnxruntime", "openvino")


def _loader(m: ModelEntry) -> Callable[[], Callable[[np.ndarray], object]]:
    """How to open ``m`` as it is served (its config's parameters, its batch handling)."""
    if m.runtime == "openvino":
        return lambda: OpenVinoModel(m.files["model.xml"], m.parameters, m.max_batch_size)

    def load():
        sess = onnxruntime.session(m.files["model.onnx"], m.parameters)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})
    return load


def _window(run: Callable[[np.ndarray], object], batch: np.ndarray, seconds: float) -> float:
    """Images per second of ``run`` over at least ``seconds`` (and at least two calls)."""
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        run(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - start)


def time_variants(models: list[ModelEntry], sample: np.ndarray, seconds: float, rounds: int = ROUNDS) -> dict[str, dict]:
    """``{name: {"img_s": {batch: median img/s}, "best": img/s, "best_batch": b}}`` for ``models``.

    Each model spends about ``seconds`` in timed windows, split over ``rounds`` interleaved rounds
    and its batch sizes (1 and its ``max_batch_size``). ``sample`` is one preprocessed image.
    """
    runs = {m.name: _loader(m)() for m in models}
    batches = {m.name: sorted({1, max(1, m.max_batch_size)}) for m in models}
    inputs = {b: np.ascontiguousarray(np.repeat(sample[:1], b, axis=0)) for bs in batches.values() for b in bs}
    for name, run in runs.items():  # warm-up: first calls allocate and compile kernels
        for b in batches[name]:
            run(inputs[b])
    figures: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches[name]} for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for b in batches[name]:
                figures[name][b].append(_window(runs[name], inputs[b], seconds / rounds / len(batches[name])))
    out = {}
    for name, per_batch in figures.items():
        medians = {b: round(statistics.median(v), 1) for b, v in per_batch.items()}
        best_batch = max(medians, key=medians.get)
        out[name] = {"img_s": medians, "best": medians[best_batch], "best_batch": best_batch}
    return out


def slow_precisions(models: list[ModelEntry], figures: dict[str, dict]) -> list[str]:
    """One phrase per lower-precision variant less than :data:`WORTH_IT` times its runtime's fp32."""
    fp32 = {m.runtime: m.name for m in models if m.precision == "fp32" and m.name in figures}
    notes = []
    for m in models:
        base = fp32.get(m.runtime)
        if m.precision == "fp32" or base is None or m.name not in figures:
            continue
        ratio = figures[m.name]["best"] / figures[base]["best"]
        if ratio < WORTH_IT:
            notes.append(f"{m.precision} gives no speed-up over fp32 on this CPU for {m.runtime} "
                         f"({m.name} {ratio:.2f}x {base})")
    return notes


def stage_speed(ctx: Context) -> StageResult:
    """Time every CPU variant that passed its gate; record the figures with the CPU on each model."""
    models = [m for m in ctx.models if m.runtime in TIMED_RUNTIMES and (m.parity or {}).get("passed", True)]
    if not models:
        return StageResult("speed", Status.SKIPPED, "no CPU variant passed its gate")
    cpu = this_cpu()
    seconds = ctx.options.speed_seconds
    figures = time_variants(models, ctx.inputs, seconds)
    for m in models:
        m.info["speed"] = {**figures[m.name], "cpu": cpu.to_dict(), "rounds": ROUNDS, "seconds": seconds,
                           "how": "in-process, the config's parameters, interleaved rounds, median img/s"}
    notes = slow_precisions(models, figures)
    return StageResult("speed", Status.OK, "; ".join(notes) + (f" ({cpu.describe()})" if notes else ""),
                       {m.name: figures[m.name]["best"] for m in models})
