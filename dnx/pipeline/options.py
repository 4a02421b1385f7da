"""What ``dnx export`` can be asked for, and the defaults that depend on the target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnx.errors import InputError
from dnx.exporter.engine import tensorrt_available
from dnx.kinds import Target, builds, runtimes_building
from dnx.spec import PRECISIONS, get_spec

DEFAULT_MAX_BATCH = 16
# TensorRT-only flags: meaningless when the target is explicitly the CPU.
TENSORRT_FLAGS = {"cuda_graphs": "--cuda-graphs", "hardware_compatible": "--hardware-compatible",
                  "version_compatible": "--version-compatible"}
# Appended to every "no TensorRT engines" line that does not already say how to build them.
ENGINES_HOW = " (build them on a GPU host with `make engines`)"


@dataclass
class ExportOptions:
    """Everything ``dnx export`` can be asked for."""

    out: Path = Path("model_repository")
    precisions: tuple[str, ...] = ()  # empty: the target's default set
    target: str = "auto"  # cpu | gpu | auto
    runtimes: tuple[str, ...] = ()  # empty: every runtime of the target
    weights: str = "imagenet"
    seed: int = 0
    opset: int = 17
    max_batch: int | None = None  # None: 16, or the tuned batch of OpenVINO models (see entries.SERVING_DEFAULTS)
    preferred_batch: tuple[int, ...] | None = None  # None: per-runtime serving default
    max_queue_delay_us: int | None = None
    instances: int | None = None
    threads: int | None = None
    calib_dir: Path | None = None
    calib_samples: int = 512
    calib_method: str = "max"
    calib_synthetic: bool = False
    calib_seed: int = 0
    cache_dir: Path = Path(".dnx-cache")
    keep_failing: bool = False
    random_inputs: int = 4
    workspace_mib: int = 4096
    builder_opt_level: int = 3
    hardware_compatible: bool = False
    version_compatible: bool = False
    cuda_graphs: bool = False
    progress: bool = True
    model: str = "densenet121"
    serve_variant: str | None = None  # the variant behind the <model> ensemble; None: see choose_variant
    speed_seconds: float = 1.5  # in-process timing per CPU variant (dnx.pipeline.speed); 0: none

    def check(self) -> None:
        """Raise :class:`InputError` for option values that cannot work."""
        if self.max_batch is not None and self.max_batch < 1:
            raise InputError(f"--max-batch must be at least 1 (got {self.max_batch})")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
        if self.target not in (*(t.value for t in Target), "auto"):
            raise InputError(f"--target must be cpu, gpu or auto (got {self.target!r})")
        limit = self.max_batch or DEFAULT_MAX_BATCH
        if self.preferred_batch and any(not 1 <= b <= limit for b in self.preferred_batch):
            raise InputError(f"--preferred-batch sizes must lie in 1..--max-batch ({limit})")
        if self.max_queue_delay_us is not None and self.max_queue_delay_us < 0:
            raise InputError("--max-queue-delay-us must be 0 or more")
        if self.instances is not None and self.instances < 1:
            raise InputError("--instances must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise InputError("--threads must be at least 1")
        if self.calib_samples < 1:
            raise InputError("--calib-samples must be at least 1")
        if not self.speed_seconds >= 0:
            raise InputError(f"--speed-seconds must be 0 or more (got {self.speed_seconds})")
        self._check_combinations()
        self._check_serve_variant()

    def _check_combinations(self) -> None:
        """Flags that contradict each other or the target."""
        if self.target == "cpu":
            if "tensorrt" in self.runtimes:
                raise InputError("--runtime tensorrt needs --target gpu (or auto on a GPU machine)")
            for attr, flag in TENSORRT_FLAGS.items():
                if getattr(self, attr, False):
                    raise InputError(f"{flag} applies to TensorRT engines only; drop it or pass --target gpu")
        if "int8" not in self.precisions:
            given = "--calib-dir" if self.calib_dir is not None else "--calib-synthetic" if self.calib_synthetic else None
            if given:
                asked = f"--precision {' '.join(self.precisions)}" if self.precisions else "the default precisions"
                raise InputError(f"{given} only applies to INT8, not to {asked}; add --precision int8 or drop {given}")
        only = set(self.runtimes)
        for precision in self.precisions:
            if only and not any(builds(r, precision) for r in only):
                builders = " or ".join(f"--runtime {r}" for r in runtimes_building(precision))
                raise InputError(f"--precision {precision} is not built by --runtime {', '.join(self.runtimes)}; "
                                 f"add {builders}, or drop --precision {precision}")

    def _check_serve_variant(self) -> None:
        """A --serve-variant this run cannot build is refused before any work."""
        if not self.serve_variant:
            return
        target = resolve_target(self.target)[0]
        spec = get_spec(self.model)
        possible = [spec.model_name(r, p) for r in (self.runtimes or default_runtimes(target))
                    for p in (self.precisions or default_precisions(target))]
        if self.serve_variant not in possible:
            raise InputError(f"--serve-variant {self.serve_variant!r} is not built by this run; choose one of: "
                             f"{', '.join(possible)} (or add its --precision/--runtime)")

    def record(self, target: str, reason: str) -> dict:
        """The options as the manifest records them, with the resolved target and why."""
        rec = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        rec.update({"target_resolved": target, "target_reason": reason})
        return rec


def resolve_target(target: str) -> tuple[str, str]:
    """Turn ``auto`` into ``gpu`` when TensorRT and a GPU are usable, else ``cpu``; returns (target, why)."""
    if target != "auto":
        return target, f"--target {target}"
    usable, reason = tensorrt_available()
    if usable:
        return "gpu", "auto: TensorRT and a GPU found"
    return "cpu", f"auto: {reason}; TensorRT engines will not be built{ENGINES_HOW * ('make engines' not in reason)}"


def default_precisions(target: str) -> tuple[str, ...]:
    """The precisions built when none are asked for: bf16 rides along on CPUs (OpenVINO only)."""
    return ("fp32", "bf16") if target == "cpu" else ("fp32",)


def default_runtimes(target: str) -> tuple[str, ...]:
    """Runtimes of a target: CPU → ONNX Runtime + OpenVINO; GPU → ONNX Runtime (TensorRT EP) + TensorRT."""
    return ("onnxruntime", "openvino") if target == "cpu" else ("onnxruntime", "tensorrt")
