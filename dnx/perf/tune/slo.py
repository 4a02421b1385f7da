"""``dnx tune --objective slo``: the final round in the open loop (LoadGen's Server scenario).

The closed-loop search measures each candidate from concurrency 1 up and ranks it by its best
throughput below the first level whose p99 is over the bound (``RULES["slo"]``): Poisson
arrivals meet every load from one request at a time upwards, and a closed loop only hides
queueing, so a config over the bound there cannot meet it in the open loop. Then, per
searched model, on the same running server (:mod:`dnx.perf.slo` does the measuring):

1. the current config's SLO rate: a single-stream run, the rate search and its confirmation
   with another arrival schedule (:func:`dnx.perf.slo.run.search_slo`);
2. when the search picked another config, the same for it;
3. an A/B round between the two brackets (:func:`ab_rate`: the geometric mean of the lowest rate
   the current config failed at and the winner's SLO rate) with two more arrival schedules,
   interleaved current, winner, winner, current (:func:`ab_plan`). The winner is written only
   when both of its runs are VALID and neither of the current config's is (:func:`verdict`): a
   rate that the current config also holds in that round is within the noise of this machine.

The figure recorded is the kept config's confirmed SLO rate, the highest VALID rate below its
lowest failing one: the low end of the bracket the true rate lies in.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from dnx.errors import DnxError, InputError, PerfError, ServerError, disk_full, one_line
from dnx.perf.served import inspect_server
from dnx.perf.slo.options import SloOptions
from dnx.perf.slo.run import ModelSlo, check_bound, search_slo, server_judge, single_stream
from dnx.perf.slo.targets import GrpcTarget, sample_inputs
from dnx.perf.tune import space

# Arrival schedules (LoadGen seeds) of the A/B round; the search used 0 and its confirmation 1.
AB_SEEDS = (2, 3)
CURRENT, WINNER = "current", "winner"


@dataclass
class Trial:
    """One config's open-loop measurement: its single-stream p99 and its SLO rate bracket."""

    label: str
    role: str  # current / winner
    single_stream_p99_ms: float | None = None
    rate: float | None = None  # the confirmed SLO rate (infer/s); None: VALID at no offered rate
    upper: float | None = None  # the lowest rate above it that was not VALID
    points: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    def figure(self, bound: float) -> str:
        """``41.2 infer/s at p99 <= 50 ms (open loop)`` (or why there is none)."""
        if self.error:
            return f"- ({self.error})"
        if self.rate is None:
            return f"none at p99 <= {bound:g} ms (open loop)"
        return f"{self.rate:.1f} infer/s at p99 <= {bound:g} ms (open loop)"

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"label": self.label, "role": self.role, "single_stream_p99_ms": self.single_stream_p99_ms,
                "slo_rate": self.rate, "slo_interval": [self.rate, self.upper], "points": self.points,
                "notes": self.notes, "error": self.error}


@dataclass
class SloRound:
    """What the open-loop final round found for one model, and whether the winner is written."""

    p99_ms: float
    current: Trial
    winner: Trial | None = None  # None: the search kept the current config
    ab: list[dict] = field(default_factory=list)  # role, seed, rate, verdict, p99_ms, in measuring order
    holds: bool = False
    reason: str = ""
    gain: float | None = None

    def point(self) -> dict | None:
        """What the manifest's ``tune`` record says the kept config measured."""
        kept = self.winner if self.holds else self.current
        if kept is None or kept.rate is None:
            return None
        return {"scenario": "server", "p99_bound_ms": self.p99_ms, "slo_rate": kept.rate, "throughput": kept.rate,
                "slo_interval": [kept.rate, kept.upper], "single_stream_p99_ms": kept.single_stream_p99_ms}

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"p99_bound_ms": self.p99_ms, "current": self.current.to_dict(),
                "winner": self.winner.to_dict() if self.winner else None, "ab": self.ab, "holds": self.holds,
                "reason": self.reason, "gain": self.gain}


def ab_plan() -> list[tuple[str, int]]:
    """``(role, seed)`` in measuring order: current, winner, winner, current, one seed per pair, so a drift in
    the machine's load hits both alike."""
    a, b = AB_SEEDS
    return [(CURRENT, a), (WINNER, a), (WINNER, b), (CURRENT, b)]


def ab_rate(current: Trial, winner: Trial) -> float:
    """The offered rate of the A/B round: between the lowest rate the current config failed at and the
    winner's SLO rate (geometric mean), where each config is furthest from its own edge; the winner's rate
    when the current config failed nowhere below it."""
    if current.upper is not None and current.upper < winner.rate:
        return math.sqrt(current.upper * winner.rate)
    return winner.rate


def verdict(current: Trial, winner: Trial | None, ab: list[dict]) -> tuple[bool, str, float | None]:
    """``(holds, reason, gain)``: is ``winner`` written over ``current`` (see the module doc)? Pure."""
    if winner is None:
        return False, "the closed-loop search kept the current config; its SLO rate is recorded", None
    if current.error or winner.error:
        return False, f"the open-loop round failed ({current.error or winner.error}): the current config stays", None
    if winner.rate is None:
        return False, f"{winner.label} is VALID at no offered rate: the current config stays", None
    if current.rate is not None and winner.rate <= current.rate:
        return False, (f"{winner.label}'s SLO rate {winner.rate:.1f}/s is not above the current config's "
                       f"{current.rate:.1f}/s: the current config stays"), None
    valid = {role: [r["verdict"] == "valid" for r in ab if r["role"] == role] for role in (CURRENT, WINNER)}
    if not valid[WINNER] or len(valid[CURRENT]) != len(valid[WINNER]):
        return False, "the A/B round did not finish: the current config stays", None
    gain = winner.rate / current.rate - 1.0 if current.rate else None
    at = ab[0]["rate"]
    if all(valid[WINNER]) and not any(valid[CURRENT]):
        return True, (f"SLO rate {winner.rate:.1f}/s; at {at:.1f}/s it held the bound in {len(valid[WINNER])} of "
                      f"{len(valid[WINNER])} A/B runs, the current config in none"), gain
    return False, (f"not distinguishable on this machine: at {at:.1f}/s {winner.label} held the bound in "
                   f"{sum(valid[WINNER])} of {len(valid[WINNER])} A/B runs and the current config in "
                   f"{sum(valid[CURRENT])} of {len(valid[CURRENT])}: the current config stays"), None


def slo_options(opts, url: str) -> SloOptions:
    """The LoadGen settings of the final round, from ``dnx tune``'s options."""
    return SloOptions(scenario="server", p99_ms=opts.p99_ms, url=url, min_duration_ms=opts.loadgen_min_duration_ms,
                      max_runs=opts.max_rate_runs, confirm=True, closed_loop=False, progress=opts.progress)


def _search(measurer, cfg, trial: Trial, target: GrpcTarget, name: str, sopts: SloOptions, out: Path) -> None:
    """Load ``cfg`` and measure ``trial``'s single-stream p99 and SLO rate (LoadGen logs under ``out/loadgen/name``)."""
    measurer.load(cfg)
    served = inspect_server(measurer.url, "grpc", [target.model])[0]  # the config just loaded: its instances
    rec = ModelSlo(name)
    rec.single_stream = single_stream(target, name, sopts, out)
    trial.single_stream_p99_ms = rec.single_stream.get("p99_ms")
    try:
        check_bound(sopts.p99_ms, [rec])
    except InputError:  # this config cannot meet the bound at any rate
        trial.notes.append(f"one query at a time already has p99 {trial.single_stream_p99_ms:.1f} ms, over the "
                           f"{sopts.p99_ms:g} ms bound: no offered rate is VALID")
        # One query at a time is the lowest load there is: the rate it ran at is the lowest it failed at.
        mean_ms = rec.single_stream.get("mean_ms")
        trial.upper = 1000.0 / mean_ms if mean_ms else None
        return
    search_slo(rec, target, served.instances, sopts, out)
    trial.rate, trial.upper = rec.search.slo_rate, rec.search.upper
    trial.points = [p.to_dict() for p in rec.search.curve()]
    trial.notes += rec.notes


def measure_round(measurer, base_cfg, winner_cfg, name: str, current_label: str, winner_label: str | None,
                  p99_ms: float, out: Path) -> SloRound:
    """The open-loop final round of model ``name`` (``winner_cfg`` None: its current config only)."""
    target_name, _ = measurer.target(name)
    served = inspect_server(measurer.url, "grpc", [target_name])[0]
    sopts = slo_options(measurer.opts, measurer.url)
    rnd = SloRound(p99_ms, Trial(current_label, CURRENT),
                   Trial(winner_label, WINNER) if winner_cfg is not None else None)
    timeout = max(30.0, 20 * p99_ms / 1000)
    with contextlib.closing(GrpcTarget(measurer.url, served, sample_inputs(served), timeout_s=timeout)) as target:
        measuring = rnd.current  # the trial a failure is recorded on
        try:
            _search(measurer, base_cfg, rnd.current, target, f"{name}-current", sopts, out)
            if rnd.winner is not None:
                measuring = rnd.winner
                _search(measurer, winner_cfg, rnd.winner, target, f"{name}-winner", sopts, out)
                if rnd.winner.rate is not None and (rnd.current.rate is None or rnd.winner.rate > rnd.current.rate):
                    loaded, rate = WINNER, ab_rate(rnd.current, rnd.winner)
                    for role, seed in ab_plan():
                        if role != loaded:
                            measurer.load(base_cfg if role == CURRENT else winner_cfg)
                            loaded = role
                        p = server_judge(target, f"{name}-{role}", sopts, out, seed=seed, folder="ab")(rate)
                        rnd.ab.append({"role": role, "seed": seed, "rate": p.rate, "verdict": p.verdict,
                                       "p99_ms": p.p99_ms})
        except ServerError:
            raise
        except (PerfError, DnxError, measurer.control.error_type, RuntimeError, OSError) as exc:
            if isinstance(exc, OSError) and disk_full(exc):
                raise
            measuring.error = one_line(exc, 300)
        finally:
            with contextlib.suppress(Exception):  # the server serves the current config again, as before the round
                measurer.load(base_cfg)
    rnd.holds, rnd.reason, rnd.gain = verdict(rnd.current, rnd.winner, rnd.ab)
    return rnd


def slo_final_round(result, measurer, bases: dict, choices_: dict) -> None:
    """The open-loop round of every searched model whose current config was measured: fills ``result.slo``."""
    by_model: dict[str, list] = {}
    for c in result.candidates:
        by_model.setdefault(c.model, []).append(c)
    for name in result.searched:
        choice = choices_.get(name)
        mine = by_model.get(name, [])
        base = next((c for c in mine if c.baseline and c.status == "ok"), None)
        if choice is None or base is None:
            continue
        winner_cfg = winner_label = None
        if choice.changes and len(mine) > 1:
            won = next(c for c in mine if c.label == choice.winner.label)
            winner_cfg, winner_label = space.apply_knobs(bases[name], won.knobs), won.label
        result.slo[name] = measure_round(measurer, bases[name], winner_cfg, name, base.label, winner_label,
                                         result.options.p99_ms, result.out_dir)


def apply_rounds(result, decisions: dict, rounds: dict) -> dict:
    """``decisions`` (the closed-loop ones, never written) re-made from the open-loop ``rounds`` (model ->
    :class:`SloRound`, ``result.slo``): the open loop decides."""
    by_label = {(c.model, c.label): c for c in result.candidates}
    for name, d in decisions.items():
        rnd = rounds.get(name)
        if rnd is None:
            if d.write or not d.reason:
                d.reason = "no open-loop round (interrupted, or the budget ended first): the current config stays"
            d.write = False
            continue
        base = by_label.get((name, rnd.current.label))
        kept = by_label.get((name, rnd.winner.label)) if rnd.holds and rnd.winner else base
        for c in result.candidates:
            if c.model == name:
                c.winner = c is kept
        d.slo = rnd.to_dict()
        d.write = rnd.holds
        d.winner, d.knobs = kept.label, kept.knobs
        d.reason = "" if rnd.holds else rnd.reason
        d.figure = (rnd.winner if rnd.holds else rnd.current).figure(rnd.p99_ms)
        d.previous, d.previous_figure = rnd.current.label, rnd.current.figure(rnd.p99_ms)
        if rnd.winner is not None:
            d.best_found, d.best_found_figure = rnd.winner.label, rnd.winner.figure(rnd.p99_ms)
        d.gain = rnd.gain if rnd.holds else None
        d.point = rnd.point()
    return decisions


def report_lines(result) -> list[str]:
    """The report's open-loop section: each config's single-stream p99, SLO rate and the A/B round."""
    if not result.slo:
        return []
    bound = result.options.p99_ms
    lines = ["## Open loop", "",
             f"LoadGen Server scenario (Poisson arrivals), p99 <= {bound:g} ms; runs of at least "
             f"{result.options.loadgen_min_duration_ms / 1000:g} s; each SLO rate confirmed with a second arrival "
             "schedule; the A/B round offers one rate between the two configs' brackets to current, winner, winner, "
             "current.", "",
             "| model | config | role | single-stream p99 ms | SLO rate (infer/s) | lowest failing rate | notes |",
             "|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"  # noqa: E731
    for name, rnd in result.slo.items():
        for t in (rnd.current, rnd.winner):
            if t is not None:
                notes = "; ".join(t.notes + ([t.error] if t.error else [])) or "-"
                lines.append(f"| `{name}` | {t.label} | {t.role} | {f(t.single_stream_p99_ms)} | {f(t.rate)} | "
                             f"{f(t.upper)} | {notes} |")
    for name, rnd in result.slo.items():
        if rnd.ab:
            runs = ", ".join(f"{r['role']} {r['verdict']} (p99 {f(r['p99_ms'])} ms)" for r in rnd.ab)
            lines.append(f"\n`{name}` A/B at {rnd.ab[0]['rate']:.1f}/s: {runs}.")
        lines.append(f"\n`{name}`: {'written' if rnd.holds else 'kept'}: {rnd.reason}.")
    return lines + [""]
