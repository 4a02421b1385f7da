"""Intervals a noisy machine can decide with: the seeded bootstrap of a geometric mean, and a verdict.

Used wherever dnx compares two measurements taken in rounds (``dnx bench --paired``, ``dnx tune``'s
final round): the figure is the geometric mean of per-round values (ratios multiply; B/A and A/B
get mirror-image intervals), its interval a seeded percentile bootstrap, so the same rounds give
the same interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000


@dataclass(frozen=True)
class Interval:
    """The geometric mean of per-round ratios and its bootstrap interval."""

    point: float
    low: float
    high: float
    rounds: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to its point: 0.05 reads "+-5 %"."""
        return (self.high - self.low) / 2 / self.point if self.point else math.inf

    def to_dict(self) -> dict:
        return {**asdict(self), "half_width": round(self.half_width, 4)}


def bootstrap_interval(ratios: list[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the geometric mean of ``ratios`` (positive numbers)."""
    values = np.asarray(ratios, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError("ratios must be positive and finite, and at least one")
    logs = np.log(values)
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, logs.size, (resamples, logs.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(np.exp(logs.mean())), float(np.exp(low)), float(np.exp(high)), int(logs.size), confidence)


def verdict(interval: Interval, target: float, higher_is_better: bool) -> str:
    """``met``, ``missed`` or ``undecided``: where the whole interval lies against ``target``."""
    if higher_is_better:
        return "met" if interval.low >= target else ("missed" if interval.high < target else "undecided")
    return "met" if interval.high <= target else ("missed" if interval.low > target else "undecided")
