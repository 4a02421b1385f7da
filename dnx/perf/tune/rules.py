"""``dnx tune``'s objectives as data (pure): each one's score, the levels its rules read, and how it reads.

:data:`RULES` holds what differs between the objectives, so the decision code
(:mod:`dnx.perf.tune.objective`) asks it instead of branching on the objective's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dnx.kinds import Objective
from dnx.perf.tune.curves import Curve, Load, geomean

EPS = 1e-9  # exactly `slack` slower / exactly `min_gain` faster count as within the rule


def over_budget(curve: Curve, levels, budget: float | None) -> list[int]:
    if budget is None:
        return []
    return [c for c in levels if (p := curve.at(c)) is not None and p.p99_ms > budget + EPS]


def level_changes(current: Curve, cand: Curve, levels) -> list[tuple[int, float]]:
    """(level, cand / current - 1) where both were measured and the current figure counts."""
    out = []
    for c in levels:
        a, b = cand.throughput(c), current.throughput(c)
        if a is not None and b:
            out.append((c, a / b - 1.0))
    return out


def _load_score(curve: Curve, load: Load, budget: float | None) -> float | None:
    tps = [curve.throughput(c) for c in load.levels]
    return None if None in tps else geomean(tps)


def _saturation_score(curve: Curve, load: Load, budget: float | None) -> float | None:
    fits = [p.throughput for p in curve.points if budget is None or p.p99_ms <= budget + EPS]
    return max(fits) if fits else None


def _slo_score(curve: Curve, load: Load, budget: float | None) -> float | None:
    """The best throughput below the first level (from the lowest) whose p99 is over ``budget``: Poisson
    arrivals meet every load from one request at a time upwards, so a config that breaks the bound at a low
    level (a batching delay waiting for a batch that never fills) cannot serve the bound in the open loop."""
    fits = []
    for p in sorted(curve.points, key=lambda q: q.concurrency):
        if budget is not None and p.p99_ms > budget + EPS:
            break
        fits.append(p.throughput)
    return max(fits) if fits else None


def _latency_score(curve: Curve, load: Load, budget: float | None) -> float | None:
    p = curve.at(load.levels[0])
    return None if p is None else 1000.0 / max(p.p99_ms, 1e-6)


@dataclass(frozen=True)
class ObjectiveRules:
    """What differs between objectives: the score (higher is better), the levels the rules read, how a
    score and its aggregate read, and whether rule 2 (never ``slack`` slower at any level) applies."""

    score: Callable[[Curve, Load, float | None], float | None]
    levels: Callable[[Load], tuple[int, ...]]
    figure: Callable[[float], str]
    aggregate: Callable[[Load], str]
    per_level: bool


def _infer_s(score: float) -> str:
    return f"{score:.1f} infer/s"


RULES: dict[str, ObjectiveRules] = {
    Objective.LOAD: ObjectiveRules(
        _load_score, lambda load: load.levels, _infer_s,
        lambda load: f"at c{load.levels[0]}" if len(load.levels) == 1 else f"geometric mean over {load.describe()}",
        per_level=True),
    Objective.SATURATION: ObjectiveRules(
        _saturation_score, lambda load: (), _infer_s, lambda load: "each one's best level", per_level=False),
    # dnx tune --objective slo ranks its closed-loop candidates with this before the open-loop round.
    "slo": ObjectiveRules(
        _slo_score, lambda load: (), _infer_s, lambda load: "each one's best level below its first over the bound",
        per_level=False),
    Objective.LATENCY: ObjectiveRules(
        _latency_score, lambda load: load.levels[:1], lambda score: f"p99 {1000.0 / score:.1f} ms",
        lambda load: f"at c{load.levels[0]}", per_level=False),
}


def score_of(curve: Curve, objective: str, load: Load, budget: float | None) -> float | None:
    """Higher is better; None when ``curve`` cannot be compared under ``objective``."""
    return None if curve.failed else RULES[objective].score(curve, load, budget)


def load_levels(objective: str, load: Load) -> tuple[int, ...]:
    """The levels ``objective``'s rules read (saturation: none fixed, each config's best)."""
    return RULES[objective].levels(load)


def p99_geomean(curve: Curve, load: Load) -> float:
    p99s = [p.p99_ms for c in load.levels if (p := curve.at(c)) is not None]
    return geomean(p99s) if p99s else float("inf")
