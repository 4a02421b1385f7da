"""In-process baselines for ``dnx bench``: PyTorch eager, ONNX Runtime, OpenVINO (sync and async).

Each :class:`InProcessRunner` is loaded through :mod:`dnx.runtimes` with the served configs'
parameters, so an in-process figure computes in the precision the server serves.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dnx._lazy import has_module, lazy_import
from dnx.exporter.torch_export import load_torch_model
from dnx.perf.served import model_file, openvino_models
from dnx.runtimes import onnxruntime as ort_runtime
from dnx.runtimes import openvino as ov_runtime
from dnx.runtimes.torch import forward_fn
from dnx.spec import DEFAULT_MODEL, ModelSpec

Infer = Callable[[np.ndarray], object]

_OV_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# Config parameters that choose an OpenVINO model's precision (kept by the in-process runners).
PRECISION_KEYS = ("INFERENCE_PRECISION_HINT", "HINT_BF16")


@dataclass
class InProcessRunner:
    """A baseline timed in this process. ``load(batch)`` returns a function that runs one batch."""

    name: str  # e.g. "onnxruntime fp32"
    family: str  # pytorch | onnxruntime | openvino | ...
    precision: str
    batch_sizes: tuple[int, ...]
    load: Callable[[int], Infer]
    threads: int | None = None
    notes: str = ""


def torch_eager_runner(batch_sizes=(1, 4, 8), threads: int | None = None, spec: ModelSpec = DEFAULT_MODEL) -> InProcessRunner:
    """The torchvision model in PyTorch eager, random weights (the approach of the suite dnx replaces)."""
    threads = threads or os.cpu_count()

    def load(batch: int) -> Infer:
        lazy_import("torch").set_num_threads(threads)
        return forward_fn(load_torch_model(spec, "random", 0)[0])

    return InProcessRunner("pytorch eager fp32", "pytorch", "fp32", tuple(batch_sizes), load, threads,
                           "torch.set_num_threads(os.cpu_count()), inference_mode, random weights")


def onnxruntime_runner(onnx_path: Path, batch_sizes=(1,), threads: int = 2, precision: str = "fp32") -> InProcessRunner:
    """ONNX Runtime CPU session on ``onnx_path`` (intra-op ``threads``, inter-op 1)."""

    def load(batch: int) -> Infer:
        sess = ort_runtime.session(onnx_path, ort_runtime.cpu_parameters(threads))
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})

    return InProcessRunner(f"onnxruntime {precision}", "onnxruntime", precision, tuple(batch_sizes), load, threads,
                           f"intra_op={threads}, inter_op=1, {Path(onnx_path).name}")


def precision_parameters(parameters: dict[str, str] | None) -> dict[str, str]:
    """The precision choice (:data:`PRECISION_KEYS`) of a served config's ``parameters``, nothing else."""
    return {k: v for k, v in (parameters or {}).items() if k in PRECISION_KEYS}


def sync_parameters(precision: str, parameters: dict[str, str] | None = None) -> dict[str, str]:
    """Config parameters of the synchronous in-process OpenVINO runner: LATENCY, one stream.

    Only the served precision choice is kept from ``parameters``: the served streams and hint
    (e.g. THROUGHPUT x 2 after ``dnx tune``) would leave one synchronous request half the cores.
    """
    chosen = (precision_parameters(parameters) if parameters is not None
              else {"INFERENCE_PRECISION_HINT": _OV_HINTS.get(precision, "f32")})
    return {**chosen, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


def openvino_runner(model_path: Path, precision: str = "fp32", batch_sizes=(1, 8), threads: int | None = None,
                    parameters: dict[str, str] | None = None) -> InProcessRunner:
    """OpenVINO CPU on an ONNX or IR file, LATENCY hint, inference precision from ``precision``.

    ``parameters`` (a served model's config parameters) give the precision choice
    (:data:`PRECISION_KEYS`), so the in-process run computes in the precision the openvino
    backend serves (int8 then runs its unquantized layers at the CPU default, as served); one
    stream, LATENCY hint.
    """
    threads = threads or os.cpu_count()
    params = sync_parameters(precision, parameters)

    def load(batch: int) -> Infer:
        request = ov_runtime.compile_model(model_path, params, batch=batch,
                                           properties={"INFERENCE_NUM_THREADS": threads}).create_infer_request()
        return lambda x: request.infer({0: x})

    hint = ov_runtime.compile_properties(params).get("INFERENCE_PRECISION_HINT", "CPU default")
    return InProcessRunner(f"openvino {precision}", "openvino", precision, tuple(batch_sizes), load, threads,
                           f"LATENCY hint, 1 stream, {threads} threads, precision hint {hint}, "
                           f"{Path(model_path).parent.parent.name}/{Path(model_path).name}")


class _AsyncInfer:
    """Each call queues one batch; it blocks only while every request of the queue is busy, so
    calls per second in steady state is the queue's throughput. Waits for the queue when dropped."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, x: np.ndarray) -> None:
        self.queue.start_async({0: x})

    def __del__(self):
        with contextlib.suppress(Exception):
            self.queue.wait_all()


def openvino_async_runner(model_path: Path, precision: str, parameters: dict[str, str] | None = None,
                          streams: int = 2, jobs: int = 4, batch_sizes=(1, 4, 8),
                          threads: int | None = None) -> InProcessRunner:
    """OpenVINO CPU, THROUGHPUT hint, ``streams`` streams, an ``AsyncInferQueue`` of ``jobs`` requests.

    The fastest in-process OpenVINO seen on 2 cores. ``parameters`` (the served config's) keep the
    served precision choice. Timing columns of this runner are the waits between submissions, not
    request latencies.
    """
    threads = threads or os.cpu_count()
    props = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(streams), "INFERENCE_NUM_THREADS": str(threads)}
    parameters = precision_parameters(parameters)

    def load(batch: int):
        ov = lazy_import("openvino")
        compiled = ov_runtime.compile_model(model_path, parameters, batch=batch, properties=props)
        return _AsyncInfer(ov.AsyncInferQueue(compiled, jobs))

    return InProcessRunner(f"openvino {precision} async", "openvino", precision, tuple(batch_sizes), load, threads,
                           f"THROUGHPUT hint, {streams} streams, AsyncInferQueue({jobs}), {threads} threads, "
                           f"{Path(model_path).parent.parent.name}; latency columns = waits between submissions")


def openvino_runners(repository: Path, manifest: dict | None, spec: ModelSpec = DEFAULT_MODEL) -> list[InProcessRunner]:
    """OpenVINO per precision: the repository's OpenVINO models as served, else its fp32 ONNX (f32, and bf16 if native)."""
    if not has_module("openvino"):
        return []
    found = [openvino_runner(m.path, m.precision, parameters=m.parameters) for m in openvino_models(repository, manifest)]
    if found:
        return found
    onnx = model_file(repository, spec.model_name("onnxruntime", "fp32"))
    if onnx is None:
        return []
    return [openvino_runner(onnx, "fp32")] + ([openvino_runner(onnx, "bf16")] if ov_runtime.cpu_supports_bf16() else [])


def openvino_async_runners(repository: Path, manifest: dict | None) -> list[InProcessRunner]:
    """One async runner per OpenVINO model of the repository (none without openvino)."""
    if not has_module("openvino"):
        return []
    return [openvino_async_runner(m.path, m.precision, m.parameters) for m in openvino_models(repository, manifest)]
