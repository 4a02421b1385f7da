"""``dnx tune``'s decision: which measured config serves the stated load best, and why (pure).

Objectives (:data:`OBJECTIVES`):

- ``load`` (the default): over the load's levels (``--concurrency 1:16``: c1, c2, c4, c8, c16)
  the candidate with the highest *geometric mean* of throughput wins, but never one that is more
  than ``slack`` (3 %) slower than the current config at any level, nor one whose p99 exceeds
  ``latency_budget_ms`` at any level. It must beat the current config's geometric mean by
  ``min_gain`` (3 %, measurement noise), else the current config stays.
- ``saturation`` (batch-heavy services): the best throughput at any measured
  level (the fill level included) whose p99 is within the budget.
- ``latency``: the lowest p99 at the load's lowest level.

Candidates faster at some levels but more than ``slack`` slower at others are *trade-offs*: the
decision names them and the load under which they would be chosen, so a report can say "this
config stays unless you state that load (``--concurrency 8:16``)". :func:`dnx.perf.tune.confirm.confirm` re-makes the
decision on a back-to-back, interleaved rerun of the current config and the winner, with the
runners-up the search could not tell from it (``confirm.runners_up``: the final round);
:func:`challenge` sends a trade-off that is slower only within the noise (:data:`NEAR_SLACK`)
to that rerun instead of refusing it on one window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnx.kinds import Objective
from dnx.errors import InputError
from dnx.perf.tune.curves import UNSTABLE_SPREAD, Curve, Load
from dnx.perf.tune.rules import (EPS, RULES, ObjectiveRules, level_changes, load_levels, over_budget,  # noqa: F401 - re-exported
                                 p99_geomean, score_of)
from dnx.perf.tune.wording import aggregate_text, figure_text, pct, share, why_win  # noqa: F401 - re-exported

OBJECTIVES = tuple(o.value for o in Objective)
DEFAULT_LOAD = "1:16"
SLACK = 0.03  # a winner is never more than this much slower than the current config at any level
# A candidate refused only for being at most this much slower at some level (one perf_analyzer window
# on a shared 2-vCPU VM moves by 5-10 %) is a challenger: measured again, interleaved with the
# current config, it wins only if the 3 % rule holds there (:func:`challenge`, ``confirm.confirm``).
NEAR_SLACK = 2 * SLACK
MIN_GAIN = 0.03  # ... and beats it by at least this much in aggregate (measurement noise)
# The final round: candidates whose search score is within this share of the winner's are ties on
# one window each: on a shared VM one window of the same config has moved by more than 50 % within
# an hour (docs/TUNING.md, "The final round"), so the search's order among them is not evidence.
FINALIST_BAND = 0.30
MAX_RUNNERS_UP = 3  # measured again with the winner, at most
RERUN_WINDOWS = 20  # ... and only while the final round stays within this many perf_analyzer runs per model


@dataclass(frozen=True)
class Refusal:
    """A candidate that was not chosen. ``kind``: failed | budget | slower | unmeasured | no-gain | not-best."""

    label: str
    kind: str
    reason: str


@dataclass(frozen=True)
class TradeOff:
    """A candidate faster than the current config at some levels, more than ``slack`` slower at others.

    ``load``: the run of the load's levels where it is never more than ``slack`` slower and that
    holds its best gain: the load a user would state to consider it. ``pick_under_load``: the
    label :func:`choose` picks when that load is stated (it may be another candidate).
    """

    label: str
    faster: tuple[tuple[int, float], ...]  # (level, relative change) where it gains >= min_gain
    slower: tuple[tuple[int, float], ...]  # (level, relative change) where it loses > slack
    load: Load
    pick_under_load: str | None

    def summary(self) -> str:
        """``faster at c8 (+12 %), c16 (+23 %) but slower at c1 (-61 %), c2 (-61 %)``."""
        f = ", ".join(f"c{c} ({pct(r)})" for c, r in self.faster)
        s = ", ".join(f"c{c} ({pct(r)})" for c, r in self.slower)
        return f"faster at {f} but slower at {s}"

    def advice(self) -> str:
        """What stating the load would do, e.g. ``with `--concurrency 16` tune picks X``."""
        pick = self.pick_under_load
        who = "it" if pick == self.label else f"`{pick}` instead" if pick else "nothing (the current config stays)"
        return f"with `--concurrency {self.load}` tune picks {who}"


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`choose`: the winner (``current`` when nothing beats it) and why."""

    objective: str
    load: Load
    latency_budget_ms: float | None
    slack: float
    min_gain: float
    current: Curve
    candidates: tuple[Curve, ...]
    winner: Curve
    why: str
    scores: dict[str, float | None]  # label -> aggregate, higher better (latency: 1000 / p99); None: not comparable
    gain: float | None  # winner's aggregate vs current's (None when either has none)
    refused: tuple[Refusal, ...]
    trade_offs: tuple[TradeOff, ...]
    unstable: dict[str, dict[int, float]] = field(default_factory=dict)  # label -> {level: spread}
    challenger: bool = False  # the winner broke the slack only within NEAR_SLACK: the rerun decides

    @property
    def changes(self) -> bool:
        """True when a candidate replaces the current config."""
        return self.winner.label != self.current.label

    @property
    def aggregate(self) -> str:
        """What the scores are, in words."""
        if self.objective == "load":
            if len(self.load.levels) == 1:
                return f"throughput at c{self.load.top}"
            return f"geometric mean of throughput over {self.load.describe()}"
        if self.objective == "saturation":
            return "best throughput at any measured level" + self._budget_words()
        if self.objective == "slo":
            return "best throughput below the first level (from c1 up) whose p99 is over the bound" + self._budget_words()
        return f"p99 at c{self.load.levels[0]} (shown as 1000 / p99 ms)"

    def _budget_words(self) -> str:
        return f" with p99 within {self.latency_budget_ms:g} ms" if self.latency_budget_ms is not None else ""

    def refusal(self, label: str) -> Refusal | None:
        """The refusal of candidate ``label`` (None when it won or is unknown)."""
        return next((r for r in self.refused if r.label == label), None)

    def to_dict(self) -> dict:
        """JSON-ready, for report.json and the manifest."""
        return {
            "objective": self.objective, "load": str(self.load), "levels": list(self.load.levels),
            "aggregate": self.aggregate, "latency_budget_ms": self.latency_budget_ms, "slack": self.slack,
            "min_gain": self.min_gain, "current": self.current.label, "winner": self.winner.label,
            "changes": self.changes, "challenger": self.challenger, "why": self.why, "gain": self.gain, "scores": dict(self.scores),
            "refused": [{"label": r.label, "kind": r.kind, "reason": r.reason} for r in self.refused],
            "trade_offs": [{"label": t.label, "faster": [list(x) for x in t.faster], "slower": [list(x) for x in t.slower],
                            "load": str(t.load), "pick_under_load": t.pick_under_load, "summary": t.summary(),
                            "advice": t.advice()} for t in self.trade_offs],
            "unstable": {k: {str(c): s for c, s in v.items()} for k, v in self.unstable.items()},
            "curves": [c.to_dict() for c in (self.current, *self.candidates)],
        }


# ------------------------------------------------------------------ scores and rules


def refusal_of(cand: Curve, current: Curve, objective: str, load: Load, budget: float | None, slack: float,
             min_gain: float, partial: bool = False) -> Refusal | None:
    """Why ``cand`` breaks a rule (failed, budget, slower, unmeasured), or None; ``partial``: skip unmeasured."""
    if cand.failed:
        return Refusal(cand.label, "failed", f"failed: {cand.error}" if cand.error else "nothing was measured")
    if objective in ("saturation", "slo"):
        if budget is not None and score_of(cand, objective, load, budget) is None:
            worst = min(cand.points, key=lambda p: p.p99_ms)
            return Refusal(cand.label, "budget", f"no measured level meets the {budget:g} ms budget "
                                                 f"(best: p99 {worst.p99_ms:.1f} ms at c{worst.concurrency})")
        return None
    rules = RULES[objective]
    levels = rules.levels(load)
    over = over_budget(cand, levels, budget)
    if over:
        p = cand.at(over[0])
        return Refusal(cand.label, "budget", f"p99 {p.p99_ms:.1f} ms at c{p.concurrency} is over the {budget:g} ms budget")
    if rules.per_level:
        # Where the current config itself breaks the budget its throughput is no reference.
        ref_levels = [c for c in levels if c not in over_budget(current, levels, budget)]
        changes = level_changes(current, cand, ref_levels)
        slower = [(c, r) for c, r in changes if r < -slack - EPS]
        if slower:
            c, r = min(slower, key=lambda cr: cr[1])
            faster = [(fc, fr) for fc, fr in changes if fr >= min_gain - EPS]
            lead = f"faster at {', '.join(f'c{fc} ({pct(fr)})' for fc, fr in faster)} but " if faster else ""
            return Refusal(cand.label, "slower", f"{lead}{share(-r)} slower than the current config at c{c} "
                                                 f"(allowed: {share(slack)})")
    missing = [c for c in levels if cand.at(c) is None]
    if missing and not partial:
        return Refusal(cand.label, "unmeasured", f"not measured at {', '.join(f'c{c}' for c in missing)}")
    return None


def early_refusal(current: Curve, partial: Curve, load: Load | str, latency_budget_ms: float | None = None,
                  slack: float = SLACK, objective: str = "load") -> str | None:
    """For the measuring loop: the reason ``partial`` (measured so far) can no longer win, or None.

    Under the load objective a candidate over the budget, or more than ``slack`` slower than the
    current config at a level already measured, is refused whatever the other levels say: stop
    measuring it. Measure the levels from the highest down, so a candidate that is faster at high
    load is measured there before its low-load levels refuse it (the report's trade-offs).
    Other objectives: None (their loop stops by its own rules).
    """
    if objective != "load":
        return None
    load = Load.parse(load) if isinstance(load, str) else load
    r = refusal_of(partial, current, objective, load, latency_budget_ms, slack, MIN_GAIN, partial=True)
    return r.reason if r else None


def _check(objective: str, slack: float, min_gain: float, budget: float | None) -> None:
    if objective not in OBJECTIVES and objective not in RULES:
        raise InputError(f"--objective {objective!r} is unknown; choose {', '.join(OBJECTIVES)}")
    if not 0 <= slack < 1 or not 0 <= min_gain < 1:
        raise InputError(f"slack {slack:g} and min_gain {min_gain:g} must be in [0, 1), e.g. 0.03")
    if budget is not None and budget <= 0:
        raise InputError(f"--latency-budget-ms {budget:g} must be > 0, e.g. 50")


# ------------------------------------------------------------------ the decision


def choose(current: Curve, candidates: list[Curve], load: Load | str = DEFAULT_LOAD,
           latency_budget_ms: float | None = None, slack: float = SLACK, objective: str = "load",
           min_gain: float = MIN_GAIN, unstable_spread: float = UNSTABLE_SPREAD) -> Choice:
    """Decide which config serves ``load`` best: a candidate, or ``current`` (ties keep ``current``).

    ``candidates`` may include ``current`` (same label: skipped). Labels must be unique.
    """
    return decide_among(current, candidates, load, latency_budget_ms, slack, objective, min_gain, unstable_spread, True)


def challenge(current: Curve, candidates: list[Curve], load: Load | str = DEFAULT_LOAD,
              latency_budget_ms: float | None = None, objective: str = "load") -> Choice:
    """:func:`choose`, except that under the load objective a candidate refused only for being at
    most :data:`NEAR_SLACK` slower at some level (faster in aggregate by the noise margin) becomes
    the winner *to be confirmed* (``challenger``): the decision keeps the 3 % rule (``slack``), so
    ``confirm.confirm`` writes it only if the interleaved rerun shows it within 3 % at every level.

    What a person reading the plot would do with "+48 % at c2..c16, -3.7 % at c1" from one window
    per level: measure again before refusing it.
    """
    strict = choose(current, candidates, load, latency_budget_ms, objective=objective)
    if objective != "load" or strict.changes:
        return strict
    near = choose(current, candidates, load, latency_budget_ms, slack=NEAR_SLACK, objective=objective)
    if not near.changes:
        return strict
    r = strict.refusal(near.winner.label)
    why = (f"{near.winner.label} is refused by the {share(SLACK)} rule only within this machine's noise "
           f"({r.reason if r else 'slower at one level'}); it is measured again, interleaved with the current "
           f"config, and written only if it holds there; otherwise the current config stays")
    return Choice(near.objective, near.load, near.latency_budget_ms, SLACK, near.min_gain, near.current,
                    near.candidates, near.winner, why, near.scores, near.gain, strict.refused, strict.trade_offs,
                    near.unstable, challenger=True)


def decide_among(current, candidates, load, budget, slack, objective, min_gain, spread, with_trade_offs) -> Choice:
    """The decision with every rule's parameter given (:func:`choose` and :func:`challenge` set them)."""
    _check(objective, slack, min_gain, budget)
    load = Load.parse(load) if isinstance(load, str) else load
    cands = [c for c in candidates if c.label != current.label]
    labels = [c.label for c in cands]
    if len(set(labels)) != len(labels):
        raise ValueError(f"candidate labels must be unique: {labels}")
    scores = {current.label: score_of(current, objective, load, budget)}
    scores.update({c.label: score_of(c, objective, load, budget) for c in cands})
    unstable = {c.label: u for c in (current, *cands) if (u := c.unstable(spread))}
    trade = tuple(_trade_offs(current, cands, load, budget, slack, min_gain, spread)) if with_trade_offs else ()
    make = lambda winner, why, gain, refused: Choice(  # noqa: E731
        objective, load, budget, slack, min_gain, current, tuple(cands), winner, why, scores, gain,
        tuple(refused), trade, unstable)

    base = scores[current.label]
    if current.failed or any(current.at(c) is None for c in load_levels(objective, load)):
        missing = ", ".join(f"c{c}" for c in load_levels(objective, load) if current.at(c) is None)
        what = f"failed ({current.error})" if current.error else f"was not measured at {missing or 'any level'}"
        refused = [Refusal(c.label, "unmeasured", "not compared: the current config " + what) for c in cands]
        return make(current, f"the current config {what}: nothing can be compared, it stays", None, refused)
    # The current config breaks the latency budget: any candidate that meets it is better, whatever its gain.
    current_ok = base is not None and not over_budget(current, load_levels(objective, load), budget)

    refused = [r for c in cands if (r := refusal_of(c, current, objective, load, budget, slack, min_gain))]
    out = {r.label for r in refused}
    ok = [c for c in cands if c.label not in out and scores[c.label] is not None]
    if not ok:
        why = ("no candidate was measured" if not cands else
               f"every candidate was refused ({len(cands)})") + ": the current config stays"
        if not current_ok:
            why += f" although it breaks the {budget:g} ms budget"
        if trade:
            why += f"; {len(trade)} {'is' if len(trade) == 1 else 'are'} faster at some levels only (trade-offs below)"
        return make(current, why, None, refused)
    best = max(ok, key=lambda c: (scores[c.label], -p99_geomean(c, load)))  # max() keeps the first on ties
    top = best
    best = _simplest_close(current, ok, best, scores, base, min_gain, current_ok)
    gain = scores[best.label] / base - 1.0 if base else None
    others = [Refusal(c.label, "not-best", f"meets the rules; {figure_text(scores[c.label], objective)} is below "
                                           f"{best.label}'s {figure_text(scores[best.label], objective)}")
              if scores[c.label] <= scores[best.label] else
              Refusal(c.label, "not-best", f"meets the rules; {figure_text(scores[c.label], objective)} is within the "
                                           f"{share(min_gain)} noise margin of {best.label}'s "
                                           f"{figure_text(scores[best.label], objective)}, which changes fewer settings")
              for c in ok if c is not best]
    if current_ok and (gain is None or gain < min_gain - EPS):
        why = (f"the best candidate that meets the rules, {best.label}, gains {pct(gain or 0)} "
               f"({figure_text(scores[best.label], objective)} against {figure_text(base, objective)}, {aggregate_text(objective, load)}), "
               f"below the {share(min_gain)} noise margin: the current config stays")
        return make(current, why, gain, refused + [Refusal(best.label, "no-gain", f"gains {pct(gain or 0)}, "
                                                  f"below the {share(min_gain)} noise margin")] + others)
    why = why_win(current, best, objective, load, budget, slack, scores, gain, current_ok)
    if best is not top:
        why += (f"; chosen over {top.label} ({figure_text(scores[top.label], objective)}, within the {share(min_gain)} "
                f"noise margin of it) as it changes fewer settings ({_distance(current, best)} against "
                f"{_distance(current, top)})")
    return make(best, why, gain, refused + others)


def _distance(current: Curve, cand: Curve) -> int:
    """How many of the search's knobs ``cand`` sets otherwise than ``current`` (0 when either has none)."""
    if not current.knobs or not cand.knobs:
        return 0
    return sum(current.knobs.get(k) != cand.knobs.get(k) for k in set(current.knobs) | set(cand.knobs))


def _simplest_close(current, ok, best, scores, base, min_gain, current_ok) -> Curve:
    """Among the candidates within ``min_gain`` (the noise margin) of ``best``'s score, the one that
    changes fewest knobs from ``current`` (then the higher score): a person reading the plot does
    not add a queue delay or another stream for a gain this machine cannot tell from noise. Each one
    must still gain the margin over ``current`` on its own."""
    top = scores[best.label]
    if not top:
        return best

    def eligible(c):
        s = scores[c.label]
        return s >= top * (1.0 - min_gain) - EPS and (not current_ok or not base or s / base - 1.0 >= min_gain - EPS)

    if not eligible(best):
        return best  # the best does not gain the margin itself: the caller keeps the current config
    # best first, so that a tie in distance and score keeps it
    close = [best] + [c for c in ok if c is not best and eligible(c)]
    return min(close, key=lambda c: (_distance(current, c), -scores[c.label]))


def _trade_offs(current, cands, load, budget, slack, min_gain, spread) -> list[TradeOff]:
    ref = [c for c in load.levels if c not in over_budget(current, load.levels, budget)]
    out = []
    for cand in cands:
        if cand.failed:
            continue
        changes = level_changes(current, cand, ref)
        faster = [(c, r) for c, r in changes if r >= min_gain - EPS]
        slower = [(c, r) for c, r in changes if r < -slack - EPS]
        if not faster or not slower:
            continue
        # The run of measured levels, never more than `slack` slower, around its best gain.
        measured = [c for c, _ in changes]
        peak = measured.index(max(faster, key=lambda cr: cr[1])[0])
        bad = {c for c, _ in slower}
        lo = hi = peak
        while lo > 0 and measured[lo - 1] not in bad:
            lo -= 1
        while hi + 1 < len(measured) and measured[hi + 1] not in bad:
            hi += 1
        stated = Load(tuple(measured[lo:hi + 1]))
        again = decide_among(current, cands, stated, budget, slack, "load", min_gain, spread, False)
        out.append(TradeOff(cand.label, tuple(faster), tuple(slower), stated,
                            again.winner.label if again.changes else None))
    return out
