"""The export pipeline as data: a list of stages, each returning OK / FAILED / SKIPPED.

``export(options)`` runs the stages in order inside a staging folder beside the target
repository and swaps it into place only when every stage that ran succeeded, so a failed
or interrupted run leaves the previous repository untouched.

Stages: torch → ONNX (+ parity with PyTorch) → precision variants (FP16, INT8) → OpenVINO
variants → TensorRT engines → parity gates → configs and files → manifest.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np

from dnx.errors import DnxError, InputError
from dnx.spec import PRECISIONS, ModelSpec


DEFAULT_MAX_BATCH = 16


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
    max_batch: int | None = None  # None: 16, or the tuned batch of OpenVINO models (see TUNING)
    preferred_batch: tuple[int, ...] | None = None  # None: per-runtime tuned default
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

    def check(self) -> None:
        """Raise :class:`InputError` for option values that cannot work."""
        if self.max_batch is not None and self.max_batch < 1:
            raise InputError(f"--max-batch must be at least 1 (got {self.max_batch})")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
        if self.target not in ("cpu", "gpu", "auto"):
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


@dataclass
class ModelEntry:
    """One model of the repository being built: a runtime × precision pair and its files."""

    runtime: str  # onnxruntime | openvino | tensorrt
    precision: str
    name: str
    files: dict[str, Path]  # file name inside <model>/<version>/ -> built file
    max_batch_size: int = DEFAULT_MAX_BATCH
    backend: str | None = None
    platform: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    kind: str = "KIND_CPU"
    trt_accelerator: str | None = None
    info: dict = field(default_factory=dict)
    runner: object = None  # Polygraphy runner or callable for the parity stage
    parity: dict | None = None
    notes: str = ""


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
    onnx_files: dict[str, Path] = field(default_factory=dict)  # precision -> ONNX graph
    onnx_info: dict[str, dict] = field(default_factory=dict)  # precision -> converter info
    inputs: np.ndarray | None = None  # parity inputs: photographs + seeded random tensors
    inputs_info: dict = field(default_factory=dict)
    reference: np.ndarray | None = None  # PyTorch FP32 logits of ``inputs``
    models: list[ModelEntry] = field(default_factory=list)
    parity: object = None  # dnx.parity.ParityReport
    results: list[StageResult] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    previous_bytes: int = 0  # size of the repository this run replaces (for disk-space estimates)


@dataclass
class ExportResult:
    """What ``export`` returns to the CLI."""

    repository: Path | None
    stages: list[StageResult]
    manifest: dict
    committed: bool
    parity: object = None  # dnx.parity.ParityReport


_ENGINES_HOW = " (build them on a GPU host with `make engines`)"


def resolve_target(target: str) -> tuple[str, str]:
    """Turn ``auto`` into ``gpu`` when TensorRT and a GPU are usable, else ``cpu``; returns (target, why)."""
    if target != "auto":
        return target, f"--target {target}"
    from dnx.exporter.engine import tensorrt_available

    usable, reason = tensorrt_available()
    if usable:
        return "gpu", "auto: TensorRT and a GPU found"
    return "cpu", f"auto: {reason}; TensorRT engines will not be built{_ENGINES_HOW * ('make engines' not in reason)}"


def default_precisions(target: str) -> tuple[str, ...]:
    """The precisions built when none are asked for: bf16 rides along on CPUs (OpenVINO only)."""
    return ("fp32", "bf16") if target == "cpu" else ("fp32",)


def default_runtimes(target: str) -> tuple[str, ...]:
    """Runtimes of a target: CPU → ONNX Runtime + OpenVINO; GPU → ONNX Runtime (TensorRT EP) + TensorRT."""
    return ("onnxruntime", "openvino") if target == "cpu" else ("onnxruntime", "tensorrt")


# --------------------------------------------------------------------------- tuning

@dataclass(frozen=True)
class Tuning:
    """Dynamic batching and instance defaults of one runtime on one target."""

    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1


# Measured on the 2-core developer machine (perf/BENCHMARKS.md): batching hurts ONNX Runtime
# there, so its dynamic batcher only merges requests that are already queued (no delay).
# OpenVINO's defaults come from dnx.exporter.openvino.TUNED. GPU defaults follow Triton's
# usual starting point (preferred = a couple of batch sizes, 100 µs delay).
TUNING = {
    ("onnxruntime", "cpu"): Tuning(),
    ("onnxruntime", "gpu"): Tuning(preferred_batch=(4, 8), max_queue_delay_us=100),
    ("tensorrt", "gpu"): Tuning(preferred_batch=(4, 8), max_queue_delay_us=100),
}


def _tune(ctx: Context, m: ModelEntry) -> ModelEntry:
    o = ctx.options
    t = TUNING.get((m.runtime, ctx.target), Tuning())
    m.max_batch_size = o.max_batch or DEFAULT_MAX_BATCH
    m.preferred_batch = tuple(o.preferred_batch) if o.preferred_batch is not None else tuple(
        b for b in t.preferred_batch if b <= m.max_batch_size)
    m.max_queue_delay_us = o.max_queue_delay_us if o.max_queue_delay_us is not None else t.max_queue_delay_us
    m.instances = o.instances or t.instances
    m.kind = "KIND_GPU" if ctx.target == "gpu" else "KIND_CPU"
    return m


# --------------------------------------------------------------------------- stages

def stage_torch_to_onnx(ctx: Context) -> StageResult:
    """Load the torchvision model, export ONNX, and gate its parity with PyTorch (max abs ≤ 1e-3)."""
    from dnx.exporter.torch_export import OnnxFromTorch, load_torch_model, torch_forward
    from dnx.parity import compare_arrays, run_outputs
    from dnx.preprocess import probe_inputs
    from dnx.runtimes import onnxruntime

    ctx.model, ctx.weights = load_torch_model(ctx.spec, ctx.options.weights, ctx.options.seed)
    path = ctx.work / "model.fp32.onnx"
    opset = OnnxFromTorch(ctx.model, ctx.spec, ctx.options.opset)(path)
    ctx.onnx_files["fp32"] = path
    ctx.inputs, ctx.inputs_info = probe_inputs(ctx.spec, random=ctx.options.random_inputs, seed=ctx.options.seed)
    ctx.reference = torch_forward(ctx.model, ctx.inputs)
    got = run_outputs(onnxruntime.runner(path, "onnx-fp32"), ctx.inputs, ctx.spec)
    row = compare_arrays("onnx-fp32", "fp32", ctx.reference, got, runtime="onnxruntime", spec=ctx.spec,
                         trained=ctx.weights.trained)
    m = row.metrics
    figures = {"opset": opset, "onnx_mb": round(path.stat().st_size / 2**20, 1), "weights": ctx.weights.source,
               "max_abs": m.max_abs if m else None, "cos_min": m.cos_min if m else None}
    if not row.passed:
        return StageResult("torch_to_onnx", Status.FAILED, f"ONNX Runtime vs PyTorch: {row.reason}", figures)
    return StageResult("torch_to_onnx", Status.OK, "", figures)


def stage_fp16_onnx(ctx: Context) -> StageResult:
    """FP16 ONNX graph with FP32 inputs/outputs; nodes that overflow stay FP32."""
    from dnx.exporter.precision import Fp16FromOnnx

    dst = ctx.work / "model.fp16.onnx"
    probe = {ctx.spec.input_name: ctx.inputs}
    info = Fp16FromOnnx(ctx.onnx_files["fp32"], probe=probe, spec=ctx.spec)(dst)
    ctx.onnx_files["fp16"], ctx.onnx_info["fp16"] = dst, info
    return StageResult("fp16_onnx", Status.OK, "", {"fp32_nodes": len(info["fp32_nodes"]), "seconds": info["seconds"]})


def stage_int8_onnx(ctx: Context) -> StageResult:
    """INT8 ONNX graphs with explicit Q/DQ, calibrated on images (cached).

    TensorRT and OpenVINO get symmetric int8 (zero points 0, what TensorRT compiles). ONNX
    Runtime on a CPU gets uint8 activations with zero points instead: only then does it fuse
    every Conv into a quantized kernel (120 of 120, against 66 with signed activations).
    Measured gains differ by run (perf/tuning.md): 1.8-2.1x FP32 in one interleaved run, none
    in the quiet ``make bench`` run on an AMD EPYC.
    """
    from dnx.exporter.calibration import calibration_set
    from dnx.exporter.precision import Int8FromOnnx

    o = ctx.options
    calib = calibration_set(o.calib_dir, o.calib_samples, seed=o.calib_seed, synthetic=o.calib_synthetic,
                            spec=ctx.spec, progress=o.progress)
    graphs = {}
    if ctx.target == "cpu" and "onnxruntime" in ctx.runtimes:
        graphs["int8_cpu"] = False
    if ctx.target == "gpu" or {"openvino", "tensorrt"} & set(ctx.runtimes):
        graphs["int8"] = True
    figures = {"samples": calib.count, "method": o.calib_method, "synthetic": calib.synthetic}
    for key, symmetric in graphs.items():
        dst = ctx.work / f"model.{key}.onnx"
        info = Int8FromOnnx(ctx.onnx_files["fp32"], calib, method=o.calib_method, symmetric=symmetric,
                            cache_dir=Path(o.cache_dir) / "calib", progress=o.progress, spec=ctx.spec)(dst)
        ctx.onnx_files[key], ctx.onnx_info[key] = dst, info
        figures[f"{key}_cache_hit"] = info["cache_hit"]
        figures[f"{key}_q_nodes"] = info["qdq"]["quantize_linear"]
    return StageResult("int8_onnx", Status.OK, _CALIB_NOTES.get(calib.kind, "").removeprefix("INT8 "), figures)


def stage_onnxruntime_models(ctx: Context) -> StageResult:
    """ONNX Runtime models (backend "onnxruntime"): one per precision graph built."""
    from dnx.runtimes import onnxruntime

    built, skipped = [], []
    for precision in ctx.precisions:
        key = f"{precision}_cpu" if f"{precision}_cpu" in ctx.onnx_files else precision
        path = ctx.onnx_files.get(key)
        if path is None:
            skipped.append(f"{precision}: no ONNX Runtime variant (OpenVINO builds it)")
            continue
        name = ctx.spec.model_name("onnxruntime", precision)
        m = _tune(ctx, ModelEntry("onnxruntime", precision, name, {"model.onnx": path}, backend="onnxruntime"))
        if ctx.target == "cpu":
            m.parameters = onnxruntime.cpu_parameters(ctx.options.threads or max(1, (os.cpu_count() or 1) // m.instances))
        else:
            m.trt_accelerator = "fp16" if precision == "fp16" else None
        m.info = {"onnx": ctx.onnx_info.get(key, {})}
        m.runner = onnxruntime.runner(path, name, m.parameters)
        m.notes = _notes(ctx, precision)
        ctx.models.append(m)
        built.append(name)
    return StageResult("onnxruntime_models", Status.OK if built else Status.SKIPPED, "; ".join(skipped), {"models": built})


def stage_openvino_models(ctx: Context) -> StageResult:
    """OpenVINO IR models (backend "openvino") for the CPU: fp32, bf16 where native, int8 from Q/DQ."""
    from dnx.exporter.openvino import OPENVINO_PRECISIONS, openvino_variant, unsupported_reason
    from dnx.runtimes import openvino

    o = ctx.options
    built, skipped = [], []
    for precision in ctx.precisions:
        reason = unsupported_reason(precision) if precision in OPENVINO_PRECISIONS else \
            f"OpenVINO CPU variants are {', '.join(OPENVINO_PRECISIONS)}"
        if reason:
            skipped.append(f"{precision}: {reason}")
            continue
        src = ctx.onnx_files["int8" if precision == "int8" else "fp32"]
        v = openvino_variant(src, precision, ctx.work / f"openvino-{precision}", max_batch_size=o.max_batch,
                             instance_count=o.instances, threads=o.threads, max_queue_delay_us=o.max_queue_delay_us,
                             preferred_batch_sizes=tuple(o.preferred_batch) if o.preferred_batch is not None else None)
        m = openvino_entry(v, ctx.spec)
        m.info["onnx"] = ctx.onnx_info.get(precision, {})
        m.runner = openvino.runner(v.files["model.xml"], m.name, m.parameters, m.max_batch_size, ctx.spec)
        m.notes = _notes(ctx, precision)
        ctx.models.append(m)
        built.append(m.name)
    return StageResult("openvino_models", Status.OK if built else Status.SKIPPED, "; ".join(skipped), {"models": built})


def stage_tensorrt_engines(ctx: Context) -> StageResult:
    """TensorRT plans (platform "tensorrt_plan") from each precision graph; SKIPPED without TensorRT + GPU."""
    from dnx.exporter.engine import EngineFromOnnx, EngineSettings, tensorrt_available

    usable, reason = tensorrt_available()
    if not usable:
        return StageResult("tensorrt_engines", Status.SKIPPED,
                           f"{reason}; engines were not built{_ENGINES_HOW * ('make engines' not in reason)}")
    from dnx.runtimes import tensorrt

    o = ctx.options
    built = []
    for precision in ctx.precisions:
        src = ctx.onnx_files.get(precision)
        if src is None:
            continue
        name = ctx.spec.model_name("tensorrt", precision)
        m = _tune(ctx, ModelEntry("tensorrt", precision, name, {}, platform="tensorrt_plan"))
        settings = EngineSettings(max_batch_size=m.max_batch_size, workspace_mib=o.workspace_mib,
                                  optimization_level=o.builder_opt_level, hardware_compatible=o.hardware_compatible,
                                  version_compatible=o.version_compatible,
                                  timing_cache=str(Path(o.cache_dir) / "tensorrt" / "timing.cache"))
        plan = ctx.work / f"{name}.plan"
        meta = EngineFromOnnx(src, settings, precision=precision, spec=ctx.spec)(plan)
        m.files = {"model.plan": plan}
        m.info = {"tensorrt": {"version": meta["tensorrt_version"], "image": os.environ.get("DNX_BUILD_IMAGE"), **meta},
                  "onnx": ctx.onnx_info.get(precision, {})}
        m.runner = tensorrt.runner(plan, name)
        m.notes = _notes(ctx, precision)
        ctx.models.append(m)
        built.append(name)
    return StageResult("tensorrt_engines", Status.OK, "", {"models": built})


def stage_parity(ctx: Context) -> StageResult:
    """Gate every model against the PyTorch FP32 reference (Polygraphy comparator)."""
    from dnx.parity import Variant, check_parity

    variants = [Variant(m.name, m.precision, m.runner, m.runtime, m.notes) for m in ctx.models]
    report = check_parity(ctx.reference, variants, inputs=ctx.inputs, inputs_info=ctx.inputs_info, spec=ctx.spec,
                          trained=ctx.weights.trained)
    ctx.parity = report
    for m in ctx.models:
        m.parity = report.row(m.name).to_dict()
    figures = {r.variant: ("PASS" if r.passed else "FAIL") for r in report.rows}
    if not report.passed:
        bad = "; ".join(f"{r.variant}: {r.reason}" for r in report.failures())
        return StageResult("parity", Status.FAILED, f"failed the parity gate: {bad}", figures)
    return StageResult("parity", Status.OK, "", figures)


# Notes on INT8 variants whose calibration is not production data (parity tables, reports).
_CALIB_NOTES = {"synthetic": "INT8 calibrated on SYNTHETIC data",
                "bundled": "INT8 calibrated on bundled generic photographs (not production)"}


def _notes(ctx: Context, precision: str) -> str:
    info = ctx.onnx_info.get("int8") or ctx.onnx_info.get("int8_cpu") or {}
    calib = info.get("calibration", {})
    kind = calib.get("kind") or ("synthetic" if calib.get("synthetic") else "images")
    return _CALIB_NOTES.get(kind, "") if precision == "int8" else ""


def openvino_entry(v, spec: ModelSpec) -> ModelEntry:
    """The repository entry of an OpenVINO variant (:class:`dnx.exporter.openvino.OpenVinoVariant`)."""
    s = v.serving
    name = v.model_name(spec)
    m = ModelEntry("openvino", v.precision, name, dict(v.files), max_batch_size=s.max_batch_size,
                   backend="openvino", parameters=dict(v.parameters), preferred_batch=tuple(s.preferred_batch_sizes),
                   max_queue_delay_us=s.max_queue_delay_us, instances=s.instance_count, kind="KIND_CPU",
                   info={"openvino": v.info})
    return m


# --------------------------------------------------------------------------- writing

def triton_config(m: ModelEntry, spec: ModelSpec, cuda_graphs: bool = False):
    """The :class:`~dnx.model_repository.render.TritonConfig` of one repository model."""
    from dnx.model_repository.layout import LABELS_NAME
    from dnx.model_repository.render import TritonConfig

    return TritonConfig(
        name=m.name, max_batch_size=m.max_batch_size,
        input_name=spec.input_name, output_name=spec.output_name,
        input_dims=spec.input_shape, output_dims=(spec.num_classes,),
        backend=m.backend, platform=m.platform, label_filename=LABELS_NAME,
        instance_count=m.instances, instance_kind=m.kind,
        preferred_batch_sizes=list(m.preferred_batch), max_queue_delay_us=m.max_queue_delay_us,
        parameters=dict(m.parameters), cuda_graphs=cuda_graphs and m.runtime == "tensorrt",
        trt_accelerator=m.trt_accelerator,
    )


def write_models(ctx: Context, repo: Path) -> StageResult:
    """Write config.pbtxt, labels and model files of every model that passed (or --keep-failing)."""
    from dnx.exporter.torch_export import imagenet_labels
    from dnx.hashing import sha256_file
    from dnx.model_repository.layout import LABELS_NAME, atomic_write_text, model_dir
    from dnx.model_repository.render import render_config

    labels = "\n".join(imagenet_labels(ctx.spec)) + "\n"
    written = []
    for m in ctx.models:
        if m.parity and m.parity.get("passed") is False and not ctx.options.keep_failing:
            continue
        cfg = triton_config(m, ctx.spec, ctx.options.cuda_graphs)
        text = render_config(cfg)
        vdir = model_dir(repo, m.name)
        vdir.mkdir(parents=True, exist_ok=True)
        files = {}
        for fname, src in m.files.items():
            shutil.copyfile(src, vdir / fname)
            files[f"1/{fname}"] = sha256_file(vdir / fname)
        atomic_write_text(repo / m.name / "config.pbtxt", text)
        atomic_write_text(repo / m.name / LABELS_NAME, labels)
        ctx.manifest["models"][m.name] = {
            "runtime": m.runtime, "precision": m.precision, "backend": m.backend, "platform": m.platform,
            "target": ctx.target, "files": files, "opset": ctx.options.opset,
            "config": {"max_batch_size": cfg.max_batch_size, "instance_count": cfg.instance_count,
                       "instance_kind": cfg.instance_kind, "preferred_batch_sizes": cfg.preferred_batch_sizes,
                       "max_queue_delay_us": cfg.max_queue_delay_us, "parameters": cfg.parameters},
            "parity": m.parity, **{k: v for k, v in m.info.items() if v},
        }
        written.append(m.name)
    if ctx.parity is not None:
        ctx.manifest["parity"] = ctx.parity.to_dict()
    calib = (ctx.onnx_info.get("int8") or ctx.onnx_info.get("int8_cpu") or {}).get("calibration")
    if calib:
        ctx.manifest["calibration"] = calib
    if not written:
        return StageResult(WRITE_STAGE, Status.FAILED, "no model was built; nothing to write")
    ensemble = write_ensemble(ctx, repo, labels)
    from dnx.ops.golden import write_golden  # issue 21: golden answers for `dnx check`
    ctx.manifest["golden"] = write_golden(ctx, repo)
    if ensemble is None:
        return StageResult(WRITE_STAGE, Status.OK, "no variant passed its gate: no ensemble written",
                           {"models": len(written)})
    return StageResult(WRITE_STAGE, Status.OK, "",
                       {"models": len(written), "ensemble": f"{ensemble['name']} -> {ensemble['variant']}"})


def write_ensemble(ctx: Context, repo: Path, labels: str) -> dict | None:
    """Add the bytes-in path (preprocess model, softmax, ensemble over one variant) to ``repo``.

    Returns its manifest record, or None when only gate-failing variants were written
    (``--keep-failing``) and none was named with ``--serve-variant``.
    """
    from dnx.manifest import read_manifest
    from dnx.model_repository.ensemble import choose_variant, measured_throughput, write_bytes_path

    previous = None
    if (Path(ctx.options.out) / "dnx-manifest.json").is_file():
        try:
            previous = read_manifest(ctx.options.out)
        except InputError:
            previous = None  # a corrupt old manifest only loses its measured figures
    passed = [n for n, e in ctx.manifest["models"].items() if (e.get("parity") or {}).get("passed", True)]
    if not passed and not ctx.options.serve_variant:
        return None
    variant, why = choose_variant(ctx.manifest["models"], ctx.options.serve_variant, measured_throughput(previous))
    entry = ctx.manifest["models"][variant]
    record = write_bytes_path(repo, ctx.spec, variant, entry["config"]["max_batch_size"], labels,
                              preprocess_max_batch=ctx.options.max_batch or DEFAULT_MAX_BATCH)
    record["why"] = why
    ctx.manifest["ensemble"] = record
    return record


# --------------------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class Stage:
    """A pipeline step: ``run(ctx)`` is called when ``when(ctx)`` holds, else ``why_not(ctx)`` says why not."""

    name: str
    run: Callable[[Context], StageResult]
    when: Callable[[Context], bool] = lambda ctx: True
    why_not: Callable[[Context], str] = lambda ctx: "not needed"


def _wants(precision: str, *runtimes: str) -> Callable[[Context], bool]:
    return lambda c: precision in c.precisions and any(r in c.runtimes for r in runtimes)


def _not_asked(precision: str) -> Callable[[Context], str]:
    return lambda c: (f"{precision} not asked for (add --precision {precision})" if precision not in c.precisions
                      else f"no runtime that uses {precision} graphs among {', '.join(c.runtimes)}")


def _runtime_off(runtime: str) -> Callable[[Context], str]:
    return lambda c: f"runtime {runtime} not selected (target {c.target}, runtimes {', '.join(c.runtimes)})"


def _no_engines(c: Context) -> str:
    if c.target == "gpu":
        return _runtime_off("tensorrt")(c)
    return f"target {c.target}: TensorRT engines were not built{_ENGINES_HOW}"


STAGES: list[Stage] = [
    Stage("torch_to_onnx", stage_torch_to_onnx),
    Stage("fp16_onnx", stage_fp16_onnx, _wants("fp16", "onnxruntime", "tensorrt"), _not_asked("fp16")),
    Stage("int8_onnx", stage_int8_onnx, _wants("int8", "onnxruntime", "tensorrt", "openvino"), _not_asked("int8")),
    Stage("onnxruntime_models", stage_onnxruntime_models, lambda c: "onnxruntime" in c.runtimes,
          _runtime_off("onnxruntime")),
    Stage("openvino_models", stage_openvino_models, lambda c: "openvino" in c.runtimes, _runtime_off("openvino")),
    Stage("tensorrt_engines", stage_tensorrt_engines, lambda c: "tensorrt" in c.runtimes, _no_engines),
    Stage("parity", stage_parity, lambda c: bool(c.models), lambda c: "no model was built"),
]

WRITE_STAGE = "write_repository"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters) for a FAILED stage line."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    name = exc.__class__.__name__
    return (f"{name}: {text}" if text and not isinstance(exc, DnxError) else text or name)[:300]


def _is_disk_full(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc)


def disk_full_reason(exc: BaseException, where: Path, needed: int, basis: str) -> str:
    """The one-line reason for a full disk: which path, how much the run needs, how to fix it."""
    path = getattr(exc, "filename", None) or where
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    have = f", {free / 2**20:.0f} MiB free there" if free is not None else ""
    need = f"this run needs about {needed / 2**20:.0f} MiB ({basis}){have}" if needed else f"no estimate of the space needed{have}"
    return f"no space left on device writing {path}: {need}; free some space, or point --out / TMPDIR at a larger disk"


def _run_stage(stage: Stage, ctx: Context) -> StageResult:
    """Run one stage; any exception but a user error (:class:`InputError`) becomes its FAILED line."""
    t0 = time.perf_counter()
    try:
        result = stage.run(ctx)
    except InputError:
        raise  # a user error stops the run with its own one-line message
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime, OpenVINO, torch, disk: one FAILED line each
        if _is_disk_full(exc):
            reason = disk_full_reason(exc, ctx.work, *_space_estimate(ctx))
        else:
            reason = one_line(exc)
        result = StageResult(stage.name, Status.FAILED, reason)
    result.seconds = time.perf_counter() - t0
    return result


def _space_estimate(ctx: Context) -> tuple[int, str]:
    """Bytes a run needs in its work folder: the previous repository's size, else one FP32 graph per model."""
    from dnx.model_repository.layout import tree_bytes

    previous = ctx.previous_bytes
    if previous:
        return previous, f"measured from the previous repository {ctx.options.out}"
    params = sum(p.numel() for p in ctx.model.parameters()) if hasattr(ctx.model, "parameters") else 0
    models = max(1, len(ctx.precisions)) * max(1, len(ctx.runtimes))
    if params:
        return params * 4 * models, (f"{params / 1e6:.1f} M FP32 weights of {ctx.spec.name}, up to one graph "
                                     f"for each of {models} precision x runtime models")
    return tree_bytes(ctx.work), "at least what it had built so far"


def export(options: ExportOptions, on_stage: Callable[[StageResult], None] | None = None,
           on_warning: Callable[[str], None] | None = None) -> ExportResult:
    """Build a Triton model repository at ``options.out``.

    The repository is assembled in a staging folder beside ``options.out`` and swapped in only
    when no stage failed (``keep_failing`` lets parity-failing models through); otherwise the
    previous repository is left untouched. ``on_stage`` is called after each stage, also for
    the chosen target (first) and for stages that did not run (SKIPPED, with why). The work
    folder in the system temp folder is removed on every way out; ones left by killed runs
    are removed here.
    """
    from dnx.model_repository.layout import remove_orphans
    from dnx.preflight import preflight
    from dnx.signals import Interrupted
    from dnx.spec import get_spec
    from dnx.workdirs import remove_stale

    # Left by killed runs: removed whatever this run does next.
    remove_stale(tempfile.gettempdir(), "dnx-work")
    if Path(options.out).resolve().parent.is_dir():
        remove_orphans(Path(options.out))
    # Fail fast: every check that needs no exported model, before torch loads.
    for warning in preflight(options):
        if on_warning:
            on_warning(warning)
    spec = get_spec(options.model)
    target, target_reason = resolve_target(options.target)
    try:
        return _export(options, spec, target, target_reason, on_stage)
    except Interrupted as exc:
        raise exc.with_detail(f"{options.out} left unchanged, temporary folders removed") from None


def _export(options: ExportOptions, spec: ModelSpec, target: str, target_reason: str, on_stage) -> ExportResult:
    from dnx.manifest import new_manifest, write_manifest
    from dnx.model_repository.layout import StagedRepository, tree_bytes
    from dnx.workdirs import work_dir

    def report(result: StageResult) -> None:
        ctx.results.append(result)
        if on_stage:
            on_stage(result)

    def failed() -> ExportResult:
        return ExportResult(None, ctx.results, ctx.manifest, committed=False)

    with StagedRepository(options.out) as staged, work_dir("dnx-work") as work:
        ctx = Context(options=options, spec=spec, work=work, target=target)
        ctx.previous_bytes = tree_bytes(Path(options.out))
        ctx.precisions = tuple(dict.fromkeys(options.precisions or default_precisions(target)))
        ctx.runtimes = tuple(dict.fromkeys(options.runtimes or default_runtimes(target)))
        if options.target == "auto":  # say what auto chose, and why
            report(StageResult("target", Status.OK, f"{target} ({target_reason})", {"target": target}))
        # Fail before minutes of work when the disk cannot even hold a repository like the last one.
        need = ctx.previous_bytes
        for where in {staged.path.parent, work.parent}:
            if need and shutil.disk_usage(where).free < need:
                reason = disk_full_reason(OSError(errno.ENOSPC, "full"), where, need,
                                          f"measured from the previous repository {options.out}")
                report(StageResult("disk_space", Status.FAILED, reason))
                _skip_rest(STAGES, 0, ctx, report, "disk_space")
                return failed()
        _check_serve_variant(ctx)
        for i, stage in enumerate(STAGES):
            if not stage.when(ctx):
                report(StageResult(stage.name, Status.SKIPPED, stage.why_not(ctx)))
                continue
            result = _run_stage(stage, ctx)
            report(result)
            if result.status is Status.FAILED and not (stage.name == "parity" and options.keep_failing):
                _skip_rest(STAGES, i + 1, ctx, report, stage.name)
                return failed()
        ctx.manifest = new_manifest(spec, ctx.weights.to_dict(), _options_record(options, target, target_reason))
        result = _write(ctx, staged.path)
        report(result)
        if result.status is Status.FAILED:
            return failed()
        ctx.manifest["stages"] = [r.to_dict() for r in ctx.results]
        write_manifest(staged.path, ctx.manifest)
        repo = staged.commit()
    return ExportResult(repo, ctx.results, ctx.manifest, committed=True, parity=ctx.parity)


def _skip_rest(stages: list[Stage], start: int, ctx: Context, report, failed: str) -> None:
    """Record every stage after a failed one as SKIPPED (and the repository write)."""
    for stage in stages[start:]:
        report(StageResult(stage.name, Status.SKIPPED, f"not run: {failed} failed"))
    report(StageResult(WRITE_STAGE, Status.SKIPPED, f"not run: {failed} failed; the previous repository is unchanged"))


def _write(ctx: Context, repo: Path) -> StageResult:
    """:func:`write_models` with a space check first; a full disk becomes a FAILED line naming the path."""
    from dnx.model_repository.layout import tree_bytes

    t0 = time.perf_counter()
    need = sum(tree_bytes(src) if Path(src).is_dir() else Path(src).stat().st_size
               for m in ctx.models for src in m.files.values())
    basis = f"measured from the {len(ctx.models)} models this run built"
    try:
        free = shutil.disk_usage(repo).free
        if need and free < need:
            raise OSError(errno.ENOSPC, "No space left on device", str(repo))
        result = write_models(ctx, repo)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - see _run_stage
        reason = disk_full_reason(exc, repo, need, basis) if _is_disk_full(exc) else one_line(exc)
        result = StageResult(WRITE_STAGE, Status.FAILED, reason)
    result.seconds = time.perf_counter() - t0
    return result


def _check_serve_variant(ctx: Context) -> None:
    """Reject a --serve-variant this run cannot build before any work is done."""
    name = ctx.options.serve_variant
    if not name:
        return
    possible = [ctx.spec.model_name(r, p) for r in ctx.runtimes for p in ctx.precisions]
    if name not in possible:
        raise InputError(f"--serve-variant {name!r} is not built by this run; choose one of: {', '.join(possible)} "
                         "(or add its --precision/--runtime)")


def _options_record(options: ExportOptions, target: str, reason: str) -> dict:
    rec = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()}
    rec.update({"target_resolved": target, "target_reason": reason})
    return rec
