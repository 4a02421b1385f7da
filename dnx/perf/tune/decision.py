"""``dnx tune``'s measured candidates and its typed per-model :class:`Decision` (pure).

A :class:`Candidate` is one measured config (its points per concurrency level); the choice
itself is :func:`dnx.perf.tune.objective.challenge` over their curves (:func:`curve_of`), and the
confirm step :func:`~dnx.perf.tune.confirm.confirm`. :func:`decide` wraps both into one
:class:`Decision` per model, read by the write-back, the report, the manifest and the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnx.perf.tune.curves import Curve, Load, geomean
from dnx.perf.tune.evidence import conservative_throughput
from dnx.perf.tune.confirm import Confirmation
from dnx.perf.tune.objective import challenge, choose
from dnx.perf.tune.objective import Choice


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
    score: float | None = None  # the objective's aggregate (higher better); None: refused or failed
    load_s: float = 0.0
    seconds: float = 0.0
    baseline: bool = False
    winner: bool = False
    stopped: str = ""  # why measuring stopped early (objective.early_refusal), if it did

    def curve(self) -> Curve:
        """The candidate as the objective reads it."""
        return curve_of(self)


def curve_of(cand: Candidate) -> Curve:
    """``cand``'s :class:`Curve` (labelled by its settings; failed candidates carry their error)."""
    return Curve.from_dicts(cand.label, cand.points, knobs=cand.knobs,
                            error=cand.error or ("" if cand.status == "ok" else cand.status))


def search_score(current: Curve | None, cand: Curve, objective: str, load: Load, budget: float | None) -> float | None:
    """The score the coordinate search climbs: the objective's aggregate, None when a rule refuses ``cand``.

    ``current`` None: ``cand`` is the current config itself.
    """
    ref = current if current is not None else cand
    d = choose(ref, [cand] if current is not None else [], load, budget, objective=objective)
    r = d.refusal(cand.label)
    if r is not None and r.kind in ("failed", "budget", "slower", "unmeasured"):
        return None
    return d.scores.get(cand.label)


def figure(curve: Curve | None, choice: Choice) -> str:
    """A curve's aggregate as people read it: ``123.4 infer/s (geomean c1-c16)`` (``-`` for none)."""
    if curve is None or curve.failed:
        return "-"
    s = choice.scores.get(curve.label)
    if s is None:
        s = search_score(None, curve, choice.objective, choice.load, choice.latency_budget_ms)
    if s is None:
        return "-"
    if choice.objective == "latency":
        return f"p99 {1000.0 / s:.1f} ms at c{choice.load.levels[0]}"
    if choice.objective == "load" and len(choice.load.levels) > 1:
        return f"{s:.1f} infer/s (geomean c{choice.load.levels[0]}-c{choice.load.top})"
    return f"{s:.1f} infer/s"


def record_point(curve: Curve, choice: Choice) -> dict | None:
    """What the manifest's per-model ``tune`` record says the kept config measured (``curve``: the rerun's when there was one).

    ``throughput`` is the objective's aggregate over the load (geometric mean, the best level
    for saturation), so variants compare by the load they were tuned for; ``curve`` has every level.
    """
    if curve.failed:
        return None
    pts = [p for p in curve.points if choice.objective == "saturation" or p.concurrency in choice.load.levels]
    if not pts:
        return None
    best = max(pts, key=lambda p: p.throughput)
    at = curve.at(choice.load.levels[0]) if choice.objective == "latency" else best
    at = at or best
    load = choice.objective == "load" and len(pts) > 1
    thr = geomean([p.throughput for p in pts]) if load else at.throughput
    out = {"throughput": thr, "p99_ms": max(p.p99_ms for p in pts) if load else at.p99_ms,
           "concurrency": at.concurrency, "curve": [{"concurrency": p.concurrency, "throughput": p.throughput,
                                                     "p99_ms": p.p99_ms} for p in pts]}
    cons = conservative_throughput(curve, [p.concurrency for p in pts] if load else [at.concurrency])
    if cons is not None and choice.objective != "latency":
        # The low end: what an independent run on this machine meets, not the median of a few runs.
        low, interval = cons
        out.update(throughput=low, throughput_median=thr, throughput_interval=[interval.low, interval.high],
                   throughput_runs=interval.rounds)
    return out


@dataclass
class Decision:
    """What tune concluded for one model: the choice, its confirmation, and whether to write."""

    winner: str | None  # label of the config kept or written (None: every candidate failed)
    reason: str
    write: bool
    knobs: dict | None = None
    figure: str | None = None  # the kept config's aggregate (the rerun's when confirmed)
    previous: str | None = None
    previous_figure: str | None = None
    best_found: str | None = None  # the choice's winner, written or not
    best_found_figure: str | None = None
    gain: float | None = None
    point: dict | None = None  # what the manifest's `tune` record says it measured
    written: str | None = None  # the config.pbtxt path once written
    choice: Choice | None = None
    confirmation: Confirmation | None = None
    slo: dict | None = None  # --objective slo: the open-loop round (dnx.perf.tune.slo.SloRound.to_dict())

    @property
    def confirmed(self) -> bool | None:
        """Whether the final round held (the open-loop round's verdict under ``--objective slo``); None: no round."""
        if self.slo is not None:
            return self.slo["holds"] if self.slo.get("winner") else True
        return None if self.confirmation is None else self.confirmation.holds

    # What the manifest's "tuning" section records per model.
    MANIFEST_FIELDS = ("winner", "previous", "figure", "previous_figure", "gain", "reason", "point", "written")

    def manifest_record(self) -> dict:
        """The model's entry in the manifest's ``tuning.models``."""
        out = {k: getattr(self, k) for k in self.MANIFEST_FIELDS}
        out["confirmed"] = self.confirmed
        if self.slo is not None:
            out["slo"] = {k: self.slo[k] for k in ("p99_bound_ms", "holds", "reason", "gain")}
        out["trade_offs"] = [f"{t.label}: {t.summary()}; {t.advice()}" for t in (self.choice.trade_offs if self.choice else ())]
        return out

    def to_dict(self) -> dict:
        """JSON-ready, for report.json: the fields, ``decision`` and ``confirmation`` as their ``to_dict()``."""
        out = {k: getattr(self, k) for k in ("winner", "reason", "write", "knobs", "figure", "previous",
                                             "previous_figure", "best_found", "best_found_figure", "gain", "point",
                                             "written")}
        out["decision"] = self.choice.to_dict() if self.choice else None
        out["confirmation"] = self.confirmation.to_dict() if self.confirmation else None
        out["slo"] = self.slo
        return out


def _won_figure(won: Candidate, choice: Choice, conf: Confirmation | None) -> str:
    """The chosen config's aggregate: the rerun's when it was measured again, else the search's."""
    again = next((c for c in (conf.rerun.current, *conf.rerun.candidates) if c.label == won.label), None) \
        if conf is not None else None
    return figure(again, conf.rerun) if again is not None else figure(won.curve(), choice)


def choices(candidates: list[Candidate], objective: str, load: Load, budget: float | None) -> dict[str, Choice | None]:
    """:func:`~dnx.perf.tune.objective.challenge` per model over its candidates (None: no current config measured)."""
    out: dict[str, Choice | None] = {}
    for name in dict.fromkeys(c.model for c in candidates):
        mine = [c for c in candidates if c.model == name]
        base = next((c for c in mine if c.baseline), None)
        if base is None:
            out[name] = None
            continue
        out[name] = challenge(curve_of(base), [curve_of(c) for c in mine if not c.baseline], load, budget,
                              objective=objective)
    return out


def unsearched_why(result) -> str:
    """Why a model the search was to tune (a :class:`~dnx.perf.tune.options.TuneResult`'s) got no candidate."""
    if result.interrupted:
        return "the run was interrupted before its turn"
    return "the budget ended the search before its turn; pass a larger --budget-minutes"


def decide(candidates: list[Candidate], choices_: dict[str, Choice | None],
           confirmations: dict[str, Confirmation] | None = None, errors: dict[str, str] | None = None,
           searched: tuple[str, ...] = (), unsearched_why: str = ""
           ) -> dict[str, Decision]:
    """Each model's :class:`Decision`; marks the kept / written candidate (``winner=True``).

    A config is written only when the model was searched, the choice changes it, and the
    confirm step (``confirmations``) held; the figures are the rerun's when there was one.
    ``errors``: model -> why its rerun failed. ``searched``: the models the search was to tune
    (``--models`` or the ``--top`` best); one of them with nothing but its current config measured
    is reported with ``unsearched_why``, the others as outside the ``--top``.
    """
    confirmations, errors = confirmations or {}, errors or {}
    out = {}
    for name, choice in choices_.items():
        mine = [c for c in candidates if c.model == name]
        base = next((c for c in mine if c.baseline), None)
        if choice is None or base is None:
            out[name] = Decision(winner=None, reason="the current config was not measured", write=False)
            continue
        conf = confirmations.get(name)
        by_label = {c.label: c for c in mine}
        tuned = len(mine) > 1
        write = bool(tuned and choice.changes and conf is not None and conf.holds)
        if not tuned:
            reason = (f"not searched: {unsearched_why}" if name in searched
                      else "not searched (only the --top best variants are tuned)")
        elif not choice.changes:
            reason = choice.why
        elif conf is None and name in errors:
            reason = f"{choice.why}; its rerun failed ({errors[name]}): the current config stays"
        elif conf is None:
            reason = f"{choice.why}; not confirmed (dry run, interrupted, or no time left for the rerun)"
        else:
            reason = conf.reason
        # The final round may pick a runner-up over the search's winner (confirm.confirm).
        kept = by_label[conf.written.label] if write else base
        kept.winner = True
        shown = conf.written if conf is not None else kept.curve()
        won = kept if write else by_label.get(choice.winner.label, base)
        gain = (conf.rerun.gain if conf is not None and conf.holds else choice.gain) if choice.changes else None
        out[name] = Decision(
            winner=kept.label, knobs=kept.knobs, reason="" if write else reason, write=write,
            figure=figure(shown, conf.rerun if conf is not None else choice),
            previous=base.label, previous_figure=figure(conf.rerun.current if conf else base.curve(),
                                                        conf.rerun if conf else choice),
            best_found=won.label, best_found_figure=_won_figure(won, choice, conf), gain=gain,
            point=record_point(shown, choice), choice=choice, confirmation=conf,
        )
    return out
