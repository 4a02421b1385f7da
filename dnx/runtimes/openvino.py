"""OpenVINO on the CPU: models compiled from a config's ``parameters``, batched as the backend serves them.

The openvino backend fixes a model's batch to ``max_batch_size`` (``ov::set_batch``) and, with
``ENABLE_BATCH_PADDING``, pads smaller batches with zeros (dnx/exporter/openvino.py's module doc
has the sources). :func:`runner` does the same, so parity is judged on what is served.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import InputError
from dnx.runtimes.backend_common import openvino_properties, pad_batch
from dnx.runtimes.callable import callable_runner
from dnx.spec import DEFAULT_MODEL, ModelSpec


@functools.lru_cache(maxsize=1)
def core():
    """The process's one OpenVINO ``Core``: every compile and query of dnx goes through it.

    One, never freed, because each Core's CPU plugin replaces the calling thread's signal alternate
    stack with one of its own and unmaps it when the plugin goes, restoring the stack it found only
    if its own is still current. Two Cores freed in the order they were made leave the thread on
    the unmapped stack, and the next signal handled there (Python asks for the alternate stack:
    Ctrl-C's SIGINT, a SIGTERM) kills the process with SIGSEGV instead of stopping it cleanly
    (tests/runtimes/test_openvino_core.py shows both).
    """
    return lazy_import("openvino").Core()


def cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of this machine's CPU (e.g. FP32, BF16, INT8)."""
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bfloat16 natively (AVX512_BF16 or AMX), as OpenVINO reports it."""
    return "BF16" in cpu_capabilities()


def compile_properties(parameters: dict[str, str]) -> dict[str, str]:
    """OpenVINO CPU properties for config ``parameters``, mapped and validated as the backend does.

    Raises :class:`~dnx.errors.InputError` for a value the backend would refuse.
    """
    try:
        return openvino_properties({k: str(v).strip() for k, v in parameters.items()})
    except ValueError as exc:
        raise InputError(f"{exc}; fix the model's config.pbtxt parameters") from None


def compile_model(path: str | os.PathLike, parameters: dict[str, str] | None = None, *, batch: int = 0,
                  properties: dict | None = None):
    """Compile an IR or ONNX file for the CPU with the properties ``parameters`` map to.

    ``batch`` > 0 fixes the batch dimension as the backend does for ``max_batch_size``;
    ``properties`` (OpenVINO names) are applied on top, e.g. a bench's thread count.
    """
    ov = lazy_import("openvino")
    model = core().read_model(str(path))
    if batch > 0:
        for param in model.get_parameters():
            param.set_layout(ov.Layout("N..."))
        ov.set_batch(model, batch)
    return core().compile_model(model, "CPU", {**compile_properties(parameters or {}), **(properties or {})})


class OpenVinoModel:
    """A compiled model run like the served one: batch fixed at ``max_batch_size``, inputs zero-padded.

    ``model(batch)`` takes an NCHW float32 array of any length and returns the first output.
    ``max_batch_size`` 0 keeps the model's own (dynamic) batch.
    """

    def __init__(self, path: str | os.PathLike, parameters: dict[str, str], max_batch_size: int):
        self.batch = max_batch_size
        self.compiled = compile_model(path, parameters, batch=max_batch_size)
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch <= 0:
            return self.request.infer([batch])[0].copy()
        outs = []
        for start in range(0, len(batch), self.batch):
            chunk = batch[start:start + self.batch]
            padded = pad_batch({"x": chunk}, self.batch)["x"]
            outs.append(self.request.infer([padded])[0][:len(chunk)].copy())
        return np.concatenate(outs)

    @property
    def precision(self) -> str:
        """The inference precision OpenVINO chose (``f32``, ``bf16``)."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def runner(path: str | os.PathLike, name: str, parameters: dict[str, str], max_batch_size: int,
           spec: ModelSpec = DEFAULT_MODEL):
    """Polygraphy runner of :class:`OpenVinoModel` (compiled on activation)."""
    return callable_runner(lambda: OpenVinoModel(path, parameters, max_batch_size), name, spec)
