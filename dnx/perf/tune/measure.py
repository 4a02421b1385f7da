"""Measuring ``dnx tune``'s candidates on a real tritonserver, and the search that chooses them.

Each candidate config is loaded into the *running* server with Triton's model-control API
(:class:`dnx.perf.served.ModelControl`), checked to answer like the untuned model (one
photograph, cosine >= 0.999), and measured with perf_analyzer (:mod:`dnx.perf.analyzer`), one
concurrency level per run, short windows with the stability check kept (relaxed once, flagged,
when a level never stabilises).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import DnxError, ServerError, one_line
from dnx.model_repository.config_edit import config_json
from dnx.model_repository.render import TritonConfig
from dnx.perf.analyzer import Analyzer, LevelSettings
from dnx.perf.levels import levels_for
from dnx.perf.served import ModelControl
from dnx.perf.tune import space
from dnx.perf.tune.decision import Candidate, figure, score
from dnx.perf.tune.options import TuneOptions, TuneResult, candidate_estimate_s

# A level below this share of the best level before it is past saturation.
SATURATION_SHARE = 0.97


class Measurer:
    """Loads candidates into the server and measures them with perf_analyzer, within a deadline."""

    def __init__(self, url: str, opts: TuneOptions, out_dir: Path, deadline: float):
        self.url, self.opts, self.deadline = url, opts, deadline
        self.control = ModelControl(url)
        self.analyzer = Analyzer(out_dir)
        self.analyzer.raw.mkdir(parents=True, exist_ok=True)
        self.settings = LevelSettings(
            url=url, protocol="grpc", measurement_interval_ms=opts.window_ms, max_trials=opts.max_trials,
            stability_percentage=opts.stability_percentage, retries=0, shared_memory=opts.shared_memory,
            timeout_s=opts.window_ms / 1000.0 * (opts.max_trials + 2) * 3 + 60,
        )
        self.costs: list[float] = []
        self.reference: dict[str, np.ndarray] = {}

    def estimate_s(self) -> float:
        """What the next candidate will cost: the dearest one so far, else a first guess."""
        return max(self.costs) if self.costs else candidate_estimate_s(self.opts)

    def check_budget(self) -> None:
        """Raise :class:`space.BudgetExhausted` when the next candidate would not fit before the deadline."""
        if time.monotonic() + self.estimate_s() > self.deadline:
            raise space.BudgetExhausted()

    def answer(self, cfg: TritonConfig, image: np.ndarray) -> np.ndarray:
        """The served model's output for ``image``."""
        grpc = lazy_import("tritonclient.grpc")
        inp = grpc.InferInput(cfg.input_name, list(image.shape), "FP32")
        inp.set_data_from_numpy(image)
        return self.control.client.infer(cfg.name, [inp]).as_numpy(cfg.output_name)

    def level(self, model: str, idx: int, c: int) -> dict:
        """One measured level of candidate ``idx`` at concurrency ``c`` as a point."""
        m = self.analyzer.measure_level(model, c, self.settings, stem=f"{model}_cand{idx}_c{{level}}")
        return {"concurrency": c, "throughput": m.throughput, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "stable": m.stable}

    def measure(self, cand: Candidate, cfg: TritonConfig, image: np.ndarray) -> Candidate:
        """Load ``cfg``, check its answer, measure its levels; failures are recorded, not raised."""
        self.check_budget()
        t0 = time.monotonic()
        try:
            self.control.load(cfg.name, config_json(cfg))
            cand.load_s = time.monotonic() - t0
            out = self.answer(cfg, image)
            ref = self.reference.setdefault(cfg.name, out)
            cos = float(np.dot(out.ravel(), ref.ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12))
            if out.shape != ref.shape or cos < 0.999:
                raise RuntimeError(f"answers differ from the untuned model (cosine {cos:.4f})")
            best = -1.0
            levels, fill = levels_for(cfg, self.opts.levels, self.opts.max_concurrency)
            budget = self.opts.latency_budget_ms
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
            cand.score = score(cand.points, self.opts.objective, self.opts.latency_budget_ms)
        except ServerError:
            raise
        except (self.control.error_type, RuntimeError, DnxError, OSError) as exc:
            cand.status, cand.error = "failed", one_line(exc, 300)
            cand.score = None
        cand.seconds = time.monotonic() - t0
        self.costs.append(cand.seconds)
        return cand

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

    def evaluate(name: str, knobs: dict, baseline: bool = False) -> float | None:
        cand = Candidate(name, sum(c.model == name for c in result.candidates), dict(knobs), space.describe(knobs),
                         baseline=baseline)
        cfg = bases[name] if baseline else space.apply_knobs(bases[name], knobs)
        measurer.measure(cand, cfg, image)
        result.candidates.append(cand)
        bar.update(1)
        mine = [c for c in result.candidates if c.model == name and c.score is not None]
        if mine:
            b = max(mine, key=lambda c: c.score)
            best_text[name] = f"{name}: {figure(b.score, opts.objective)}"
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
        for n in tuned:
            if n in baseline:
                space.coordinate_search(dims[n], space.knobs_of(bases[n]), lambda knobs, n=n: evaluate(n, knobs),
                                        start_score=baseline[n])
    finally:
        bar.close()
