"""Measuring ``dnx tune``'s candidates on a real tritonserver, and the search that chooses them.

Each candidate config is loaded into the *running* server with Triton's model-control API
(:class:`dnx.perf.served.ModelControl`), checked to answer like the untuned model (one
photograph, cosine >= 0.999), and measured with perf_analyzer (:mod:`dnx.perf.analyzer`), one
concurrency level per run, short windows with the stability check kept (relaxed once, flagged,
when a level never stabilises).

Under the ``load`` and ``latency`` objectives a candidate is measured at every level of the load,
the highest first, and stopped as soon as :func:`~dnx.perf.tune.objective.early_refusal` says it
cannot win (slower than the current config at a level, or over the latency budget). Under
``saturation`` the levels rise to the fill level and stop past saturation, as before. The
confirm step (:meth:`Measurer.rerun`) measures the current config and the winner again, with the
runners-up the search could not tell from it (:func:`~dnx.perf.tune.confirm.runners_up`), back
to back at every level (:func:`~dnx.perf.tune.confirm.rerun_plan`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import DnxError, ServerError, disk_full, one_line
from dnx.model_repository.config_edit import config_json
from dnx.model_repository.ensemble import IMAGE_INPUT
from dnx.model_repository.render import TritonConfig
from dnx.perf.analyzer import Analyzer, LevelSettings
from dnx.perf.levels import levels_for
from dnx.perf.served import ModelControl, ServedModel, inspect_server
from dnx.perf.tune import space
from dnx.perf.tune.curves import Curve, Point, combine
from dnx.perf.tune.decision import Candidate, choices, curve_of, search_score
from dnx.perf.tune.confirm import Confirmation, confirm, rerun_levels, rerun_plan, rerun_rounds, runners_up
from dnx.perf.tune.objective import NEAR_SLACK, early_refusal
from dnx.perf.tune.objective import Choice
from dnx.perf.tune.options import (
    LOAD_ESTIMATE_S, SLO, TuneOptions, TuneResult, candidate_estimate_s, confirm_estimate_s, level_estimate_s,
    record_estimate_s,
)
from dnx.perf.sweep.cost import CpuProbe
from dnx.photos import MIX_INPUT_DATA, photo_mix, write_input_data

# A level below this share of the best level before it is past saturation.
SATURATION_SHARE = 0.97


class Measurer:
    """Loads candidates into the server and measures them with perf_analyzer, within a deadline."""

    def __init__(self, url: str, opts: TuneOptions, out_dir: Path, deadline: float,
                 through: dict[str, str] | None = None, metrics_url: str | None = None):
        self.url, self.opts, self.deadline = url, opts, deadline
        # model -> the ensemble it is measured through (the preprocess model: encoded photographs in)
        self.through = dict(through or {})
        self._photos: list[tuple[str, bytes]] | None = None
        self._photo_settings: LevelSettings | None = None
        self.control = ModelControl(url)
        self.analyzer = Analyzer(out_dir)
        self.analyzer.raw.mkdir(parents=True, exist_ok=True)
        self.settings = LevelSettings(
            url=url, protocol="grpc", measurement_interval_ms=opts.window_ms, max_trials=opts.max_trials,
            stability_percentage=opts.stability_percentage, retries=0, shared_memory=opts.shared_memory,
            timeout_s=opts.window_ms / 1000.0 * (opts.max_trials + 2) * 3 + 60,
        )
        self.cpu = CpuProbe.for_url(url, metrics_url)  # CPU per inference of each level, for a server on this machine
        self._served: dict[str, ServedModel] = {}
        self.costs: list[float] = []
        self.level_costs: list[float] = []
        self.load_costs: list[float] = []
        self.reference: dict[str, np.ndarray] = {}
        self.confirming = 0  # models whose confirm step the search must leave time for
        self.recording = 0  # searched models whose current config stays: their shorter final round
        self.budget_stops = 0  # candidates not measured because the budget would not cover them
        self._reruns = 0

    def estimate_s(self) -> float:
        """What the next candidate will cost: the dearest one so far, else a first guess."""
        return max(self.costs) if self.costs else candidate_estimate_s(self.opts)

    def reserve_s(self) -> float:
        """The time kept for the confirm steps of :attr:`confirming` models, from the costs measured so far."""
        level = max(self.level_costs, default=level_estimate_s(self.opts))
        load = max(self.load_costs, default=LOAD_ESTIMATE_S)
        return (self.confirming * confirm_estimate_s(self.opts, level, load)
                + self.recording * record_estimate_s(self.opts, level, load))

    def check_budget(self) -> None:
        """Raise :class:`space.BudgetExhausted` when the next candidate (and the confirm steps) would not fit."""
        if time.monotonic() + self.estimate_s() + self.reserve_s() > self.deadline:
            self.budget_stops += 1
            raise space.BudgetExhausted()

    def photos(self) -> list[tuple[str, bytes]]:
        """The photographs an ensemble is measured with (:func:`dnx.photos.photo_mix`), made once."""
        if self._photos is None:
            self._photos = photo_mix(None)
        return self._photos

    def target(self, model: str) -> tuple[str, LevelSettings]:
        """What perf_analyzer measures for ``model``: itself, or its ensemble fed real photographs."""
        ensemble = self.through.get(model)
        if ensemble is None:
            return model, self.settings
        if self._photo_settings is None:
            data = write_input_data(self.analyzer.out_dir / MIX_INPUT_DATA, IMAGE_INPUT, self.photos())
            self._photo_settings = dataclasses.replace(self.settings, input_data=str(data))
        return ensemble, self._photo_settings

    def answer(self, cfg: TritonConfig, image: np.ndarray) -> np.ndarray:
        """The served model's output for ``image`` (the preprocess model: for the first photograph's bytes)."""
        grpc = lazy_import("tritonclient.grpc")
        if space.is_preprocess(cfg):
            inp = grpc.InferInput(cfg.input_name, [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[self.photos()[0][1]]], dtype=np.object_))
        else:
            inp = grpc.InferInput(cfg.input_name, list(image.shape), "FP32")
            inp.set_data_from_numpy(image)
        return self.control.client.infer(cfg.name, [inp]).as_numpy(cfg.output_name)

    def level(self, model: str, idx: int | str, c: int) -> dict:
        """One measured level of candidate ``idx`` of ``model`` at concurrency ``c`` as a point."""
        t0 = time.monotonic()
        target, settings = self.target(model)
        mark = self.cpu.start(self._served_model(target)) if self.cpu.server_pid else None
        m = self.analyzer.measure_level(target, c, settings, stem=f"{model}_cand{idx}_c{{level}}")
        cost = self.cpu.finish(mark)
        self.level_costs.append(time.monotonic() - t0)
        return {"concurrency": c, "throughput": m.throughput, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "stable": m.stable,
                "server_cpu_ms_per_inference": cost["server_cpu_ms_per_inference"],
                "client_cpu_ms_per_request": cost["client_cpu_ms_per_request"]}

    def _served_model(self, name: str) -> ServedModel:
        """The served config of ``name`` (read once: the CPU probe needs an ensemble's steps)."""
        if name not in self._served:
            self._served[name] = inspect_server(self.url, "grpc", [name])[0]
        return self._served[name]

    def load(self, cfg: TritonConfig) -> float:
        """Load ``cfg`` into the server; returns the seconds it took."""
        t0 = time.monotonic()
        self.control.load(cfg.name, config_json(cfg))
        self.load_costs.append(time.monotonic() - t0)
        return self.load_costs[-1]

    def _saturation_levels(self, cand: Candidate, cfg: TritonConfig) -> None:
        """Rising levels up to the fill level; stop past saturation (or over the latency budget)."""
        best = -1.0
        levels, fill = levels_for(cfg, self.opts.levels, self.opts.max_concurrency)
        budget = self.opts.search_budget_ms
        for c in levels:
            p = self.level(cfg.name, cand.index, c)
            cand.points.append(p)
            if budget is not None and p["p99_ms"] > budget:
                break  # higher concurrency only adds latency
            if p["throughput"] < SATURATION_SHARE * best and c != fill:
                # Past saturation; only the fill level (the last one, full batches) may still win.
                if fill is not None:
                    cand.points.append(self.level(cfg.name, cand.index, fill))
                break
            best = max(best, p["throughput"])

    def _load_levels(self, cand: Candidate, cfg: TritonConfig, current: Curve | None) -> None:
        """Every level of the load, the highest first; stop once the candidate cannot win."""
        o = self.opts
        for c in sorted(o.levels, reverse=True):
            cand.points.append(self.level(cfg.name, cand.index, c))
            if current is not None and o.objective == "load":
                # Measured on while it may still be a challenger (within NEAR_SLACK): the rerun decides.
                why = early_refusal(current, curve_of(cand), o.load, o.latency_budget_ms, slack=NEAR_SLACK)
                if why:
                    cand.stopped = why
                    break

    def measure(self, cand: Candidate, cfg: TritonConfig, image: np.ndarray, current: Curve | None = None) -> Candidate:
        """Load ``cfg``, check its answer, measure its levels; failures are recorded, not raised.

        ``current``: the model's current config as measured (None when ``cand`` is it).
        """
        self.check_budget()
        t0 = time.monotonic()
        o = self.opts
        try:
            cand.load_s = self.load(cfg)
            out = self.answer(cfg, image)
            ref = self.reference.setdefault(cfg.name, out)
            cos = float(np.dot(out.ravel(), ref.ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12))
            if out.shape != ref.shape or cos < 0.999:
                raise RuntimeError(f"answers differ from the untuned model (cosine {cos:.4f})")
            if o.search_objective == "saturation":
                self._saturation_levels(cand, cfg)
            else:
                self._load_levels(cand, cfg, current)
            cand.score = search_score(current, curve_of(cand), o.rank_objective, o.load, o.search_budget_ms)
        except ServerError:
            raise
        except (self.control.error_type, RuntimeError, DnxError, OSError) as exc:
            if disk_full(exc):  # the run's, not this config's: recorded as its failure it would be written back
                raise
            cand.status, cand.error = "failed", one_line(exc, 300)
            cand.score = None
        cand.seconds = time.monotonic() - t0
        self.costs.append(cand.seconds)
        return cand

    def rerun(self, choice: Choice, configs: dict[str, TritonConfig], runners: tuple[Curve, ...] = ()) -> Confirmation:
        """The confirm step (the final round): the current config, the winner and ``runners``
        (``configs``: label -> config for each) measured again, back to back and interleaved at
        every level (:func:`~dnx.perf.tune.confirm.rerun_plan`), and the decision re-made on those runs.

        Not bound by the search's deadline (:meth:`reserve_s` kept the time for it).
        """
        runs: dict[str, list[Point]] = {label: [] for label in configs}
        loaded = None
        for level, label in rerun_plan(choice, rerun_rounds(len(rerun_levels(choice, runners))), runners):
            cfg = configs[label]
            if loaded != label:
                self.load(cfg)
                loaded = label
            self._reruns += 1
            who = "current" if label == choice.current.label else "winner" if label == choice.winner.label else "runner"
            p = self.level(cfg.name, f"-rerun{self._reruns}-{who}", level)
            runs[label].append(Point(level, p["throughput"], p["p99_ms"]))
        # With their knobs: within the noise margin the final round prefers the config that changes less.
        again = {label: combine(label, pts, knobs=space.knobs_of(configs[label])) for label, pts in runs.items()}
        return confirm(again[choice.current.label], again[choice.winner.label], choice,
                       runners=tuple(again[r.label] for r in runners))

    def record(self, choice: Choice, cfg: TritonConfig) -> Confirmation:
        """The final round of a model whose current config stays: it alone, measured again at the levels the
        figure is read at (:func:`~dnx.perf.tune.confirm.rerun_rounds` times), so the figure recorded is the
        low end of its own runs' interval, not one window's luck (a window on a shared VM can be 40 % fast)."""
        levels = rerun_levels(choice)
        self.load(cfg)
        points: list[Point] = []
        for _ in range(rerun_rounds(len(levels))):
            for level in levels:
                self._reruns += 1
                p = self.level(cfg.name, f"-rerun{self._reruns}-current", level)
                points.append(Point(level, p["throughput"], p["p99_ms"]))
        return confirm(combine(choice.current.label, points, knobs=space.knobs_of(cfg)), None, choice)

    def close(self) -> None:
        self.control.close()


def search(result: TuneResult, measurer: Measurer, bases: dict[str, TritonConfig], names: list[str],
           image: np.ndarray) -> None:
    """Measure every model's previous config, then search the ``--models`` (or the ``--top`` best).

    Every measured candidate is appended to ``result.candidates`` as it finishes, so an
    interruption keeps them. Stops quietly when the budget is spent.
    """
    opts = result.options
    tqdm = lazy_import("tqdm").tqdm
    dims = {n: space.space_for(bases[n], opts.cores, max(opts.levels)) for n in names}
    tuned = list(opts.models) if opts.models else None
    per_model = {n: 1 + sum(len(d.values) for d in dims[n]) for n in names}
    total = len(names) + sum(per_model[n] - 1 for n in (tuned or names[:opts.top]))
    bar = tqdm(total=total, unit="cand", desc="tune", disable=not opts.progress, leave=True)
    best_text = {}
    current: dict[str, Curve] = {}

    def evaluate(name: str, knobs: dict, baseline: bool = False) -> float | None:
        cand = Candidate(name, sum(c.model == name for c in result.candidates), dict(knobs), space.describe(knobs),
                         baseline=baseline)
        cfg = bases[name] if baseline else space.apply_knobs(bases[name], knobs)
        measurer.measure(cand, cfg, image, None if baseline else current.get(name))
        result.candidates.append(cand)
        if baseline:
            current[name] = curve_of(cand)
        bar.update(1)
        mine = [c for c in result.candidates if c.model == name and c.score is not None]
        if mine:
            b = max(mine, key=lambda c: c.score)
            scale = 1000.0 / b.score if opts.objective == "latency" else b.score
            best_text[name] = f"{name}: " + (f"p99 {scale:.1f} ms" if opts.objective == "latency" else f"{scale:.1f} infer/s")
            bar.set_postfix_str("best " + "; ".join(best_text.values()), refresh=True)
        return cand.score

    try:
        baseline = {}
        for n in names:  # the previous config of every model: the figure a winner must beat
            with contextlib.suppress(space.BudgetExhausted):
                baseline[n] = evaluate(n, space.knobs_of(bases[n]), baseline=True)
        if tuned is None:
            ranked = sorted((n for n in names if baseline.get(n) is not None), key=lambda n: -baseline[n])
            tuned = ranked[:opts.top]
        result.searched = tuple(tuned)
        changed = 0  # models searched already whose winner needs its confirm step
        for n in tuned:
            if n in baseline:
                # Time for this model's confirm step, and the earlier ones' (slo: every searched model has one).
                before = result.searched.index(n)
                measurer.confirming = (before if opts.objective == SLO else changed) + 1
                measurer.recording = 0 if opts.objective == SLO else before - changed
                space.coordinate_search(dims[n], space.knobs_of(bases[n]), lambda knobs, n=n: evaluate(n, knobs),
                                        start_score=baseline[n])
                mine = [c for c in result.candidates if c.model == n]
                changed += bool(choices(mine, opts.rank_objective, opts.load, opts.search_budget_ms)[n].changes)
    finally:
        bar.close()


def confirm_winners(result: TuneResult, measurer: Measurer, bases: dict[str, TritonConfig],
                    choices_: dict[str, Choice | None]) -> None:
    """The final round of every searched model: the confirm step where the choice changes its config
    (:meth:`Measurer.rerun`), the kept config's repeated runs where it does not (:meth:`Measurer.record`).
    Fills ``result.confirmations``.

    A rerun that fails (the winner no longer loads, perf_analyzer fails) leaves the model unconfirmed,
    so its config stays; the reason is kept in ``result.confirm_errors``.
    """
    for name, choice in choices_.items():
        mine = [c for c in result.candidates if c.model == name]
        if choice is None or len(mine) < 2:
            continue
        if choice.changes:
            runners = runners_up(choice, rerun_rounds(len(rerun_levels(choice))))
            by_label = {c.label: c for c in mine}
            configs = {choice.current.label: bases[name]}
            configs.update({c.label: space.apply_knobs(bases[name], by_label[c.label].knobs)
                            for c in (choice.winner, *runners)})
            final = functools.partial(measurer.rerun, choice, configs, runners)
        else:  # the current config stays: its figure from repeated runs
            final = functools.partial(measurer.record, choice, bases[name])
        try:
            result.confirmations[name] = final()
        except ServerError:
            raise
        except (measurer.control.error_type, RuntimeError, DnxError, OSError) as exc:
            if disk_full(exc):
                raise
            result.confirm_errors[name] = one_line(exc, 300)
