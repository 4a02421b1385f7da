"""OpenVINO variants of the CPU target, laid out the way Triton's ``openvino`` backend reads them.

What that backend reads (triton-inference-server/openvino_backend: README sections
"Parameters" and "Loading non default model format"; ``src/openvino.cc``
``ModelState::ReadModel``, ``ParseParameters``, ``ParseParameterHelper``, ``ValidateInputs``
and ``ModelInstanceState::ProcessRequests``):

* the model file ``<model>/<version>/model.xml`` (OpenVINO IR, ``model.bin`` beside it) unless
  ``default_model_filename`` names another (``model.onnx``, ``model.pdmodel``, ...). dnx writes
  IR, so no ``default_model_filename`` is needed and no ONNX import happens at load time;
* string ``parameters``: ``PERFORMANCE_HINT`` (LATENCY | THROUGHPUT | CUMULATIVE_THROUGHPUT),
  ``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``, ``NUM_STREAMS`` (AUTO | NUMA | n),
  ``HINT_BF16`` (YES), ``ENABLE_BATCH_PADDING``, ``SKIP_OV_DYNAMIC_BATCHSIZE``,
  ``RESHAPE_IO_LAYERS`` (YES), ``CPU_EXTENSION_PATH``. Other keys are ignored;
* with ``max_batch_size > 0`` it fixes the model's batch to ``max_batch_size``
  (``ov::set_batch``) and refuses requests of another batch size unless
  ``ENABLE_BATCH_PADDING`` is YES, which pads every execution to ``max_batch_size``: a lone
  request then costs a full batch. Its padding bookkeeping also fails batches that the dynamic
  batcher fills exactly after a padded one (reported upstream as openvino_backend PR #115,
  closed unmerged).

Hence the tuned default ``max_batch_size: 1`` (:data:`TUNED`): no padding, nothing for that bug
to hit, and on a 2-core CPU it was also the fastest served setting at concurrency 1-4.
Clients send one image per request; Triton queues the rest.

There is no backend key for FP32 inference. On a CPU with native bfloat16, OpenVINO's CPU
default *is* bf16, so the C++ backend runs the ``fp32`` variant in bf16. dnx writes
``INFERENCE_PRECISION_HINT: f32`` (OpenVINO's own property name) for it: dnx's local backend
honours it, the C++ backend ignores it. The ``bf16`` variant uses the documented ``HINT_BF16``.
The ``int8`` variant (an ONNX model with calibrated Q/DQ nodes) gets no precision key, so both
backends run its unquantized layers at the CPU default.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnx.kinds import BUILDS, Runtime
from dnx._lazy import lazy_import
from dnx.errors import DnxError, InputError
from dnx.hashing import sha256_file
from dnx.model_repository.defaults import ServingDefaults
from dnx.runtimes.openvino import cpu_capabilities, cpu_supports_bf16
from dnx.spec import DEFAULT_MODEL, ModelSpec

IR_FILES = ("model.xml", "model.bin")
OPENVINO_PRECISIONS = tuple(p.value for p in BUILDS[Runtime.OPENVINO])
BACKEND = "openvino"



# On a 2-core CPU (docs/PERFORMANCE.md), perf_analyzer concurrency 1-4: max_batch_size 1, one
# instance, one stream, LATENCY hint, OpenVINO's own
# thread count beat max_batch_size 2/4 with padding (a lone request pays for the whole batch)
# and two instances x two streams (one thread each) for every precision.
TUNED: dict[str, ServingDefaults] = {p: ServingDefaults(max_batch_size=1) for p in ("fp32", "bf16", "int8")}


def unsupported_reason(precision: str) -> str | None:
    """Why ``precision`` cannot be an OpenVINO variant on this machine, or None when it can."""
    if precision not in OPENVINO_PRECISIONS:
        return f"OpenVINO variants exist for {', '.join(OPENVINO_PRECISIONS)}, not {precision}"
    if precision == "bf16" and not cpu_supports_bf16():
        return "this CPU has no native bfloat16 (OpenVINO OPTIMIZATION_CAPABILITIES lacks BF16)"
    return None


class IrFromOnnx:
    """Convert an ONNX file into OpenVINO IR (``model.xml`` + ``model.bin``), weights kept in FP32.

    ``IrFromOnnx(onnx_path)(out_dir)`` returns ``{"model.xml": path, "model.bin": path}``.
    Q/DQ pairs of a quantized ONNX model become OpenVINO FakeQuantize nodes, which the CPU
    plugin runs in int8. The ONNX file is only read (its hash is checked afterwards).
    """

    def __init__(self, onnx_path: str | os.PathLike):
        self.onnx_path = Path(onnx_path)

    def __call__(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        ov = lazy_import("openvino")
        if not self.onnx_path.is_file():
            raise InputError(f"ONNX model {self.onnx_path} not found; export it first (dnx export)")
        before = sha256_file(self.onnx_path)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        try:
            model = ov.convert_model(str(self.onnx_path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises plain RuntimeError/OpConversionFailure
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise DnxError(f"OpenVINO cannot convert {self.onnx_path.name}: {first}; check the ONNX opset (17 works)") from None
        tmp = Path(tempfile.mkdtemp(prefix=".ir-", dir=out))
        try:
            # compress_to_fp16=False: the default would store FP16 weights even for the FP32 variant.
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            files = {}
            for name in IR_FILES:
                os.replace(tmp / name, out / name)
                files[name] = out / name
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if sha256_file(self.onnx_path) != before:
            raise DnxError(f"{self.onnx_path} changed while OpenVINO read it; this is a bug, report it")
        return files


def backend_parameters(precision: str, serving: ServingDefaults) -> dict[str, str]:
    """The ``parameters`` of the variant's ``config.pbtxt``: documented openvino-backend keys only,
    plus ``INFERENCE_PRECISION_HINT`` for fp32 (read by dnx's local backend, see the module doc)."""
    params = {"PERFORMANCE_HINT": serving.performance_hint, "NUM_STREAMS": str(serving.num_streams)}
    if serving.threads:
        params["INFERENCE_NUM_THREADS"] = str(serving.threads)
    if serving.max_batch_size > 1:
        # Without it the backend rejects every batch smaller than max_batch_size.
        params["ENABLE_BATCH_PADDING"] = "YES"
    if precision == "bf16":
        params["HINT_BF16"] = "YES"
    elif precision == "fp32":
        params["INFERENCE_PRECISION_HINT"] = "f32"
    return params


@dataclass
class OpenVinoVariant:
    """One OpenVINO model of the repository: its files and its Triton settings."""

    precision: str
    files: dict[str, Path]  # file name inside <model>/<version>/ -> built file
    parameters: dict[str, str]
    serving: ServingDefaults
    info: dict = field(default_factory=dict)

    def model_name(self, spec: ModelSpec = DEFAULT_MODEL) -> str:
        """``densenet121_openvino``, ``densenet121_openvino_bf16``, ``densenet121_openvino_int8``."""
        return spec.model_name(BACKEND, self.precision)


def serving_defaults(precision: str, **overrides) -> ServingDefaults:
    """The tuned :data:`TUNED` settings of ``precision``; keyword overrides (None = keep) win."""
    if precision not in TUNED:
        raise InputError(f"no OpenVINO variant for precision {precision!r}; choose from {', '.join(OPENVINO_PRECISIONS)}")
    base = TUNED[precision]
    changes = {k: v for k, v in overrides.items() if v is not None}
    serving = replace(base, **changes)
    if "max_batch_size" in changes and "preferred_batch_sizes" not in changes:
        serving = replace(serving, preferred_batch_sizes=tuple(b for b in base.preferred_batch_sizes if b <= serving.max_batch_size))
    if "instance_count" in changes and "num_streams" not in changes:
        # One OpenVINO stream per Triton instance: the C++ backend shares one compiled model
        # between instances, each instance owning one infer request.
        serving = replace(serving, num_streams=serving.instance_count)
    return serving


def openvino_variant(
    onnx_path: str | os.PathLike,
    precision: str,
    out_dir: str | os.PathLike,
    **overrides,
) -> OpenVinoVariant:
    """Build the OpenVINO variant of ``precision`` from ``onnx_path`` into ``out_dir``.

    ``onnx_path`` is the FP32 ONNX model for ``fp32``/``bf16`` and the calibrated Q/DQ ONNX
    model for ``int8``. ``overrides`` are :class:`ServingDefaults` fields (``max_batch_size``,
    ``instance_count``, ``threads``, ...; None keeps the tuned value). Raises
    :class:`InputError` when this CPU cannot run ``precision`` natively.
    """
    reason = unsupported_reason(precision)
    if reason:
        raise InputError(f"cannot build the OpenVINO {precision} variant: {reason}; drop --precision {precision}")
    serving = serving_defaults(precision, **overrides)
    files = IrFromOnnx(onnx_path)(out_dir)
    ov = lazy_import("openvino")
    info = {"openvino": ov.get_version(), "source_onnx_sha256": sha256_file(Path(onnx_path)),
            "cpu_capabilities": cpu_capabilities()}
    if precision == "int8":
        info["fake_quantize_nodes"] = files["model.xml"].read_text(encoding="utf-8").count('type="FakeQuantize"')
        if not info["fake_quantize_nodes"]:
            raise InputError(f"{Path(onnx_path).name} has no Q/DQ nodes, so it cannot be the int8 variant; "
                             "pass the calibrated Q/DQ ONNX model (dnx export --precision int8 --calib-dir ...)")
    return OpenVinoVariant(precision, files, backend_parameters(precision, serving), serving, info)
