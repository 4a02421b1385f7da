"""Whether ``dnx tune``'s final round shows a real gain, and the figure an independent run reproduces (pure).

The final round measures the current config and the pick back to back at each level, the order
alternating by round (:func:`dnx.perf.tune.confirm.rerun_plan`), so the i-th run of one and the
i-th run of the other saw nearly the same machine: their ratio is one paired sample. A config is
written only when the bootstrap interval of those ratios lies wholly above 1 (no gain excluded);
and the figure recorded for a kept config is the low end of the interval of its own runs, so a
later run on the same machine meets it rather than the lucky median.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnx.perf.intervals import Interval, bootstrap_interval
from dnx.perf.tune.curves import Curve, geomean


def _runs(curve: Curve, level: int | None) -> tuple[float, ...]:
    p = curve.at(level) if level is not None else None
    if p is None:
        return ()
    return tuple(p.repeats) or (p.throughput,)


def _peak(curve: Curve) -> int | None:
    return max(curve.points, key=lambda p: p.throughput).concurrency if curve.points else None


def paired_ratios(current: Curve, cand: Curve, levels, saturation: bool = False) -> list[float]:
    """``cand`` / ``current`` throughput, run by run (the same round) at every level of ``levels``;
    with ``saturation``, each config at its own best level (what that objective compares)."""
    pairs = [(_peak(current), _peak(cand))] if saturation else [(level, level) for level in levels]
    out = []
    for here, there in pairs:
        for a, b in zip(_runs(current, here), _runs(cand, there)):
            if a > 0 and b > 0:
                out.append(b / a)
    return out


@dataclass(frozen=True)
class Evidence:
    """The interval of the gain and whether it excludes "no gain"."""

    interval: Interval | None
    samples: int

    @property
    def decided(self) -> bool:
        """The whole interval is above 1: the pick is faster on this machine, not by luck."""
        return self.interval is not None and self.interval.low > 1.0

    def words(self) -> str:
        """``+8.1 % [+2.0 %, +14.6 %] over 6 paired runs`` (or why there is no interval)."""
        if self.interval is None:
            return f"{self.samples} paired run{'s' * (self.samples != 1)}, too few for an interval"
        i = self.interval
        return (f"{(i.point - 1) * 100:+.1f} % [{(i.low - 1) * 100:+.1f} %, {(i.high - 1) * 100:+.1f} %] over "
                f"{i.rounds} paired runs")


def gain_evidence(current: Curve, cand: Curve, levels, saturation: bool = False) -> Evidence:
    """:class:`Evidence` of ``cand``'s gain over ``current`` at ``levels``, from their paired runs."""
    ratios = paired_ratios(current, cand, levels, saturation)
    return Evidence(bootstrap_interval(ratios) if len(ratios) >= 2 else None, len(ratios))


def conservative_throughput(curve: Curve, levels) -> tuple[float, Interval] | None:
    """The low end of the interval of ``curve``'s throughput (geometric mean over ``levels``, run by run),
    with the interval; None with fewer than two runs at every level."""
    runs = [_runs(curve, level) for level in levels if curve.at(level) is not None]
    n = min((len(r) for r in runs), default=0)
    values = [geomean([r[i] for r in runs]) for i in range(n)]
    if n < 2 or min(values) <= 0:
        return None
    interval = bootstrap_interval(values)
    return interval.low, interval
