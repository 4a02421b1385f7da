"""The sentences ``dnx tune`` writes about a decision (pure): figures, aggregates, why a config wins."""

from __future__ import annotations

from dnx.perf.tune.curves import Curve, Load
from dnx.perf.tune.rules import RULES, level_changes


def pct(change: float) -> str:
    """``0.27`` -> ``+27 %``, ``-0.034`` -> ``-3.4 %`` (one decimal below 10 %)."""
    v = change * 100
    return f"{v:+.1f} %" if abs(v) < 9.95 else f"{v:+.0f} %"


def share(x: float) -> str:
    """``0.55`` -> ``55 %``, ``0.034`` -> ``3.4 %``; settings (0.03) -> ``3 %``."""
    v = x * 100
    if abs(v - round(v)) < 1e-9:
        return f"{round(v)} %"
    return f"{v:.1f} %" if abs(v) < 9.95 else f"{v:.0f} %"


def figure_text(score: float | None, objective: str) -> str:
    return "-" if score is None else RULES[objective].figure(score)


def aggregate_text(objective: str, load: Load) -> str:
    return RULES[objective].aggregate(load)


def at_best(curve: Curve, score: float | None, objective: str) -> str:
    """`` at c16`` for a saturation score (the level it came from), else nothing."""
    if objective != "saturation" or score is None:
        return ""
    return next((f" at c{p.concurrency}" for p in curve.points if p.throughput == score), "")


def why_win(current, best, objective, load, budget, slack, scores, gain, current_ok) -> str:
    new, old = scores[best.label], scores[current.label]
    why = (f"{best.label}: {figure_text(new, objective)}{at_best(best, new, objective)} against {figure_text(old, objective)}"
           f"{at_best(current, old, objective)} for the current config "
           f"({aggregate_text(objective, load)}{', ' + pct(gain) if gain is not None else ''})")
    if objective == "load" and len(load.levels) > 1:
        changes = level_changes(current, best, load.levels)
        c, r = min(changes, key=lambda cr: cr[1])
        why += f", never more than {share(slack)} slower at any level (worst: c{c} {pct(r)})"
    if budget is not None:
        why += f", p99 within {budget:g} ms" + (" at every level" if objective == "load" else "")
    if not current_ok:
        why += f"; the current config breaks the {budget:g} ms budget"
    return why
