"""The models of the repository being built, and the serving defaults they start from (one home)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnx.model_repository.defaults import ServingDefaults
from dnx.model_repository.layout import LABELS_NAME
from dnx.model_repository.render import TritonConfig
from dnx.pipeline.options import DEFAULT_MAX_BATCH, ExportOptions
from dnx.spec import ModelSpec


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


# Batching does not pay for ONNX Runtime on a small CPU (docs/PERFORMANCE.md): its dynamic
# batcher only merges requests that are already queued (no delay).
# OpenVINO's defaults come from dnx.exporter.openvino.TUNED. GPU defaults follow Triton's
# usual starting point (preferred = a couple of batch sizes, 100 µs delay).
SERVING_DEFAULTS = {
    ("onnxruntime", "cpu"): ServingDefaults(),
    ("onnxruntime", "gpu"): ServingDefaults(preferred_batch_sizes=(4, 8), max_queue_delay_us=100),
    ("tensorrt", "gpu"): ServingDefaults(preferred_batch_sizes=(4, 8), max_queue_delay_us=100),
}


def with_serving_defaults(m: ModelEntry, options: ExportOptions, target: str) -> ModelEntry:
    """Set ``m``'s batching, queue delay, instances and kind: the flags where given, else :data:`SERVING_DEFAULTS`."""
    o = options
    d = SERVING_DEFAULTS.get((m.runtime, target), ServingDefaults())
    m.max_batch_size = o.max_batch or DEFAULT_MAX_BATCH
    m.preferred_batch = tuple(o.preferred_batch) if o.preferred_batch is not None else tuple(
        b for b in d.preferred_batch_sizes if b <= m.max_batch_size)
    m.max_queue_delay_us = o.max_queue_delay_us if o.max_queue_delay_us is not None else d.max_queue_delay_us
    m.instances = o.instances or d.instance_count
    m.kind = "KIND_GPU" if target == "gpu" else "KIND_CPU"
    return m


def openvino_entry(v, spec: ModelSpec) -> ModelEntry:
    """The repository entry of an OpenVINO variant (:class:`dnx.exporter.openvino.OpenVinoVariant`)."""
    s = v.serving
    return ModelEntry("openvino", v.precision, v.model_name(spec), dict(v.files), max_batch_size=s.max_batch_size,
                      backend="openvino", parameters=dict(v.parameters), preferred_batch=tuple(s.preferred_batch_sizes),
                      max_queue_delay_us=s.max_queue_delay_us, instances=s.instance_count, kind="KIND_CPU",
                      info={"openvino": v.info})


def triton_config(m: ModelEntry, spec: ModelSpec, cuda_graphs: bool = False) -> TritonConfig:
    """The :class:`~dnx.model_repository.render.TritonConfig` of one repository model."""
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


# Notes on INT8 variants whose calibration is not production data (parity tables, reports).
CALIBRATION_NOTES = {"synthetic": "INT8 calibrated on SYNTHETIC data",
                     "bundled": "INT8 calibrated on bundled generic photographs (not production)"}


def int8_calibration(onnx_info: dict[str, dict]) -> dict:
    """The calibration record of the export's INT8 graphs (all of them share one calibration set)."""
    return next((info["calibration"] for key, info in onnx_info.items()
                 if key.startswith("int8") and info.get("calibration")), {})


def calibration_note(onnx_info: dict[str, dict], precision: str) -> str:
    """The note an INT8 variant carries when its calibration data is not production data ("" otherwise)."""
    calib = int8_calibration(onnx_info)
    kind = calib.get("kind") or ("synthetic" if calib.get("synthetic") else "images")
    return CALIBRATION_NOTES.get(kind, "") if precision == "int8" else ""
