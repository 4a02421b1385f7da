"""dnx's words for its kinds of things, one spelling each, and which runtime builds which precision.

Each kind is a ``str`` enum: a member compares, hashes, prints and serialises as its value, so
``Runtime.OPENVINO == "openvino"``, manifests and configs keep their plain strings, and a
misspelt name fails where it is made instead of in a comparison that is quietly false.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Runtime(_Word):
    """What runs a variant (a model name's ``<runtime>`` tag comes from :data:`dnx.spec.RUNTIME_TAGS`)."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


class Precision(_Word):
    """The arithmetic a variant computes in."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class Target(_Word):
    """Where a repository is served: KIND_CPU or KIND_GPU instances."""

    CPU = "cpu"
    GPU = "gpu"


class Backend(_Word):
    """A served model's backend (or platform) kind, as dnx tunes and reports it."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT_PLAN = "tensorrt_plan"
    PYTHON = "python"


class Objective(_Word):
    """What ``dnx tune`` optimises (docs/TUNING.md)."""

    LOAD = "load"
    SATURATION = "saturation"
    LATENCY = "latency"


# Which runtime builds which precision: the one table preflight, the exporter and the stages read.
BUILDS: dict[Runtime, tuple[Precision, ...]] = {
    Runtime.ONNXRUNTIME: (Precision.FP32, Precision.FP16, Precision.INT8),
    Runtime.OPENVINO: (Precision.FP32, Precision.BF16, Precision.INT8),
    Runtime.TENSORRT: (Precision.FP32, Precision.FP16, Precision.INT8),
}
# Backend and platform names as Triton configs spell them -> the kind (the rest are kinds already).
BACKEND_SPELLINGS = {"onnxruntime_onnx": Backend.ONNXRUNTIME, "tensorrt": Backend.TENSORRT_PLAN}


def builds(runtime: str, precision: str) -> bool:
    """Whether ``runtime`` builds a ``precision`` variant."""
    return precision in BUILDS.get(runtime, ())


def runtimes_building(precision: str) -> tuple[Runtime, ...]:
    """The runtimes that build a ``precision`` variant, in :data:`BUILDS` order."""
    return tuple(r for r, ps in BUILDS.items() if precision in ps)


def backend_kind_of(name: str) -> str:
    """A config's backend or platform name as its :class:`Backend` kind (unknown names pass through)."""
    return BACKEND_SPELLINGS.get(name, name)
