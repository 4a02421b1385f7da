"""Curves for the objective tests: the issue's measured table and a synthetic builder."""

from __future__ import annotations

from dnx.perf.tune.curves import Curve, Point

LEVELS = (1, 2, 4, 8, 16)

# Issue 19: each winner served alone, perf_analyzer at c1..c16 (infer/s), same machine, same hour.
AS_EXPORTED = (113.8, 115.2, 124.5, 132.4, 120.1)
DNX_DEFAULTS = (44.2, 45.4, 85.4, 148.8, 147.9)
MODEL_ANALYZER = (25.8, 50.2, 71.9, 133.7, 187.7)


def curve(label: str, throughputs, p99=None, levels=LEVELS, repeats=None) -> Curve:
    """A curve; p99 defaults to Little's law (concurrency / throughput), the closed-loop latency."""
    pts = []
    for i, (c, t) in enumerate(zip(levels, throughputs)):
        lat = p99[i] if p99 is not None else c / t * 1000.0
        pts.append(Point(c, float(t), float(lat), tuple(repeats[i]) if repeats else ()))
    return Curve(label, tuple(pts))


def rerun(label: str, throughputs, p99=None, levels=LEVELS, runs: int = 3, spread: float = 0.005) -> Curve:
    """A final-round curve: ``runs`` runs per level within +-``spread`` of ``throughputs`` (their median)."""
    steps = [spread * (2 * i / (runs - 1) - 1) for i in range(runs)] if runs > 1 else [0.0]
    return curve(label, throughputs, p99, levels, repeats=[tuple(t * (1 + s) for s in steps) for t in throughputs])
