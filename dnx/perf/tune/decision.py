"""``dnx tune``'s objective and decision: score each candidate, pick each model's winner, decide whether to write it.

Pure (unit-tested without a server). A :class:`Candidate` is one measured config; a
:class:`Decision` is what tune concluded for one model, read by the write-back, the report and
the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnx.errors import InputError

OBJECTIVES = ("throughput", "latency")
# A winner must beat the previous config by this much to be written (measurement noise).
MIN_GAIN = 0.03


def score(points: list[dict], objective: str, latency_budget_ms: float | None = None) -> float | None:
    """Higher is better. ``points``: dicts with ``concurrency``, ``throughput``, ``p99_ms``.

    throughput: the best throughput whose p99 is within ``latency_budget_ms`` (None when no
    level fits); latency: minus the p99 at concurrency 1 (None when c1 was not measured).
    """
    if objective == "latency":
        c1 = [p for p in points if p["concurrency"] == 1]
        return -min(p["p99_ms"] for p in c1) if c1 else None
    if objective != "throughput":
        raise InputError(f"--objective {objective!r} is unknown; choose {' or '.join(OBJECTIVES)}")
    fits = [p for p in points if latency_budget_ms is None or p["p99_ms"] <= latency_budget_ms]
    return max(p["throughput"] for p in fits) if fits else None


def gain(new: float | None, old: float | None, objective: str) -> float | None:
    """Relative improvement of ``new`` over ``old`` (0.1 = 10 % more throughput / 10 % lower p99)."""
    if new is None or old is None or old == 0:
        return None
    if objective == "latency":  # scores are -p99
        return (-old) / (-new) - 1.0
    return new / old - 1.0


def figure(score_: float | None, objective: str) -> str:
    """A score as people read it: ``123.4 infer/s`` or ``p99 12.3 ms at c1`` (``-`` for none)."""
    if score_ is None:
        return "-"
    return f"p99 {-score_:.1f} ms at c1" if objective == "latency" else f"{score_:.1f} infer/s"


@dataclass
class Candidate:
    """One measured (or failed) config of one model."""

    model: str
    index: int
    knobs: dict
    label: str
    status: str = "ok"  # ok | failed
    error: str = ""
    points: list[dict] = field(default_factory=list)  # concurrency, throughput, p99_ms, p50_ms, stable
    score: float | None = None
    load_s: float = 0.0
    seconds: float = 0.0
    baseline: bool = False
    winner: bool = False

    def at_score(self, objective: str, budget: float | None) -> dict | None:
        """The point that gave the score (c1 for latency)."""
        if self.score is None:
            return None
        if objective == "latency":
            return next(p for p in self.points if p["concurrency"] == 1)
        fits = [p for p in self.points if budget is None or p["p99_ms"] <= budget]
        return max(fits, key=lambda p: p["throughput"])


@dataclass
class Decision:
    """What tune concluded for one model: its winner, the previous config, and whether to write."""

    winner: str | None  # label of the config kept or written (None: every candidate failed)
    reason: str
    write: bool
    knobs: dict | None = None
    score: float | None = None
    figure: str | None = None
    previous: str | None = None
    previous_figure: str | None = None
    best_found: str | None = None  # the best candidate measured, written or not
    best_found_figure: str | None = None
    gain: float | None = None
    point: dict | None = None  # the winner's point that gave its score
    written: str | None = None  # the config.pbtxt path once written

    # What the manifest's "tuning" section records per model.
    MANIFEST_FIELDS = ("winner", "previous", "figure", "previous_figure", "gain", "point", "written")

    def manifest_record(self) -> dict:
        """The model's entry in the manifest's ``tuning.models``."""
        return {k: getattr(self, k) for k in self.MANIFEST_FIELDS}


def decide(candidates: list[Candidate], objective: str, latency_budget_ms: float | None) -> dict[str, Decision]:
    """Each model's :class:`Decision`; marks the winner candidates (``winner=True``).

    The winner is written only when the model was searched, the best candidate is not the
    previous config, and it beats the previous config by :data:`MIN_GAIN` (ties keep the previous).
    """
    out = {}
    for name in dict.fromkeys(c.model for c in candidates):
        mine = [c for c in candidates if c.model == name]
        base = next((c for c in mine if c.baseline), None)
        ok = [c for c in mine if c.score is not None]
        if not ok:
            out[name] = Decision(winner=None, reason="every candidate failed", write=False)
            continue
        best = max(ok, key=lambda c: (c.score, c.baseline))  # ties keep the previous config
        g = gain(best.score, base.score if base else None, objective)
        tuned = len(mine) > 1
        write = bool(tuned and not best.baseline and g is not None and g >= MIN_GAIN)
        reason = ("not searched (only the --top best variants are tuned)" if not tuned else
                  "the previous config is best" if best.baseline else
                  "the previous config could not be measured, so no gain is known" if g is None else
                  f"gain {g:+.1%} is below the {MIN_GAIN:.0%} noise margin" if not write else "")
        winner = best if write else (base or best)
        winner.winner = True
        out[name] = Decision(
            winner=winner.label, knobs=winner.knobs, score=winner.score, figure=figure(winner.score, objective),
            previous=base.label if base else None, previous_figure=figure(base.score if base else None, objective),
            best_found=best.label, best_found_figure=figure(best.score, objective),
            gain=g, write=write, reason=reason, point=winner.at_score(objective, latency_budget_ms),
        )
    return out
