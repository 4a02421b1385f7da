"""The export stages, in order: torch → ONNX (+ parity with PyTorch) → precision variants (FP16,
INT8) → OpenVINO variants → TensorRT engines → parity gates. Each takes the :class:`Context` and
returns a :class:`StageResult`; :data:`STAGES` says when each runs and why not otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dnx.kinds import builds
from dnx.exporter.calibration import calibration_set
from dnx.exporter.engine import EngineFromOnnx, EngineSettings, tensorrt_available
from dnx.exporter.openvino import OPENVINO_PRECISIONS, openvino_variant, unsupported_reason
from dnx.exporter.precision import Fp16FromOnnx, Int8FromOnnx
from dnx.exporter.torch_export import OnnxFromTorch, load_torch_model, torch_forward
from dnx.parity import Variant, check_parity, compare_arrays, run_outputs
from dnx.pipeline.engine import Context, Stage, StageResult, Status
from dnx.pipeline.entries import (CALIBRATION_NOTES, ModelEntry, calibration_note, openvino_entry,
                                  with_serving_defaults)
from dnx.pipeline.options import ENGINES_HOW
from dnx.pipeline.speed import stage_speed
from dnx.preprocess import probe_inputs
from dnx.runtimes import onnxruntime, openvino, tensorrt


def stage_torch_to_onnx(ctx: Context) -> StageResult:
    """Load the torchvision model, export ONNX, and gate its parity with PyTorch (max abs ≤ 1e-3)."""
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
    dst = ctx.work / "model.fp16.onnx"
    probe = {ctx.spec.input_name: ctx.inputs}
    info = Fp16FromOnnx(ctx.onnx_files["fp32"], probe=probe, spec=ctx.spec)(dst)
    ctx.onnx_files["fp16"], ctx.onnx_info["fp16"] = dst, info
    return StageResult("fp16_onnx", Status.OK, "", {"fp32_nodes": len(info["fp32_nodes"]), "seconds": info["seconds"]})


@dataclass(frozen=True)
class Int8Graph:
    """One INT8 Q/DQ graph the export makes, and for whom: see :data:`INT8_GRAPHS`."""

    key: str  # its name in Context.onnx_files / onnx_info
    symmetric: bool  # int8 activations with zero point 0; False: uint8 with zero points
    weight_bits: int
    serves: str  # who reads it, as the manifest says


# The CPU graphs keep every weight inside +-64, so no x86 CPU can saturate its int8 dot products
# (dnx.cpu); the TensorRT graph keeps 8 bits (GPUs do not have the problem). Activations: ONNX
# Runtime fuses Conv into QLinearConv only with uint8 activations, and measured them more
# accurate; OpenVINO measured far less accurate with them (perf/BENCHMARKS.md, "int8 graphs"),
# so it gets symmetric activations.
INT8_GRAPHS = {
    "int8_cpu": Int8Graph("int8_cpu", symmetric=False, weight_bits=7, serves="ONNX Runtime on a CPU"),
    "int8_openvino": Int8Graph("int8_openvino", symmetric=True, weight_bits=7, serves="OpenVINO on a CPU"),
    "int8": Int8Graph("int8", symmetric=True, weight_bits=8, serves="TensorRT, ONNX Runtime on a GPU"),
}


EXACT_QDQ_NOTE = "Q/DQ evaluated as float fake-quant on this CPU (exact, as a GPU computes it)"


def int8_graphs(target: str, runtimes) -> list[Int8Graph]:
    """The INT8 graphs an export for ``target`` with ``runtimes`` needs."""
    keys = []
    if target == "cpu" and "onnxruntime" in runtimes:
        keys.append("int8_cpu")
    if "openvino" in runtimes:
        keys.append("int8_openvino")
    if target == "gpu" or "tensorrt" in runtimes:
        keys.append("int8")
    return [INT8_GRAPHS[k] for k in keys]


def stage_int8_onnx(ctx: Context) -> StageResult:
    """INT8 ONNX graphs with explicit Q/DQ, calibrated on images (cached): :data:`INT8_GRAPHS`."""
    o = ctx.options
    calib = calibration_set(o.calib_dir, o.calib_samples, seed=o.calib_seed, synthetic=o.calib_synthetic,
                            spec=ctx.spec, progress=o.progress)
    figures = {"samples": calib.count, "method": o.calib_method, "synthetic": calib.synthetic}
    for graph in int8_graphs(ctx.target, ctx.runtimes):
        dst = ctx.work / f"model.{graph.key}.onnx"
        info = Int8FromOnnx(ctx.onnx_files["fp32"], calib, method=o.calib_method, symmetric=graph.symmetric,
                            weight_bits=graph.weight_bits, cache_dir=Path(o.cache_dir) / "calib",
                            progress=o.progress, spec=ctx.spec)(dst)
        ctx.onnx_files[graph.key], ctx.onnx_info[graph.key] = dst, {**info, "graph": graph.key, "serves": graph.serves}
        figures[f"{graph.key}_cache_hit"] = info["cache_hit"]
        figures[f"{graph.key}_q_nodes"] = info["qdq"]["quantize_linear"]
    return StageResult("int8_onnx", Status.OK, CALIBRATION_NOTES.get(calib.kind, "").removeprefix("INT8 "), figures)


def stage_onnxruntime_models(ctx: Context) -> StageResult:
    """ONNX Runtime models (backend "onnxruntime"): one per precision graph built."""
    built, skipped = [], []
    for precision in ctx.precisions:
        key = f"{precision}_cpu" if f"{precision}_cpu" in ctx.onnx_files else precision
        path = ctx.onnx_files.get(key)
        if path is None:
            skipped.append(f"{precision}: no ONNX Runtime variant (OpenVINO builds it)")
            continue
        name = ctx.spec.model_name("onnxruntime", precision)
        m = with_serving_defaults(ModelEntry("onnxruntime", precision, name, {"model.onnx": path},
                                             backend="onnxruntime"), ctx.options, ctx.target)
        graph_level = 0
        if ctx.target == "cpu":
            m.parameters = onnxruntime.cpu_parameters(ctx.options.threads or max(1, (os.cpu_count() or 1) // m.instances))
        else:
            m.trt_accelerator = "fp16" if precision == "fp16" else None
            # A GPU computes the Q/DQ arithmetic exactly; this CPU's integer kernels may not
            # (dnx.cpu), so the gate runs the graph unoptimised: Q/DQ as float fake-quant.
            graph_level = 2 if precision == "int8" else 0
        m.info = {"onnx": ctx.onnx_info.get(key, {})}
        m.runner = onnxruntime.runner(path, name, m.parameters, graph_level=graph_level)
        m.notes = "; ".join(filter(None, [calibration_note(ctx.onnx_info, precision),
                                          EXACT_QDQ_NOTE if graph_level == 2 else ""]))
        ctx.models.append(m)
        built.append(name)
    return StageResult("onnxruntime_models", Status.OK if built else Status.SKIPPED, "; ".join(skipped), {"models": built})


def stage_openvino_models(ctx: Context) -> StageResult:
    """OpenVINO IR models (backend "openvino") for the CPU: fp32, bf16 where native, int8 from Q/DQ."""
    o = ctx.options
    built, skipped = [], []
    for precision in ctx.precisions:
        reason = unsupported_reason(precision) if precision in OPENVINO_PRECISIONS else \
            f"OpenVINO CPU variants are {', '.join(OPENVINO_PRECISIONS)}"
        if reason:
            skipped.append(f"{precision}: {reason}")
            continue
        key = "int8_openvino" if precision == "int8" else "fp32"
        src = ctx.onnx_files[key]
        v = openvino_variant(src, precision, ctx.work / f"openvino-{precision}", max_batch_size=o.max_batch,
                             instance_count=o.instances, threads=o.threads, max_queue_delay_us=o.max_queue_delay_us,
                             preferred_batch_sizes=tuple(o.preferred_batch) if o.preferred_batch is not None else None)
        m = openvino_entry(v, ctx.spec)
        m.info["onnx"] = ctx.onnx_info.get(key, {}) if precision == "int8" else {}
        m.runner = openvino.runner(v.files["model.xml"], m.name, m.parameters, m.max_batch_size, ctx.spec)
        m.notes = calibration_note(ctx.onnx_info, precision)
        ctx.models.append(m)
        built.append(m.name)
    return StageResult("openvino_models", Status.OK if built else Status.SKIPPED, "; ".join(skipped), {"models": built})


def stage_tensorrt_engines(ctx: Context) -> StageResult:
    """TensorRT plans (platform "tensorrt_plan") from each precision graph; SKIPPED without TensorRT + GPU."""
    usable, reason = tensorrt_available()
    if not usable:
        return StageResult("tensorrt_engines", Status.SKIPPED,
                           f"{reason}; engines were not built{ENGINES_HOW * ('make engines' not in reason)}")
    o = ctx.options
    built = []
    for precision in ctx.precisions:
        src = ctx.onnx_files.get(precision)
        if src is None:
            continue
        name = ctx.spec.model_name("tensorrt", precision)
        m = with_serving_defaults(ModelEntry("tensorrt", precision, name, {}, platform="tensorrt_plan"),
                                  ctx.options, ctx.target)
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
        m.notes = calibration_note(ctx.onnx_info, precision)
        ctx.models.append(m)
        built.append(name)
    return StageResult("tensorrt_engines", Status.OK, "", {"models": built})


def stage_parity(ctx: Context) -> StageResult:
    """Gate every model against the PyTorch FP32 reference (Polygraphy comparator)."""
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


def _wants(precision: str) -> Callable[[Context], bool]:
    """A ``precision`` graph is made when asked for and a selected runtime builds it (:data:`dnx.kinds.BUILDS`)."""
    return lambda c: precision in c.precisions and any(builds(r, precision) for r in c.runtimes)


def _not_asked(precision: str) -> Callable[[Context], str]:
    return lambda c: (f"{precision} not asked for (add --precision {precision})" if precision not in c.precisions
                      else f"no runtime that uses {precision} graphs among {', '.join(c.runtimes)}")


def _runtime_off(runtime: str) -> Callable[[Context], str]:
    return lambda c: f"runtime {runtime} not selected (target {c.target}, runtimes {', '.join(c.runtimes)})"


def _no_engines(c: Context) -> str:
    if c.target == "gpu":
        return _runtime_off("tensorrt")(c)
    return f"target {c.target}: TensorRT engines were not built{ENGINES_HOW}"


STAGES: list[Stage] = [
    Stage("torch_to_onnx", stage_torch_to_onnx),
    Stage("fp16_onnx", stage_fp16_onnx, _wants("fp16"), _not_asked("fp16")),
    Stage("int8_onnx", stage_int8_onnx, _wants("int8"), _not_asked("int8")),
    Stage("onnxruntime_models", stage_onnxruntime_models, lambda c: "onnxruntime" in c.runtimes,
          _runtime_off("onnxruntime")),
    Stage("openvino_models", stage_openvino_models, lambda c: "openvino" in c.runtimes, _runtime_off("openvino")),
    Stage("tensorrt_engines", stage_tensorrt_engines, lambda c: "tensorrt" in c.runtimes, _no_engines),
    # A gate, not a step: --keep-failing writes the variants that fail it anyway.
    Stage("parity", stage_parity, lambda c: bool(c.models), lambda c: "no model was built", required=False),
    Stage("speed", stage_speed, lambda c: c.target == "cpu" and c.options.speed_seconds > 0 and bool(c.models),
          lambda c: "--speed-seconds 0" if c.target == "cpu" else "GPU variants are timed on their GPU (dnx perf)"),
]
