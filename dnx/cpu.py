"""The CPU a repository is built and served on, and which variants' numerics are safe on it.

int8 on x86 is not the same arithmetic everywhere. Without VNNI, OpenVINO's CPU plugin and ONNX
Runtime's MLAS multiply u8 x s8 with ``VPMADDUBSW``, whose 16-bit sums of two products saturate
(oneDNN's "Nuances of int8 computations"; OpenVINO's "saturation issue"). With every weight
inside +-64 a pair sum is at most 2 * 255 * 64 = 32640 < 32767, so no x86 CPU can saturate and
VNNI/AMX compute the same numbers: dnx's CPU int8 graphs are built that way ("7-bit weights")
and are safe everywhere. A full-range int8 graph (an older repository's, or the TensorRT graph)
is exact only where the CPU has VNNI. A bf16 variant needs native bf16 (AVX512_BF16 or AMX).

The flags come from ``/proc/cpuinfo``; ``DNX_CPUINFO`` names another file in its format, so a
test can describe a CPU kind the machine running it is not.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO_ENV = "DNX_CPUINFO"
# Flags that change int8/bf16 numerics or speed, in the order they are reported (records of
# ``dnx tune`` compare these lists, so new flags go at the end).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16", "avx_vnni")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# What a variant's numerics need of the CPU; the manifest records these names.
NEEDS_NOTHING = "any x86-64 CPU"
NEEDS_VNNI = "VNNI (avx512_vnni, avx_vnni or amx_int8)"
NEEDS_BF16 = "native bf16 (avx512_bf16 or amx_bf16)"
# The largest int8 weight magnitude no u8 x s8 pair sum can saturate with: 2 * 255 * 64 < 32767.
SAFE_INT8_WEIGHT = 64


@dataclass(frozen=True)
class CpuInfo:
    """A CPU's model name and the ISA flags of :data:`ISA_FLAGS` it has."""

    model: str
    flags: tuple[str, ...]

    @property
    def vnni(self) -> bool:
        """int8 dot products without 16-bit intermediate sums (VNNI or AMX)."""
        return any(f in self.flags for f in VNNI_FLAGS)

    @property
    def bf16(self) -> bool:
        """Native bfloat16 arithmetic."""
        return any(f in self.flags for f in BF16_FLAGS)

    def has(self, need: str) -> bool:
        """Whether this CPU meets ``need`` (one of the ``NEEDS_*`` names)."""
        return {NEEDS_VNNI: self.vnni, NEEDS_BF16: self.bf16}.get(need, True)

    def describe(self) -> str:
        """``AMD EPYC (avx2, fma, avx512f, avx512_vnni)``: the model and its flags, for messages."""
        return f"{self.model} ({', '.join(self.flags) or 'no AVX2'})"

    def to_dict(self) -> dict:
        """The manifest's form: model, flags, and the two facts int8 and bf16 numerics depend on."""
        return {"model": self.model, "isa": list(self.flags), "vnni": self.vnni, "bf16": self.bf16}

    @classmethod
    def from_dict(cls, data: dict) -> "CpuInfo":
        """The inverse of :meth:`to_dict` (unknown flags dropped)."""
        return cls(str(data.get("model") or "unknown CPU"), tuple(f for f in ISA_FLAGS if f in (data.get("isa") or ())))


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags of interest from ``/proc/cpuinfo`` text (pure)."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and flags is None:
            flags = set(value.split())
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU",
                   tuple(f for f in ISA_FLAGS if f in (flags or ())))


def this_cpu() -> CpuInfo:
    """This machine's CPU (or the one ``DNX_CPUINFO`` describes)."""
    path = Path(os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo")
    try:
        return parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return parse_cpuinfo("")


def numerics_need(precision: str | None, runtime: str | None, max_abs_weight: int | None = None) -> str:
    """What a CPU variant's numerics need: :data:`NEEDS_VNNI` for int8 whose weights go beyond +-64
    (or are not known to stay inside), :data:`NEEDS_BF16` for bf16, else :data:`NEEDS_NOTHING`.

    TensorRT engines run on a GPU, so they need nothing of the CPU.
    """
    if runtime == "tensorrt":
        return NEEDS_NOTHING
    if precision == "int8":
        return NEEDS_NOTHING if max_abs_weight is not None and max_abs_weight <= SAFE_INT8_WEIGHT else NEEDS_VNNI
    if precision == "bf16":
        return NEEDS_BF16
    return NEEDS_NOTHING


def numerics_record(precision: str, runtime: str, built_on: CpuInfo, max_abs_weight: int | None = None) -> dict:
    """The manifest's per-variant ``cpu`` record: the build CPU and what the numerics need to be safe."""
    need = numerics_need(precision, runtime, max_abs_weight)
    record = {"built_on": built_on.to_dict(), "safe_on": need}
    if max_abs_weight is not None:
        record["max_abs_int8_weight"] = int(max_abs_weight)
    return record


def unsafe_variants(models: dict, cpu: CpuInfo) -> list[str]:
    """One warning per model of ``models`` (name -> manifest record) whose numerics this CPU does not meet.

    A record without a ``cpu`` block (a repository from before it existed) is judged from its
    precision and runtime alone, so its int8 is taken as full range.
    """
    warnings = []
    for name, record in models.items():
        get = record.get  # a ModelRecord or its manifest dict
        if get("target") == "gpu":
            continue
        block = get("cpu") or {}
        need = block.get("safe_on") or numerics_need(get("precision"), get("runtime"))
        if cpu.has(need):
            continue
        built = block.get("built_on", {}).get("model") or "an unrecorded CPU"
        if need == NEEDS_VNNI:
            why = ("its int8 weights use the full range, which CPUs without VNNI compute with saturating "
                   "16-bit sums (wrong logits); re-export here for 7-bit weights that are exact on every x86 CPU")
        else:
            why = "this CPU has no native bf16 (emulated: slow, and not what was validated); serve the fp32 or int8 variant"
        warnings.append(f"{name} was built on {built} and needs {need}, which {cpu.describe()} lacks: {why}")
    return warnings


def saturated_pairs(activations, weights) -> tuple[int, int]:
    """``(saturated, total)`` u8 x s8 pair sums of a matrix product as a CPU without VNNI computes it.

    A model of ``VPMADDUBSW``: each output sums adjacent pairs ``a[2i]*w[2i] + a[2i+1]*w[2i+1]``
    in 16 bits, saturating beyond +-32767. ``activations`` are the quantized inputs ``[N, K]``
    (int8 ones are shifted to u8 = q + 128, as both runtimes do), ``weights`` the int8 matrix
    ``[M, K]``. It reproduced OpenVINO's logits on such a CPU exactly; with ``|w| <= 64`` it can
    find nothing, on any input.
    """
    import numpy as np

    a = np.asarray(activations)
    u = a.reshape(len(a), -1).astype(np.int32) + (128 if a.dtype == np.int8 else 0)
    w = np.asarray(weights).reshape(len(weights), -1).astype(np.int32)
    k = u.shape[1] - u.shape[1] % 2
    sums = u[:, None, 0:k:2] * w[None, :, 0:k:2] + u[:, None, 1:k:2] * w[None, :, 1:k:2]
    return int(np.count_nonzero(np.abs(sums) > 32767)), int(sums.size)
