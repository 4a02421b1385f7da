"""What ``dnx tune`` measures of one config, and the load it is tuned for: typed and pure.

A :class:`Curve` is one config's measured :class:`Point` per concurrency level (throughput in
infer/s, p99 in ms, and optionally the throughputs of repeated measurements of the same level,
the raw material of the instability check). A :class:`Load` is the set of concurrency levels the
server will see, parsed from ``--concurrency``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from dnx.errors import InputError

# Repeats of one level that differ by more than this (max/min - 1) mark the figures as unstable:
# other load on the machine overlapped part of the measurement.
UNSTABLE_SPREAD = 0.10

_HINT = "use start:end (powers of two: 1:16 is 1,2,4,8,16), start:end:step, one level (16) or a list (1,2,4)"


@dataclass(frozen=True)
class Point:
    """One concurrency level of one config: throughput (infer/s), p99 latency (ms), repeats."""

    concurrency: int
    throughput: float
    p99_ms: float
    repeats: tuple[float, ...] = ()  # throughputs of every measurement of this level (may include ``throughput``)

    def spread(self) -> float:
        """max / min - 1 over ``throughput`` and ``repeats`` (0 without repeats; inf if one is 0)."""
        figures = (self.throughput,) + tuple(self.repeats)
        low, high = min(figures), max(figures)
        if high == low:
            return 0.0
        return math.inf if low <= 0 else high / low - 1.0


@dataclass(frozen=True)
class Curve:
    """One config's measured points, at most one per concurrency level, sorted by level.

    ``label`` names the config (e.g. ``inst=2 streams=2 hint=THROUGHPUT mbs=4``); ``knobs`` is
    the caller's (never read here); ``error`` non-empty marks a config that failed to load,
    answer or measure.
    """

    label: str
    points: tuple[Point, ...] = ()
    knobs: dict = field(default_factory=dict, compare=False, hash=False)
    error: str = ""

    def __post_init__(self):
        pts = tuple(sorted(self.points, key=lambda p: p.concurrency))
        levels = [p.concurrency for p in pts]
        if len(set(levels)) != len(levels):
            raise ValueError(f"{self.label}: more than one point per concurrency level {levels}; use combine()")
        object.__setattr__(self, "points", pts)

    @classmethod
    def from_dicts(cls, label: str, points: list[dict], knobs: dict | None = None, error: str = "") -> "Curve":
        """From tune's point dicts (``concurrency``, ``throughput``, ``p99_ms``, optional ``repeats``).

        Several dicts for one level are combined (:func:`combine`).
        """
        pts = [Point(int(p["concurrency"]), float(p["throughput"]), float(p["p99_ms"]),
                     tuple(float(r) for r in p.get("repeats", ()))) for p in points]
        return combine(label, pts, knobs=knobs, error=error)

    @property
    def levels(self) -> tuple[int, ...]:
        """The measured concurrency levels, ascending."""
        return tuple(p.concurrency for p in self.points)

    @property
    def failed(self) -> bool:
        """True when the config failed or nothing was measured."""
        return bool(self.error) or not self.points

    def at(self, level: int) -> Point | None:
        """The point at ``level``, or None when it was not measured."""
        return next((p for p in self.points if p.concurrency == level), None)

    def throughput(self, level: int) -> float | None:
        """Throughput at ``level`` (None when not measured)."""
        p = self.at(level)
        return None if p is None else p.throughput

    def unstable(self, threshold: float = UNSTABLE_SPREAD) -> dict[int, float]:
        """``{level: spread}`` for each level whose repeats differ by more than ``threshold``."""
        return {p.concurrency: p.spread() for p in self.points if p.spread() > threshold + 1e-9}

    def to_dict(self) -> dict:
        """JSON-ready: label, error, points (concurrency, throughput, p99_ms, repeats)."""
        return {"label": self.label, "error": self.error,
                "points": [{"concurrency": p.concurrency, "throughput": p.throughput, "p99_ms": p.p99_ms,
                            "repeats": list(p.repeats)} for p in self.points]}


def combine(label: str, points: list[Point], knobs: dict | None = None, error: str = "") -> Curve:
    """A curve from measurements that may repeat a level (e.g. the interleaved rerun).

    Per level: throughput is the median of the runs, p99 the worst run's (a latency budget must
    hold on every run), and ``repeats`` keeps every throughput (the runs' and their own repeats).
    """
    by_level: dict[int, list[Point]] = {}
    for p in points:
        by_level.setdefault(p.concurrency, []).append(p)
    out = []
    for level, ps in by_level.items():
        if len(ps) == 1:
            out.append(ps[0])
            continue
        figures = tuple(f for p in ps for f in ((p.throughput,) + tuple(p.repeats)))
        out.append(Point(level, float(statistics.median(p.throughput for p in ps)), max(p.p99_ms for p in ps), figures))
    return Curve(label, tuple(out), knobs=dict(knobs or {}), error=error)


def geomean(values: list[float]) -> float:
    """Geometric mean (0 when any value is 0; ValueError when empty or negative)."""
    if not values or any(v < 0 for v in values):
        raise ValueError(f"geometric mean of {values!r}")
    if any(v == 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass(frozen=True)
class Load:
    """The concurrency levels the server will see (``dnx tune --concurrency``)."""

    levels: tuple[int, ...]

    def __post_init__(self):
        levels = tuple(sorted(set(int(c) for c in self.levels)))
        if not levels or levels[0] < 1:
            raise InputError(f"--concurrency {list(self.levels)} must name levels >= 1; {_HINT}")
        object.__setattr__(self, "levels", levels)

    @classmethod
    def parse(cls, text: str) -> "Load":
        """``"1:16"`` -> 1,2,4,8,16 (doubling from start, end always included: ``"3:16"`` -> 3,6,12,16);
        ``"1:16:2"`` -> 1,3,...,15 (explicit step); ``"16"`` -> 16; ``"1,2,4"`` -> 1,2,4.

        Raises :class:`InputError` with the accepted forms.
        """
        raw = str(text).strip()
        try:
            if "," in raw:
                return cls(tuple(int(p) for p in raw.split(",") if p.strip()))
            nums = [int(p) for p in raw.split(":")]
        except ValueError:
            raise InputError(f"--concurrency {text!r} is not a load; {_HINT}") from None
        if not 1 <= len(nums) <= 3 or min(nums) < 1:
            raise InputError(f"--concurrency {text!r} is not a load; {_HINT}")
        if len(nums) == 1:
            return cls((nums[0],))
        start, end = nums[0], nums[1]
        if end < start:
            raise InputError(f"--concurrency {text!r}: end {end} is below start {start}; {_HINT}")
        if len(nums) == 3:
            return cls(tuple(range(start, end + 1, nums[2])))
        levels, c = [], start
        while c < end:
            levels.append(c)
            c *= 2
        return cls(tuple(levels) + (end,))

    @property
    def top(self) -> int:
        """The highest level."""
        return self.levels[-1]

    def __str__(self) -> str:
        """The shortest ``--concurrency`` text that :meth:`parse` turns back into these levels."""
        lv = self.levels
        if len(lv) == 1:
            return str(lv[0])
        if Load.parse(f"{lv[0]}:{lv[-1]}").levels == lv:
            return f"{lv[0]}:{lv[-1]}"
        step = lv[1] - lv[0]
        if tuple(range(lv[0], lv[-1] + 1, step)) == lv:
            return f"{lv[0]}:{lv[-1]}:{step}"
        return ",".join(map(str, lv))

    def describe(self) -> str:
        """``c1, c2, c4, c8, c16``."""
        return ", ".join(f"c{c}" for c in self.levels)
