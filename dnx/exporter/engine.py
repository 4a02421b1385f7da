"""TensorRT engines (``model.plan``) from the precision-specific ONNX files.

One build path for TensorRT 10 and 11: a strongly typed network, so the precision comes
from the graph (FP16 conversion, Q/DQ nodes) and no FP16/INT8 builder flag is ever set.
Engines load only in the same TensorRT version and GPU architecture (unless built
version/hardware compatible), so the TensorRT version, GPU name and compute capability are
recorded beside the plan.

The decisions (profile shapes, which flags to set or clear) are pure functions that are
tested without TensorRT; :class:`EngineFromOnnx` only wires them into the TensorRT API.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.errors import DnxError, InputError, MissingDependencyError
from dnx.hashing import sha256_bytes, sha256_file
from dnx.model_repository.layout import atomic_write_bytes
from dnx.runtimes import tensorrt as trt_runtime
from dnx.runtimes.tensorrt import gpu_info, parse_nvidia_smi  # noqa: F401 - this module's names before they moved
from dnx.runtimes.tensorrt import available as tensorrt_available  # noqa: F401 - as above
from dnx.spec import DEFAULT_MODEL, ModelSpec

DEFAULT_TIMING_CACHE = Path(".dnx-cache") / "tensorrt" / "timing.cache"
# Flags that must never be set: precision belongs in the ONNX graph (removed in TensorRT 11).
PRECISION_FLAGS = frozenset({"FP16", "BF16", "INT8", "FP8", "FP4", "INT4"})


@dataclass(frozen=True)
class EngineSettings:
    """How to build one engine. ``opt_batch_size`` defaults to ``max_batch_size``."""

    max_batch_size: int = 8
    opt_batch_size: int | None = None
    workspace_mib: int = 4096
    optimization_level: int = 3  # TensorRT's default; 0-5, higher builds longer
    hardware_compatible: bool = False  # AMPERE_PLUS: one plan for Ampere and newer, slower
    version_compatible: bool = False  # loads in later TensorRT minors of the same major
    timing_cache: str | None = str(DEFAULT_TIMING_CACHE)  # None: no cache file
    tf32: bool = False  # off: FP32 engines must meet the 1e-3 max-abs gate

    def validated(self) -> "EngineSettings":
        """Return self, or raise :class:`InputError` naming the bad value."""
        if self.max_batch_size < 1:
            raise InputError(f"max batch size must be >= 1, got {self.max_batch_size}")
        opt = self.opt_batch_size
        if opt is not None and not 1 <= opt <= self.max_batch_size:
            raise InputError(f"opt batch size {opt} must be between 1 and the max batch size {self.max_batch_size}")
        if not 0 <= self.optimization_level <= 5:
            raise InputError(f"builder optimization level must be 0-5, got {self.optimization_level}")
        if self.workspace_mib < 1:
            raise InputError(f"TensorRT workspace must be at least 1 MiB, got {self.workspace_mib}")
        return self

    def to_dict(self) -> dict:
        """JSON-ready settings for the manifest."""
        return asdict(self)


def profile_shapes(input_shape: tuple[int, ...], settings: EngineSettings) -> tuple[tuple[int, ...], ...]:
    """``(min, opt, max)`` shapes of the one optimization profile: batch 1 / opt / max_batch_size."""
    settings.validated()
    opt = settings.opt_batch_size or settings.max_batch_size
    return (1, *input_shape), (opt, *input_shape), (settings.max_batch_size, *input_shape)


def network_flags(available: set[str]) -> list[str]:
    """Network creation flags: STRONGLY_TYPED where the enum has it (TensorRT 10; implied in 11)."""
    return ["STRONGLY_TYPED"] if "STRONGLY_TYPED" in available else []


def builder_flags(settings: EngineSettings, available: set[str]) -> tuple[list[str], list[str]]:
    """``(flags to set, flags to clear)`` given the BuilderFlag names this TensorRT has."""
    to_set, to_clear = [], []
    if settings.version_compatible:
        if "VERSION_COMPATIBLE" not in available:
            raise InputError("this TensorRT has no VERSION_COMPATIBLE builder flag; drop the version-compatible option")
        to_set.append("VERSION_COMPATIBLE")
    if "TF32" in available:
        (to_set if settings.tf32 else to_clear).append("TF32")
    assert not PRECISION_FLAGS & set(to_set)
    return to_set, to_clear


def hardware_compatibility_level(settings: EngineSettings) -> str | None:
    """Name of the HardwareCompatibilityLevel member to set, or None for a native plan."""
    return "AMPERE_PLUS" if settings.hardware_compatible else None


def _members(enum) -> set[str]:
    return set(getattr(enum, "__members__", {})) or {n for n in dir(enum) if n.isupper()}


class EngineFromOnnx:
    """TensorRT plan from an ONNX file: ``EngineFromOnnx(src, settings)(dst) -> metadata``.

    ``build()`` returns ``(plan bytes, metadata)`` without writing the plan. The timing cache
    file (``settings.timing_cache``) is loaded before and saved after every build, so builds
    of the fp32/fp16/int8 variants reuse each other's tactic timings.
    """

    def __init__(self, src: str | os.PathLike, settings: EngineSettings | None = None, *, precision: str = "fp32",
                 spec: ModelSpec = DEFAULT_MODEL):
        self.src = Path(src)
        if not self.src.is_file():
            raise InputError(f"{self.src}: no such ONNX file; export the ONNX variant first")
        self.settings = (settings or EngineSettings()).validated()
        self.precision, self.spec = precision, spec

    def __call__(self, dst: str | os.PathLike) -> dict:
        """Build and write the plan to ``dst`` atomically; return the metadata for the manifest."""
        plan, meta = self.build()
        atomic_write_bytes(dst, plan)
        return meta

    def build(self) -> tuple[bytes, dict]:
        """Build the engine; return ``(plan, metadata)``."""
        ok, reason = trt_runtime.available()
        if not ok:
            raise MissingDependencyError(reason)
        trt = lazy_import("tensorrt")
        start = time.perf_counter()
        source_sha = sha256_file(self.src)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        net_flags = network_flags(_members(trt.NetworkDefinitionCreationFlag))
        for name in net_flags:
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        s = self.settings
        if (s.hardware_compatible or s.version_compatible) and "NATIVE_INSTANCENORM" in _members(getattr(trt, "OnnxParserFlag", object)):
            parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)  # required by compatible builds
        if not parser.parse_from_file(str(self.src)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors)) or "unknown error"
            raise InputError(f"TensorRT could not parse {self.src}: {errors}; check the ONNX export (opset, ops)")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.workspace_mib << 20)
        config.builder_optimization_level = s.optimization_level
        to_set, to_clear = builder_flags(s, _members(trt.BuilderFlag))
        for name in to_set:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in to_clear:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        level = hardware_compatibility_level(s)
        if level:
            config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)

        shapes = profile_shapes(self.spec.input_shape, s)
        profile = builder.create_optimization_profile()
        input_name = network.get_input(0).name
        profile.set_shape(input_name, *shapes)
        config.add_optimization_profile(profile)

        cache_info = self._load_timing_cache(config)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise DnxError(f"TensorRT failed to build {self.src} (see its log above); try a larger workspace or a lower max batch size")
        plan = bytes(plan)
        cache_info.update(self._save_timing_cache(config))
        gpu = trt_runtime.gpu_info() or {}
        return plan, {
            "precision": self.precision,
            "tensorrt_version": trt.__version__,
            "gpu_name": gpu.get("name"),
            "compute_capability": gpu.get("compute_capability"),
            "source_sha256": source_sha,
            "sha256": sha256_bytes(plan),
            "network_flags": net_flags,
            "builder_flags_set": to_set,
            "builder_flags_cleared": to_clear,
            "hardware_compatibility_level": level,
            "profile": {"input": input_name, "min": shapes[0], "opt": shapes[1], "max": shapes[2]},
            "settings": s.to_dict(),
            "timing_cache": cache_info,
            "io": _plan_io(trt, logger, plan),
            "build_seconds": round(time.perf_counter() - start, 1),
        }

    def _load_timing_cache(self, config) -> dict:
        path = Path(self.settings.timing_cache) if self.settings.timing_cache else None
        blob = path.read_bytes() if path is not None and path.is_file() else b""
        cache = config.create_timing_cache(blob)
        reused = bool(blob) and config.set_timing_cache(cache, ignore_mismatch=False)
        if not reused:  # absent, or written by another TensorRT/GPU: start a fresh one
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        return {"path": str(path) if path else None, "loaded_bytes": len(blob), "reused": reused}

    def _save_timing_cache(self, config) -> dict:
        if not self.settings.timing_cache:
            return {}
        data = bytes(config.get_timing_cache().serialize())
        atomic_write_bytes(self.settings.timing_cache, data)
        return {"saved_bytes": len(data)}


def _plan_io(trt, logger, plan: bytes) -> list[dict]:
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise DnxError("TensorRT built a plan it cannot deserialize; rebuild, and report this bug if it persists")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        entry = {"name": name, "mode": str(mode).split(".")[-1], "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
                 "shape": list(engine.get_tensor_shape(name))}
        if mode == trt.TensorIOMode.INPUT:
            entry["profile"] = [list(s) for s in engine.get_tensor_profile_shape(name, 0)]
        io.append(entry)
    return io
