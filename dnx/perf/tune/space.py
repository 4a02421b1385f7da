"""``dnx tune``'s search space: per-backend dimensions, knobs <-> configs, a pruned coordinate search.

Pure and small on purpose (unit-tested without a server); :mod:`dnx.perf.tune.measure` measures
candidates on a real tritonserver, :mod:`dnx.perf.tune.decision` scores them.

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
from dnx.kinds import Backend
from dnx.model_repository.render import TritonConfig
from dnx.perf.served import backend_kind

BACKENDS = tuple(b.value for b in Backend)


@dataclass(frozen=True)
class Dimension:
    """One knob and the values the search may give it.

    ``ordered``: values have an order along which the objective is assumed unimodal, so the
    search can stop early. ``applies``: whether the knob matters given the other knobs.
    ``patience``: how many values in a row may score below the best of the walk before it stops
    (batch sizes: one, because a dip at one size, noise on a shared VM or a kernel that fits it
    badly, may be followed by a gain at the next: on OpenVINO int8 at c16, dnx tune stopped at
    max batch 2 (116.5 < 127.7 infer/s at 1) and never measured 4, which Model Analyzer's brute
    search found best, 154.4).
    """

    name: str
    values: tuple
    ordered: bool = True
    applies: Callable[[dict], bool] = lambda knobs: True
    patience: int = 0  # ordered: values in a row that may score below the walk's best before it stops


def backend_of(cfg: TritonConfig) -> str:
    """``onnxruntime`` | ``openvino`` | ``tensorrt_plan`` | ``python`` (InputError for anything else).

    ``python`` is only the ensemble's preprocess model (encoded images in), measured through its ensemble.
    """
    kind = backend_kind(cfg)
    if kind not in BACKENDS or (kind == "python" and not is_preprocess(cfg)):
        raise InputError(f"{cfg.name}: dnx tune knows the onnxruntime, openvino and tensorrt_plan backends and "
                         f"the ensemble's preprocess model, not {kind!r}; drop it from --models")
    return kind


def is_preprocess(cfg: TritonConfig) -> bool:
    """Whether ``cfg`` is a dnx ensemble's preprocess model (Python backend, encoded images in)."""
    return backend_kind(cfg) == "python" and cfg.input_dtype == "TYPE_STRING"


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
            Dimension("preferred", (0,) + tuple(b for b in batches if b > 1), patience=1),
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
            Dimension("max_batch", batches, patience=1),
            Dimension("queue_us", (0, 1000, 5000), applies=batching),
        ]
    if backend == "python":
        # Each instance is one Python stub decoding one image at a time, on the cores the variant
        # leaves idle; one more than the cores lets decoding overlap the variant's own waits.
        return [
            Dimension("instances", tuple(range(1, cores + 2))),
            Dimension("queue_us", (0, 1000)),
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
    if backend == "python":
        return {"instances": cfg.instance_count, "queue_us": queue}
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
    if backend == "python":  # the transform's parameters and the batch size the ensemble needs stay
        return replace(base, instance_count=int(knobs["instances"]), dynamic_batching=True, max_queue_delay_us=queue)
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


# ------------------------------------------------------------------ search


class BudgetExhausted(Exception):
    """Raised by an evaluator when no time is left for another candidate."""


def _key(knobs: dict) -> tuple:
    return tuple(sorted(knobs.items()))


_UNKNOWN = object()


def coordinate_search(dims: list[Dimension], start: dict, evaluate: Callable[[dict], float | None],
                      start_score=_UNKNOWN) -> list[tuple[dict, float | None]]:
    """Search ``dims`` from ``start``; ``evaluate(knobs)`` returns a score (higher better) or None (failed).

    ``start_score``: the start's score when it was measured already (it is not evaluated again).
    Returns every candidate with its score, in order (``start`` first); each is evaluated once. Stops early
    when ``evaluate`` raises :class:`BudgetExhausted`. Pruning along ordered dimensions: values
    are tried away from the current one and the walk stops once more than ``patience`` values in
    a row score below the best of the walk so far (or one fails); the downward walk is skipped
    when the upward one improved.
    """
    done: dict[tuple, float | None] = {}
    history: list[tuple[dict, float | None]] = []

    def ev(knobs: dict) -> float | None:
        k = _key(knobs)
        if k not in done:
            done[k] = evaluate(knobs)
            history.append((dict(knobs), done[k]))
        return done[k]

    if start_score is not _UNKNOWN:
        done[_key(start)] = start_score
        history.append((dict(start), start_score))

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
                improved, top, misses = False, best_score, 0  # best is still base here
                for v in walk:
                    cand = {**base, dim.name: v}
                    if not dim.applies(cand):
                        continue
                    s = ev(cand)
                    if s is not None and (best_score is None or s > best_score):
                        best, best_score, improved = cand, s, True
                    if dim.ordered:
                        if s is None:
                            break  # a failure ends the walk
                        misses = misses + 1 if top is not None and s < top else 0
                        if misses > dim.patience:
                            break  # pruned: further along this walk cannot win
                        top = s if top is None else max(top, s)
                if improved and dim.ordered:
                    break  # going up helped: do not walk down
    except BudgetExhausted:
        pass
    return history
