"""Verdicts a noisy machine can decide: paired, interleaved rounds and a bootstrap interval on their ratio.

On a shared VM neither wall-clock throughput nor CPU time holds still from one minute to the
next (neighbours change clocks, caches and memory bandwidth), but two measurements taken back
to back see nearly the same machine. So the two sides of a comparison are measured in rounds,
A B, B A, A B, ... (the order alternating, so neither side always runs second), each round
gives one ratio B/A, and the verdict is read from a bootstrap interval of those ratios, not
from any single run: **met** when the whole interval is on the target's side, **missed** when
the whole interval is on the other side, **undecided** otherwise. Rounds continue until every
interval is narrower than the stated margin or the time budget is spent.

The interval is :func:`dnx.perf.intervals.bootstrap_interval` of the per-round ratios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from dnx.perf.intervals import Interval, bootstrap_interval, verdict  # noqa: F401 - re-exported

# A percentile bootstrap over fewer pairs is too narrow (four ratios resample into a handful of distinct
# means): a pair is not called narrow enough before this many rounds.
MIN_ROUNDS = 8
MAX_ROUNDS = 40


@dataclass
class Paired:
    """Every round of a paired comparison: each side's figures, and the interval of each figure's ratio."""

    a: list[dict] = field(default_factory=list)  # per round: {figure: value}
    b: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""  # "narrow enough" | "time budget" | "round limit"

    def ratios(self, figure: str) -> list[float]:
        """Per-round ratio B/A of ``figure`` (rounds where either side has no value are left out)."""
        return [b[figure] / a[figure] for a, b in zip(self.a, self.b)
                if a.get(figure) and b.get(figure) is not None]

    def interval(self, figure: str, seed: int = 0) -> Interval | None:
        """:func:`bootstrap_interval` of :meth:`ratios` (None with fewer than two rounds)."""
        r = self.ratios(figure)
        return bootstrap_interval(r, seed=seed) if len(r) >= 2 else None


def paired_rounds(measure_a: Callable[[], dict], measure_b: Callable[[], dict], figures: tuple[str, ...], *,
                  margin: float, budget_s: float, min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS,
                  clock: Callable[[], float] = time.monotonic, on_round: Callable[[Paired], None] | None = None) -> Paired:
    """Measure A and B in alternating order until every figure's interval is within ``margin`` (relative
    half-width), or ``budget_s`` seconds or ``max_rounds`` are spent; at least ``min_rounds`` rounds
    unless the budget ends first.
    """
    start = clock()
    out = Paired()
    while True:
        first_a = len(out.a) % 2 == 0
        got = {}
        for side, measure in ((("a", measure_a), ("b", measure_b)) if first_a else (("b", measure_b), ("a", measure_a))):
            got[side] = measure()
        out.a.append(got["a"])
        out.b.append(got["b"])
        out.seconds = clock() - start
        if on_round:
            on_round(out)
        intervals = [out.interval(f) for f in figures]
        if len(out.a) >= min_rounds and all(i is not None and i.half_width <= margin for i in intervals):
            out.stopped = "narrow enough"
            return out
        if len(out.a) >= max_rounds:
            out.stopped = "round limit"
            return out
        per_round = out.seconds / len(out.a)
        if out.seconds + per_round > budget_s:
            out.stopped = "time budget"
            return out
