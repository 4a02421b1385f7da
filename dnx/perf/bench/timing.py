"""Timing an in-process runner: warm-up, then about ``duration_s`` of back-to-back batches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dnx.perf.bench.runners import InProcessRunner


@dataclass
class Timing:
    """One runner at one batch size."""

    runner: str
    family: str
    precision: str
    batch: int
    threads: int | None
    iterations: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    throughput: float  # images per second
    notes: str = ""
    cpu_ms_per_image: float | None = None  # this process's CPU time over the timed loop, per image


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` images cycled from ``images`` (float32 NCHW, contiguous)."""
    return np.ascontiguousarray(images[np.arange(batch) % len(images)])


def time_runner(runner: InProcessRunner, images: np.ndarray, duration_s: float = 10.0,
                warmup: int = 3, min_iterations: int = 5) -> list[Timing]:
    """Time ``runner`` at each of its batch sizes for about ``duration_s`` seconds each."""
    out = []
    for batch in runner.batch_sizes:
        x = batch_of(images, batch)
        infer = runner.load(batch)
        for _ in range(warmup):
            infer(x)
        lat = []
        start, cpu0 = time.perf_counter(), time.process_time()
        while len(lat) < min_iterations or time.perf_counter() - start < duration_s:
            t0 = time.perf_counter()
            infer(x)
            lat.append(time.perf_counter() - t0)
        cpu_ms = (time.process_time() - cpu0) * 1000.0 / (batch * len(lat))
        ms = np.asarray(lat) * 1000.0
        out.append(Timing(runner.name, runner.family, runner.precision, batch, runner.threads, len(lat),
                          float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                          float(batch * len(lat) / ms.sum() * 1000.0), runner.notes, round(cpu_ms, 3)))
        del infer
    return out
