"""``dnx tune``'s search: per-backend search spaces, a pruned coordinate search, the objective.

Pure and small on purpose (unit-tested without a server); :mod:`dnx.perf.tune_run` measures
candidates on a real tritonserver and writes the winner back.

A candidate is a dict of *knobs* (``instances``, ``max_batch``, ``queue_us``, backend
parameters...). :func:`apply_knobs` turns knobs into a :class:`TritonConfig` rendered by the
same template as ``dnx export``. The search (:func:`coordinate_search`) starts from the
model's current config and walks one dimension at a time, keeping the best value; along an
ordered dimension it stops raising (or lowering) a value as soon as the objective drops
(pruning: e.g. a third instance is not tried when the second one was slower), and it does not
try smaller values once larger ones helped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable

from dnx.errors import InputError
from dnx.model_repository.render import TritonConfig

OBJECTIVES = ("throughput", "latency")
BACKENDS = ("onnxruntime", "openvino", "tensorrt_plan")
# A winner must beat the previous config by this much to be written (measurement noise).
MIN_GAIN = 0.03


@dataclass(frozen=True)
class Dimension:
    """One knob and the values the search may give it.

    ``ordered``: values have an order along which the objective is assumed unimodal, so the
    search can stop early. ``applies``: whether the knob matters given the other knobs.
    """

    name: str
    values: tuple
    ordered: bool = True
    applies: Callable[[dict], bool] = lambda knobs: True


def backend_of(cfg: TritonConfig) -> str:
    """``onnxruntime`` | ``openvino`` | ``tensorrt_plan`` (InputError for anything else)."""
    kind = cfg.backend or cfg.platform or ""
    kind = {"onnxruntime_onnx": "onnxruntime", "tensorrt": "tensorrt_plan"}.get(kind, kind)
    if kind not in BACKENDS:
        raise InputError(f"{cfg.name}: dnx tune knows the {', '.join(BACKENDS)} backends, not {kind!r}; drop it from --models")
    return kind


def _powers(limit: int) -> tuple[int, ...]:
    out, b = [], 1
    while b <= limit:
        out.append(b)
        b *= 2
    return tuple(out)


def search_space(backend: str, cores: int | None = None, max_batch: int = 8, gpu_instances: int = 3) -> list[Dimension]:
    """The dimensions searched for ``backend`` on a machine with ``cores`` CPU cores, in search order.

    ``max_batch`` bounds the batch sizes tried (OpenVINO: max_batch_size with padding; ONNX Runtime:
    the preferred batch size, its max_batch_size stays the exported capability).
    """
    cores = max(1, cores or os.cpu_count() or 1)
    batches = _powers(max(1, max_batch))
    batching = lambda k: k["max_batch"] > 1  # noqa: E731 - a queue delay only matters when batches form
    if backend == "onnxruntime":
        # instances x intra-op threads share the cores: one dimension so they move together.
        layouts = tuple((i, max(1, cores // i)) for i in range(1, cores + 1))
        return [
            Dimension("layout", layouts),
            Dimension("inter", (1, 2), applies=lambda k: cores >= 2),
            # max_batch_size stays (clients may send batches up to it); the batcher's target moves.
            Dimension("preferred", (0,) + tuple(b for b in batches if b > 1)),
            Dimension("queue_us", (0, 1000, 5000), applies=lambda k: k["preferred"] > 0),
        ]
    if backend == "openvino":
        # One OpenVINO stream per instance (the C++ backend's instances share one compiled model).
        layouts = tuple((i, i) for i in range(1, cores + 1))
        threads = tuple(dict.fromkeys((0, max(1, cores // 2))))  # 0: OpenVINO's default (all cores)
        return [
            Dimension("layout", layouts),
            Dimension("hint", ("LATENCY", "THROUGHPUT"), ordered=False),
            # With several instances each process already gets its share of the threads (backend_common).
            Dimension("threads", threads, ordered=False, applies=lambda k: cores >= 2 and k["layout"][0] == 1),
            Dimension("max_batch", batches),
            Dimension("queue_us", (0, 1000, 5000), applies=batching),
        ]
    if backend == "tensorrt_plan":
        return [
            Dimension("instances", tuple(range(1, gpu_instances + 1))),
            Dimension("dynamic_batching", (True, False), ordered=False),
            Dimension("queue_us", (0, 100, 500), applies=lambda k: k["dynamic_batching"]),
            Dimension("cuda_graphs", (False, True), ordered=False),
        ]
    raise InputError(f"no search space for backend {backend!r}; choose from {', '.join(BACKENDS)}")


_BATCHING = ("max_batch", "preferred", "queue_us")


def space_for(cfg: TritonConfig, cores: int | None = None, max_concurrency: int = 4) -> list[Dimension]:
    """:func:`search_space` for an existing config (ONNX Runtime batches bounded by its max_batch_size).

    With one request in flight (``max_concurrency`` 1) no batch can form, so the batching
    dimensions cannot win and are left out.
    """
    backend = backend_of(cfg)
    dims = search_space(backend, cores, min(8, max(1, cfg.max_batch_size)) if backend == "onnxruntime" else 8)
    return [d for d in dims if max_concurrency > 1 or d.name not in _BATCHING]


def fill_level(cfg: TritonConfig, cap: int) -> int:
    """The concurrency that fills ``cfg``'s batches (:func:`dnx.perf.sweep.fill_concurrency`)."""
    from dnx.perf.sweep import fill_concurrency

    batch = max(cfg.preferred_batch_sizes, default=cfg.max_batch_size) if cfg.dynamic_batching else 1
    return fill_concurrency(cfg.instance_count, batch, cap)


def levels_for(cfg: TritonConfig, levels: tuple[int, ...], cap: int) -> tuple[tuple[int, ...], int | None]:
    """``(levels, fill)``: the levels to measure ``cfg`` at, and the fill level added beyond them (or None).

    Batches only form, and padded batches only pay off, once enough requests are in flight;
    a candidate with larger batches or more instances is measured where it can fill them too.
    """
    fill = fill_level(cfg, cap)
    if len(levels) == 1 and levels[0] == 1:  # the latency objective measures concurrency 1 only
        return levels, None
    if fill > max(levels):
        return tuple(levels) + (fill,), fill
    return tuple(levels), None


def knobs_of(cfg: TritonConfig) -> dict:
    """The knobs of an existing config (the search's starting point)."""
    backend = backend_of(cfg)
    p = cfg.parameters
    queue = cfg.max_queue_delay_us if cfg.dynamic_batching else 0
    if backend == "onnxruntime":
        intra = int(p.get("intra_op_thread_count", "0") or 0) or max(1, (os.cpu_count() or 1) // cfg.instance_count)
        return {"layout": (cfg.instance_count, intra), "inter": int(p.get("inter_op_thread_count", "1") or 1),
                "preferred": max(cfg.preferred_batch_sizes, default=0), "queue_us": queue}
    if backend == "openvino":
        streams = p.get("NUM_STREAMS", "1")
        streams = int(streams) if streams.isdigit() else streams
        threads = p.get("INFERENCE_NUM_THREADS", "0")
        return {"layout": (cfg.instance_count, streams), "hint": p.get("PERFORMANCE_HINT", "LATENCY").upper(),
                "threads": int(threads) if threads.isdigit() else 0, "max_batch": cfg.max_batch_size, "queue_us": queue}
    return {"instances": cfg.instance_count, "dynamic_batching": cfg.dynamic_batching, "queue_us": queue,
            "cuda_graphs": cfg.cuda_graphs, "max_batch": cfg.max_batch_size}


def _merge(params: dict, owned: dict) -> dict:
    """``params`` with ``owned`` keys set (None: removed), keeping the existing key order."""
    out = {k: owned.get(k, v) for k, v in params.items()}
    out.update({k: v for k, v in owned.items() if k not in out})
    return {k: v for k, v in out.items() if v is not None}


def apply_knobs(base: TritonConfig, knobs: dict) -> TritonConfig:
    """``base`` with ``knobs`` applied; everything the knobs do not own is kept.

    Invariants kept for the C++ backends: an openvino model with ``max_batch_size > 1`` carries
    ``ENABLE_BATCH_PADDING: YES``; preferred batch sizes never exceed ``max_batch_size``.
    """
    backend = backend_of(base)
    params = dict(base.parameters)
    mbs = int(knobs.get("max_batch", base.max_batch_size))
    queue = int(knobs.get("queue_us", 0))
    if backend == "onnxruntime":
        instances, intra = knobs["layout"]
        params = _merge(params, {"intra_op_thread_count": str(intra), "inter_op_thread_count": str(knobs["inter"])})
        preferred = int(knobs.get("preferred", 0))
        return replace(base, instance_count=instances, dynamic_batching=True,
                       preferred_batch_sizes=[preferred] if 1 < preferred <= base.max_batch_size else [],
                       max_queue_delay_us=queue, parameters=params)
    if backend == "openvino":
        instances, streams = knobs["layout"]
        params = _merge(params, {"PERFORMANCE_HINT": knobs["hint"], "NUM_STREAMS": str(streams),
                                 "INFERENCE_NUM_THREADS": str(knobs["threads"]) if knobs.get("threads") else None,
                                 "ENABLE_BATCH_PADDING": "YES" if mbs > 1 else None})
        return replace(base, instance_count=instances, max_batch_size=mbs, dynamic_batching=True,
                       preferred_batch_sizes=[mbs] if mbs > 1 else [], max_queue_delay_us=queue if mbs > 1 else 0,
                       parameters=params, warmup_batch_sizes=[b for b in base.warmup_batch_sizes if b <= mbs] or [1])
    dyn = bool(knobs["dynamic_batching"])
    preferred = [b for b in (mbs // 2, mbs) if b >= 1] if dyn else []
    return replace(base, instance_count=int(knobs["instances"]), dynamic_batching=dyn,
                   preferred_batch_sizes=sorted(set(preferred)), max_queue_delay_us=queue if dyn else 0,
                   cuda_graphs=bool(knobs["cuda_graphs"]))


def describe(knobs: dict) -> str:
    """A short label: ``inst=2 intra=1 inter=1 mbs=4 q=1000us``."""
    parts = []
    for k, v in knobs.items():
        if k == "layout":
            a, b = v
            parts.append(f"inst={a} {'streams' if isinstance(b, str) or 'hint' in knobs else 'intra'}={b}")
        elif k == "max_batch":
            parts.append(f"mbs={v}")
        elif k == "preferred":
            parts.append(f"pref={v or '-'}")
        elif k == "queue_us":
            parts.append(f"q={v}us")
        elif k == "threads":
            parts.append(f"threads={v or 'default'}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)


# ------------------------------------------------------------------ objective


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


# ------------------------------------------------------------------ search


class BudgetExhausted(Exception):
    """Raised by an evaluator when no time is left for another candidate."""


def _key(knobs: dict) -> tuple:
    return tuple(sorted(knobs.items()))


def coordinate_search(dims: list[Dimension], start: dict, evaluate: Callable[[dict], float | None]) -> list[tuple[dict, float | None]]:
    """Search ``dims`` from ``start``; ``evaluate(knobs)`` returns a score (higher better) or None (failed).

    Returns every evaluated candidate with its score, in order (``start`` first). Stops early
    when ``evaluate`` raises :class:`BudgetExhausted`. Pruning along ordered dimensions: values
    are tried away from the current one and the walk stops at the first value that scores below
    the previous one (or fails); the downward walk is skipped when the upward one improved.
    """
    done: dict[tuple, float | None] = {}
    history: list[tuple[dict, float | None]] = []

    def ev(knobs: dict) -> float | None:
        k = _key(knobs)
        if k not in done:
            done[k] = evaluate(knobs)
            history.append((dict(knobs), done[k]))
        return done[k]

    try:
        best, best_score = dict(start), ev(start)
        for dim in dims:
            if dim.name not in best or not dim.applies(best):
                continue
            base, cur = dict(best), best[dim.name]
            if dim.ordered:
                up = [v for v in sorted(dim.values) if v > cur]
                down = [v for v in sorted(dim.values, reverse=True) if v < cur]
                walks = [up, down]
            else:
                walks = [[v for v in dim.values if v != cur]]
            for walk in walks:
                improved, prev = False, best_score  # best is still base here
                for v in walk:
                    cand = {**base, dim.name: v}
                    if not dim.applies(cand):
                        continue
                    s = ev(cand)
                    if s is not None and (best_score is None or s > best_score):
                        best, best_score, improved = cand, s, True
                    if dim.ordered and (s is None or (prev is not None and s < prev)):
                        break  # pruned: further along this walk cannot win
                    prev = s
                if improved and dim.ordered:
                    break  # going up helped: do not walk down
    except BudgetExhausted:
        pass
    return history


def best_of(history: list[tuple[dict, float | None]]) -> tuple[dict, float] | None:
    """The highest-scoring evaluated candidate (the earliest one on ties), or None if all failed."""
    ok = [(k, s) for k, s in history if s is not None]
    return max(ok, key=lambda ks: ks[1]) if ok else None


def gain(new: float | None, old: float | None, objective: str) -> float | None:
    """Relative improvement of ``new`` over ``old`` (0.1 = 10 % more throughput / 10 % lower p99)."""
    if new is None or old is None or old == 0:
        return None
    if objective == "latency":  # scores are -p99
        return (-old) / (-new) - 1.0
    return new / old - 1.0
