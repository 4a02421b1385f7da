"""``dnx tune``'s final round (pure): what is measured again, in which order, and whether the decision holds.

The search measures each candidate once; the final round measures the current config, the
winner and the runners-up the search could not tell from it (:func:`runners_up`) back to back,
interleaved at every level (:func:`rerun_plan`), and :func:`confirm` re-makes the decision on
those runs with the same rules, plus the evidence rule (:mod:`dnx.perf.tune.evidence`): a pick is
written only when its paired runs exclude "no gain".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dnx.perf.tune.curves import UNSTABLE_SPREAD, Curve, Point
from dnx.perf.tune.evidence import gain_evidence
from dnx.perf.tune.objective import (EPS, FINALIST_BAND, MAX_RUNNERS_UP, NEAR_SLACK, RERUN_WINDOWS, Choice,
                                     decide_among, load_levels, refusal_of, share)


@dataclass(frozen=True)
class Confirmation:
    """The decision re-made on the rerun; ``written`` is the rerun curve of the config that is kept."""

    holds: bool
    reason: str
    rerun: Choice  # choose() over the two rerun curves, same rules
    written: Curve
    gain: str = ""  # the pick's gain over the current config, paired run by run, with its interval

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"holds": self.holds, "reason": self.reason, "written": self.written.to_dict(), "gain": self.gain,
                "rerun": {k: v for k, v in self.rerun.to_dict().items() if k != "trade_offs"}}


def rerun_levels(decision: Choice, runners: tuple[Curve, ...] = ()) -> tuple[int, ...]:
    """The levels the confirm step measures: the load's (saturation: each config's best level)."""
    if decision.objective == "saturation":
        best = lambda c: max(c.points, key=lambda p: p.throughput).concurrency if c.points else None  # noqa: E731
        return tuple(sorted({x for c in (decision.current, decision.winner, *runners) if (x := best(c)) is not None}))
    return load_levels(decision.objective, decision.load)


def rerun_rounds(levels: int) -> int:
    """Rounds of the final round for ``levels`` levels: every level gives one paired run per round, and
    the gain's interval (:mod:`dnx.perf.tune.evidence`) needs several: 2 rounds from 3 levels, else 3."""
    return 2 if levels >= 3 else 3


def rerun_configs(levels: int, rounds: int) -> int:
    """How many configs the final round measures (current, winner, runners-up) for ``levels`` levels x ``rounds``.

    At least the two of the confirm step; more while the round stays within :data:`RERUN_WINDOWS`
    runs: ``--concurrency 16`` gets 5 (3 runners-up), the default 1:16 (5 levels) gets 2.
    """
    return min(2 + MAX_RUNNERS_UP, max(2, RERUN_WINDOWS // max(1, levels * rounds)))


def runners_up(decision: Choice, rounds: int = 2, band: float = FINALIST_BAND) -> tuple[Curve, ...]:
    """The candidates measured again with the winner in the final round, best search score first.

    A runner-up scored within ``band`` of the winner (one window each on a VM that drifts by
    that much: a tie), broke no rule but the noise (the search's rules with :data:`NEAR_SLACK` in
    place of the slack, as :func:`challenge` applies them: failed, over the latency budget,
    unmeasured or more than NEAR_SLACK slower than the current config at some level: out), and fits
    :func:`rerun_configs`. None when the decision keeps the current config.
    """
    if not decision.changes:
        return ()
    top = decision.scores.get(decision.winner.label)
    if not top:
        return ()
    room = rerun_configs(len(rerun_levels(decision)), rounds) - 2
    out = []
    for c in decision.candidates:
        s = decision.scores.get(c.label)
        if c.label == decision.winner.label or s is None or s < (1 - band) * top - EPS:
            continue
        # The search's rules with the noise allowance, exactly as challenge() applies them.
        if refusal_of(c, decision.current, decision.objective, decision.load, decision.latency_budget_ms,
                    NEAR_SLACK, decision.min_gain) is not None:
            continue
        out.append(c)
    out.sort(key=lambda c: -decision.scores[c.label])  # sort() is stable: ties keep the search's order
    return tuple(out[:max(0, room)])


def rerun_plan(decision: Choice, rounds: int = 2, runners: tuple[Curve, ...] = ()) -> list[tuple[int, str]]:
    """``(level, config label)`` in measuring order: back to back at each level, the order reversed
    every other round (two configs: ABBA, current, winner, winner, current), so a drift in the
    machine's load hits each config alike. ``runners``: the final round's runners-up (:func:`runners_up`)."""
    configs = [decision.current.label, decision.winner.label] + [r.label for r in runners]
    order = []
    for c in rerun_levels(decision, runners):
        for i in range(rounds):
            order += [(c, label) for label in (configs if i % 2 == 0 else configs[::-1])]
    return order


def _extreme(curve: Curve, pick) -> Curve:
    """``curve`` with each level's throughput the ``pick`` (min or max) of its runs, no repeats."""
    return Curve(curve.label, tuple(Point(p.concurrency, pick((p.throughput,) + tuple(p.repeats)), p.p99_ms)
                                    for p in curve.points), knobs=curve.knobs, error=curve.error)


def confirm(current_rerun: Curve, winner_rerun: Curve | None, decision: Choice,
            unstable_spread: float = UNSTABLE_SPREAD, runners: tuple[Curve, ...] = ()) -> Confirmation:
    """Does ``decision`` hold on the interleaved rerun (:func:`rerun_plan`, :func:`~curves.combine`)?

    It holds when :func:`choose` over the rerun curves (the current config, the winner and the
    final round's ``runners``), same objective, load, budget, slack and margin, picks a
    candidate, and, when a rerun curve is unstable (its repeats differ by more than
    ``unstable_spread``), it still picks it with that candidate's slowest repeat against the current
    config's fastest at every level; otherwise the current config stays. The candidate picked may
    be a runner-up: the search had one window per candidate, the final round has several, back to
    back. Either way the figures to write are the rerun's (``written``). ``winner_rerun`` is None
    when the decision keeps the current config (nothing to confirm).
    """
    known = {c.label for c in decision.candidates}
    if current_rerun.label != decision.current.label or (decision.changes and winner_rerun.label != decision.winner.label) \
            or any(r.label not in known for r in runners):
        raise ValueError(f"rerun curves {current_rerun.label!r}, {getattr(winner_rerun, 'label', None)!r}, "
                         f"{[r.label for r in runners]} are not the decision's {decision.current.label!r}, "
                         f"{decision.winner.label!r} and its candidates")
    cands = [winner_rerun, *runners] if decision.changes else []
    again = decide_among(current_rerun, cands, decision.load, decision.latency_budget_ms, decision.slack,
                    decision.objective, decision.min_gain, unstable_spread, False)
    if not decision.changes:
        return Confirmation(True, "the current config stays; its rerun figures are recorded", again, current_rerun)
    picked = again.winner
    instead = (f"the final round picks {picked.label} over the search's {decision.winner.label}: "
               if again.changes and picked.label != decision.winner.label else "")
    if not again.changes:
        r = again.refusal(winner_rerun.label)
        return Confirmation(False, f"does not hold on the rerun ({r.reason if r else again.why}): the current config "
                                   "stays", again, current_rerun)
    mine = {k: v for k, v in again.unstable.items() if k in (current_rerun.label, picked.label)}
    where = "; ".join(f"{k} at {', '.join(f'c{c} ({share(s)} between repeats)' for c, s in v.items())}"
                      for k, v in mine.items())
    if mine:
        # Unstable figures refuse the pick only where they could change the decision: it must
        # still win with its slowest repeat against the current config's fastest at every level.
        worst = decide_among(_extreme(current_rerun, max), [_extreme(picked, min)], decision.load,
                        decision.latency_budget_ms, decision.slack, decision.objective, decision.min_gain,
                        math.inf, False)
        if not worst.changes:
            return Confirmation(False, f"the rerun is unstable ({where}) and {instead or 'the winner '}"
                                       f"{'does' if not instead else 'it does'} not win on its slowest repeats: other "
                                       "load on the machine? The current config stays; rerun dnx tune on a quiet "
                                       "machine", again, current_rerun)
    gain = ""
    if decision.objective != "latency":  # p99 has no per-run figures to pair; its rule reads the worst run
        ev = gain_evidence(current_rerun, picked, rerun_levels(decision, runners), decision.objective == "saturation")
        gain = ev.words()
        if not ev.decided:
            return Confirmation(False, f"{instead}{picked.label} and the current config are not distinguishable on "
                                       f"this machine (gain {gain}: the interval includes no gain): the current config "
                                       "stays", again, current_rerun, gain)
    if mine:
        return Confirmation(True, f"{instead}holds on the rerun, even on its slowest repeats against the current "
                                  f"config's fastest (the rerun is unstable: {where}): {again.why}", again, picked, gain)
    return Confirmation(True, f"{instead}holds on the rerun: {again.why}" + (f"; gain {gain}" if gain else ""),
                        again, picked, gain)
