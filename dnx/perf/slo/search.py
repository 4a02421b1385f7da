"""The search over the offered (Poisson) rate for the highest rate LoadGen judges VALID (pure).

``judge(rate)`` runs one LoadGen Server test at ``rate`` queries/s and returns a :class:`Point`.
The search brackets the answer geometrically from a start rate (x ``grow`` up while VALID,
/ ``grow`` down while not), then bisects (geometric mean) until the VALID rate and the lowest
rate above it that is not VALID are within ``precision`` of each other, or ``max_runs`` is spent.

A run LoadGen's early stopping could not decide (``too_short``) counts as not VALID: the SLO rate
dnx reports must be one LoadGen confirmed. Such points are listed (:attr:`SearchResult.undecided`)
so the report can say that the run was too short to decide there, not that the bound was missed.
p99 rises with the offered rate, but a measured curve is noisy: the answer is the highest VALID
rate *below* the lowest rate that failed, never a lucky VALID above a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from dnx.perf.slo.summary import OVER, TOO_SHORT, VALID


@dataclass
class Point:
    """One offered rate and LoadGen's verdict there."""

    rate: float  # target queries/s (LoadGen server_target_qps)
    verdict: str  # valid / over / too_short
    p99_ms: float | None = None
    scheduled_qps: float | None = None
    completed_qps: float | None = None
    detail: dict = field(default_factory=dict)  # the LoadGen summary and where its logs are

    @property
    def valid(self) -> bool:
        return self.verdict == VALID

    def to_dict(self) -> dict:
        return {"rate": self.rate, "verdict": self.verdict, "p99_ms": self.p99_ms,
                "scheduled_qps": self.scheduled_qps, "completed_qps": self.completed_qps, **self.detail}


@dataclass
class SearchResult:
    points: list[Point]  # in the order they were measured
    slo_rate: float | None  # the highest VALID rate below every failed one; None: nothing VALID
    upper: float | None  # the lowest rate above slo_rate that was not VALID (the answer lies between)
    stopped: str  # why the search ended: "converged", "max_runs", "floor", "ceiling"

    @property
    def undecided(self) -> list[Point]:
        return [p for p in self.points if p.verdict == TOO_SHORT]

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return self.slo_rate, self.upper

    def curve(self) -> list[Point]:
        """Every measured point by rate (the p99 vs offered rate curve)."""
        return sorted(self.points, key=lambda p: p.rate)


def bracket_answer(points: list[Point]) -> tuple[float | None, float | None]:
    """``(highest VALID rate below the lowest non-VALID one, that lowest non-VALID rate)``."""
    failed = [p.rate for p in points if not p.valid]
    upper = min(failed) if failed else None
    below = [p.rate for p in points if p.valid and (upper is None or p.rate < upper)]
    return (max(below) if below else None), upper


def search_rate(judge: Callable[[float], Point], start: float, *, precision: float = 0.1, grow: float = 1.5,
                max_runs: int = 10, floor: float | None = None, ceiling: float | None = None,
                on_point: Callable[[Point], None] | None = None) -> SearchResult:
    """Find the highest rate ``judge`` calls VALID (see the module doc).

    ``precision``: stop once ``upper / slo_rate <= 1 + precision``. ``floor``: do not go below it
    (nothing VALID down there: ``slo_rate`` None, stopped "floor"); ``ceiling``: do not go above
    it (VALID up to it: stopped "ceiling").
    """
    if start <= 0 or precision <= 0 or grow <= 1 or max_runs < 1:
        raise ValueError("start and precision must be > 0, grow > 1, max_runs >= 1")
    floor = floor if floor is not None else start / grow ** 6
    points: list[Point] = []

    def run(rate: float) -> Point:
        p = judge(rate)
        points.append(p)
        if on_point is not None:
            on_point(p)
        return p

    rate, stopped = start, "max_runs"
    while len(points) < max_runs:
        lo, hi = bracket_answer(points)
        if lo is not None and hi is not None:
            if hi / lo <= 1 + precision:
                stopped = "converged"
                break
            rate = math.sqrt(lo * hi)
        elif hi is None and lo is not None:  # VALID so far: go up
            if ceiling is not None and lo >= ceiling:
                stopped = "ceiling"
                break
            rate = lo * grow if ceiling is None else min(lo * grow, ceiling)
        elif lo is None and hi is not None:  # nothing VALID yet: go down
            if hi <= floor:
                stopped = "floor"
                break
            rate = max(hi / grow, floor)
        run(rate)
    else:
        lo, hi = bracket_answer(points)
        if lo is not None and hi is not None and hi / lo <= 1 + precision:
            stopped = "converged"
    lo, hi = bracket_answer(points)
    return SearchResult(points, lo, hi, stopped)


__all__ = ["OVER", "Point", "SearchResult", "TOO_SHORT", "VALID", "bracket_answer", "search_rate"]
