"""The export pipeline as data: a list of stages, each returning OK / FAILED / SKIPPED.

``export(options)`` runs the stages in order inside a staging folder beside the target
repository and swaps it into place only when every stage that ran succeeded, so a failed
or interrupted run leaves the previous repository untouched.

Stages: torch → ONNX (+ parity with PyTorch) → precision variants (FP16, INT8) → OpenVINO
variants → TensorRT engines → parity gates → configs and files → manifest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np

from dnx.errors import DnxError, InputError, ParityError
from dnx.spec import DEFAULT_MODEL, PRECISIONS, ModelSpec


class Status(str, Enum):
    OK = "OK"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass
class StageResult:
    """What one stage did: status, a reason when not OK, and measured figures."""

    name: str
    status: Status
    reason: str = ""
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status.value, "reason": self.reason,
                "figures": self.figures, "seconds": round(self.seconds, 3)}


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
    max_batch: int = 16
    preferred_batch: tuple[int, ...] | None = None  # None: per-runtime tuned default
    max_queue_delay_us: int | None = None
    instances: int | None = None
    threads: int | None = None
    calib_dir: Path | None = None
    calib_samples: int = 512
    calib_method: str = "entropy"
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

    def check(self) -> None:
        """Raise :class:`InputError` for option values that cannot work."""
        if self.max_batch < 1:
            raise InputError(f"--max-batch must be at least 1 (got {self.max_batch})")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
        if self.target not in ("cpu", "gpu", "auto"):
            raise InputError(f"--target must be cpu, gpu or auto (got {self.target!r})")
        if self.preferred_batch and any(not 1 <= b <= self.max_batch for b in self.preferred_batch):
            raise InputError(f"--preferred-batch sizes must lie in 1..--max-batch ({self.max_batch})")
        if self.max_queue_delay_us is not None and self.max_queue_delay_us < 0:
            raise InputError("--max-queue-delay-us must be 0 or more")
        if self.instances is not None and self.instances < 1:
            raise InputError("--instances must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise InputError("--threads must be at least 1")
        if self.calib_samples < 1:
            raise InputError("--calib-samples must be at least 1")


@dataclass
class Variant:
    """One model of the repository being built: a runtime × precision pair and its files."""

    runtime: str  # onnxruntime | openvino | tensorrt
    precision: str
    name: str
    files: dict[str, Path]  # file name inside <model>/<version>/ -> built file
    backend: str | None = None
    platform: str | None = None
    default_model_filename: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    kind: str = "KIND_CPU"
    trt_accelerator: str | None = None
    info: dict = field(default_factory=dict)
    run: Callable[[np.ndarray], np.ndarray] | None = None  # for parity: NCHW batch -> logits
    parity: dict | None = None


@dataclass
class Context:
    """State handed from stage to stage."""

    options: ExportOptions
    spec: ModelSpec
    work: Path
    target: str = "cpu"
    runtimes: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    model: object = None
    weights: object = None
    onnx_path: Path | None = None
    onnx_files: dict[str, Path] = field(default_factory=dict)  # precision -> ONNX graph
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # "photos" / "random" -> batch
    reference: dict[str, np.ndarray] = field(default_factory=dict)  # same keys -> torch logits
    variants: list[Variant] = field(default_factory=list)
    results: list[StageResult] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


@dataclass
class ExportResult:
    """What ``export`` returns to the CLI."""

    repository: Path | None
    stages: list[StageResult]
    manifest: dict
    committed: bool

    @property
    def ok(self) -> bool:
        return self.committed and all(s.status is not Status.FAILED for s in self.stages)


def resolve_target(target: str) -> tuple[str, str]:
    """Turn ``auto`` into ``gpu`` when TensorRT and a GPU are usable, else ``cpu``; returns (target, why)."""
    if target != "auto":
        return target, f"--target {target}"
    from dnx.exporter.engine import tensorrt_available

    usable, reason = tensorrt_available()
    return ("gpu", "TensorRT and a GPU found") if usable else ("cpu", f"auto: {reason}")


def default_precisions(target: str) -> tuple[str, ...]:
    """The precisions built when none are asked for: bf16 rides along on CPUs (OpenVINO only)."""
    return ("fp32", "bf16") if target == "cpu" else ("fp32",)


def default_runtimes(target: str) -> tuple[str, ...]:
    """Runtimes of a target: CPU → ONNX Runtime + OpenVINO; GPU → ONNX Runtime (TensorRT EP) + TensorRT."""
    return ("onnxruntime", "openvino") if target == "cpu" else ("onnxruntime", "tensorrt")


# --------------------------------------------------------------------------- stages

def stage_torch_to_onnx(ctx: Context) -> StageResult:
    """Load the torchvision model, export ONNX, and gate its parity with PyTorch."""
    from dnx.exporter.torch_export import OnnxFromTorch, load_torch_model, torch_forward
    from dnx.preprocess import photo_batch

    ctx.model, ctx.weights = load_torch_model(ctx.spec, ctx.options.weights, ctx.options.seed)
    ctx.onnx_path = ctx.work / "model.fp32.onnx"
    ctx.onnx_files["fp32"] = ctx.onnx_path
    opset = OnnxFromTorch(ctx.model, ctx.spec, ctx.options.opset)(ctx.onnx_path)
    rng = np.random.default_rng(ctx.options.seed)
    ctx.inputs = {"photos": photo_batch(ctx.spec)}
    if ctx.options.random_inputs:
        ctx.inputs["random"] = rng.standard_normal((ctx.options.random_inputs, *ctx.spec.input_shape), dtype=np.float32)
    ctx.reference = {k: torch_forward(ctx.model, v) for k, v in ctx.inputs.items()}
    session = _ort_session(ctx.onnx_path)
    got = {k: session.run(None, {ctx.spec.input_name: v})[0] for k, v in ctx.inputs.items()}
    passed, reason, figs = _gate(ctx.reference, got, ctx.spec.gates["fp32"], ctx.weights.trained)
    figures = {"opset": opset, "onnx_bytes": ctx.onnx_path.stat().st_size, **figs}
    if not passed:
        return StageResult("torch_to_onnx", Status.FAILED, f"ONNX vs PyTorch: {reason}", figures)
    return StageResult("torch_to_onnx", Status.OK, "", figures)


def _ort_session(path: Path, threads: int | None = None):
    from dnx._lazy import lazy_import

    ort = lazy_import("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _gate(reference, got, gate, trained):
    # TEMPORARY until dnx.parity lands
    ref = np.concatenate([reference[k] for k in reference]).astype(np.float64)
    out = np.concatenate([got[k] for k in reference]).astype(np.float64)
    err = np.abs(ref - out)
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    figs = {"max_abs": float(err.max()), "mean_abs": float(err.mean()), "min_cosine": float(cos.min())}
    if gate.max_abs is not None and figs["max_abs"] > gate.max_abs:
        return False, f"max abs error {figs['max_abs']:.3g} > {gate.max_abs:g}", figs
    if gate.min_cosine is not None and figs["min_cosine"] < gate.min_cosine:
        return False, f"cosine {figs['min_cosine']:.6f} < {gate.min_cosine}", figs
    return True, "", figs


def stage_onnxruntime_variants(ctx: Context) -> StageResult:
    """ONNX Runtime variants: one per requested precision ONNX Runtime can run."""
    built = []
    for precision in ctx.precisions:
        path = ctx.onnx_files.get(precision)
        if path is None:
            continue
        v = Variant(
            runtime="onnxruntime", precision=precision, name=ctx.spec.model_name("onnxruntime", precision),
            files={"model.onnx": path}, backend="onnxruntime",
        )
        _apply_tuning(ctx, v)
        v.run = _ort_runner(path)
        ctx.variants.append(v)
        built.append(v.name)
    if not built:
        return StageResult("onnxruntime_variants", Status.SKIPPED, "no precision ONNX Runtime runs was requested")
    return StageResult("onnxruntime_variants", Status.OK, "", {"models": built})


def _ort_runner(path: Path):
    session = None

    def run(batch: np.ndarray) -> np.ndarray:
        nonlocal session
        session = session or _ort_session(path)
        return session.run(None, {session.get_inputs()[0].name: batch})[0]

    return run


# Defaults measured on a 2-core CPU (perf/BENCHMARKS.md): batching hurts ONNX Runtime there,
# so its dynamic batcher forms batches only from requests already queued (no delay).
TUNING = {
    ("onnxruntime", "cpu"): {"preferred_batch": (), "max_queue_delay_us": 0, "instances": 1},
    ("onnxruntime", "gpu"): {"preferred_batch": (4, 8), "max_queue_delay_us": 100, "instances": 1},
    ("openvino", "cpu"): {"preferred_batch": (), "max_queue_delay_us": 0, "instances": 1},
    ("tensorrt", "gpu"): {"preferred_batch": (4, 8), "max_queue_delay_us": 100, "instances": 1},
}


def _apply_tuning(ctx: Context, v: Variant) -> None:
    o = ctx.options
    d = TUNING.get((v.runtime, ctx.target), TUNING[("onnxruntime", "cpu")])
    v.preferred_batch = tuple(o.preferred_batch) if o.preferred_batch is not None else tuple(
        b for b in d["preferred_batch"] if b <= o.max_batch)
    v.max_queue_delay_us = o.max_queue_delay_us if o.max_queue_delay_us is not None else d["max_queue_delay_us"]
    v.instances = o.instances or d["instances"]
    v.kind = "KIND_GPU" if ctx.target == "gpu" else "KIND_CPU"
    if v.runtime == "onnxruntime":
        if ctx.target == "cpu":
            threads = o.threads or max(1, (os.cpu_count() or 1) // v.instances)
            v.parameters.update({"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"})
        else:
            v.trt_accelerator = "fp16" if v.precision == "fp16" else None


def stage_parity(ctx: Context) -> StageResult:
    """Gate every variant against the PyTorch FP32 reference on photos and random inputs."""
    rows, failed = {}, []
    for v in ctx.variants:
        if v.run is None:
            v.parity = {"passed": None, "reason": "no runner on this machine"}
            continue
        got = {k: v.run(batch) for k, batch in ctx.inputs.items()}
        passed, reason, figs = _gate(ctx.reference, got, ctx.spec.gates[v.precision], ctx.weights.trained)
        v.parity = {"passed": passed, "reason": reason, **figs}
        rows[v.name] = v.parity
        if not passed:
            failed.append(f"{v.name} ({reason})")
    if failed:
        return StageResult("parity", Status.FAILED, "failed the parity gate: " + "; ".join(failed), {"models": rows})
    return StageResult("parity", Status.OK, "", {"models": rows})


def stage_write_repository(ctx: Context, repo: Path) -> StageResult:
    """Write config.pbtxt, labels and model files of every variant that passed (or --keep-failing)."""
    from dnx.exporter.torch_export import imagenet_labels, sha256_file
    from dnx.model_repository.layout import LABELS_NAME, atomic_write_text, model_dir
    from dnx.model_repository.render import TritonConfig, render_config

    labels = "\n".join(imagenet_labels(ctx.spec)) + "\n"
    written = []
    for v in ctx.variants:
        if v.parity and v.parity.get("passed") is False and not ctx.options.keep_failing:
            continue
        cfg = TritonConfig(
            name=v.name, max_batch_size=ctx.options.max_batch,
            input_name=ctx.spec.input_name, output_name=ctx.spec.output_name,
            input_dims=ctx.spec.input_shape, output_dims=(ctx.spec.num_classes,),
            backend=v.backend, platform=v.platform, default_model_filename=v.default_model_filename,
            label_filename=LABELS_NAME, instance_count=v.instances, instance_kind=v.kind,
            preferred_batch_sizes=list(v.preferred_batch), max_queue_delay_us=v.max_queue_delay_us,
            parameters=dict(v.parameters), cuda_graphs=ctx.options.cuda_graphs and v.runtime == "tensorrt",
            trt_accelerator=v.trt_accelerator,
        )
        text = render_config(cfg)
        vdir = model_dir(repo, v.name)
        vdir.mkdir(parents=True, exist_ok=True)
        files = {}
        for fname, src in v.files.items():
            shutil.copyfile(src, vdir / fname)
            files[f"1/{fname}"] = sha256_file(vdir / fname)
        atomic_write_text(repo / v.name / "config.pbtxt", text)
        atomic_write_text(repo / v.name / LABELS_NAME, labels)
        ctx.manifest["models"][v.name] = {
            "runtime": v.runtime, "precision": v.precision, "backend": v.backend, "platform": v.platform,
            "target": ctx.target, "files": files, "opset": ctx.options.opset,
            "config": {"max_batch_size": cfg.max_batch_size, "instance_count": cfg.instance_count,
                       "instance_kind": cfg.instance_kind, "preferred_batch_sizes": cfg.preferred_batch_sizes,
                       "max_queue_delay_us": cfg.max_queue_delay_us, "parameters": cfg.parameters},
            "parity": v.parity, **v.info,
        }
        written.append(v.name)
    if not written:
        return StageResult("write_repository", Status.FAILED, "no model passed; nothing to write")
    return StageResult("write_repository", Status.OK, "", {"models": written})


@dataclass(frozen=True)
class Stage:
    """A pipeline step: ``run(ctx)`` is called when ``when(ctx)`` holds."""

    name: str
    run: Callable[[Context], StageResult]
    when: Callable[[Context], bool] = lambda ctx: True


STAGES: list[Stage] = [
    Stage("torch_to_onnx", stage_torch_to_onnx),
    Stage("onnxruntime_variants", stage_onnxruntime_variants, lambda c: "onnxruntime" in c.runtimes),
    Stage("parity", stage_parity),
]


def _run_stage(stage: Stage, ctx: Context) -> StageResult:
    t0 = time.perf_counter()
    try:
        result = stage.run(ctx)
    except DnxError as exc:
        if isinstance(exc, InputError):
            raise  # a user error stops the run with its own one-line message
        result = StageResult(stage.name, Status.FAILED, str(exc))
    result.seconds = time.perf_counter() - t0
    return result


def export(options: ExportOptions, on_stage: Callable[[StageResult], None] | None = None) -> ExportResult:
    """Build a Triton model repository at ``options.out``.

    The repository is assembled in a staging folder beside ``options.out`` and swapped in only
    when no stage failed (``--keep-failing`` lets parity-failing variants through); otherwise the
    previous repository is left untouched. ``on_stage`` is called after each stage.
    """
    from dnx.manifest import new_manifest, write_manifest
    from dnx.model_repository.layout import StagedRepository
    from dnx.spec import get_spec

    options.check()
    spec = get_spec(options.model)
    target, target_reason = resolve_target(options.target)
    with StagedRepository(options.out) as staged, tempfile.TemporaryDirectory(prefix="dnx-work-") as work:
        ctx = Context(options=options, spec=spec, work=Path(work), target=target)
        ctx.precisions = tuple(dict.fromkeys(options.precisions or default_precisions(target)))
        ctx.runtimes = tuple(dict.fromkeys(options.runtimes or default_runtimes(target)))
        for stage in STAGES:
            if not stage.when(ctx):
                continue
            result = _run_stage(stage, ctx)
            ctx.results.append(result)
            if on_stage:
                on_stage(result)
            if result.status is Status.FAILED and not (stage.name == "parity" and options.keep_failing):
                return ExportResult(None, ctx.results, ctx.manifest, committed=False)
        ctx.manifest = new_manifest(spec, ctx.weights.to_dict(), _options_record(options, target, target_reason))
        result = stage_write_repository(ctx, staged.path)
        ctx.results.append(result)
        if on_stage:
            on_stage(result)
        if result.status is Status.FAILED:
            return ExportResult(None, ctx.results, ctx.manifest, committed=False)
        ctx.manifest["stages"] = [r.to_dict() for r in ctx.results]
        write_manifest(staged.path, ctx.manifest)
        repo = staged.commit()
    return ExportResult(repo, ctx.results, ctx.manifest, committed=True)


def _options_record(options: ExportOptions, target: str, reason: str) -> dict:
    rec = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()}
    rec.update({"target_resolved": target, "target_reason": reason})
    return rec
