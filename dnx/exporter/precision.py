"""Reduced precision in the ONNX graph: FP16 conversion and explicit INT8 Q/DQ.

TensorRT 11 dropped the FP16/INT8 builder flags and the INT8 calibrator, so precision is
decided here, in the graph, where it also runs on a CPU. Both converters are Polygraphy-style
callables: configure with the source, call with the destination, get an info dict for the
manifest::

    info = Fp16FromOnnx("model.onnx")("model_fp16.onnx")
    info = Int8FromOnnx("model.onnx", calibration_set("photos/", 64))("model_int8.onnx")

The source file is never touched: the converters read it (or a private copy) and check its
sha256 before and after (a quantizer has been seen rewriting its input).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import DnxError, InputError, MissingDependencyError
from dnx.cpu import SAFE_INT8_WEIGHT
from dnx.exporter.calibration import (
    DEFAULT_CACHE_DIR,
    DEFAULT_METHOD,
    ORT_METHODS,
    CalibrationCache,
    CalibrationSet,
    cache_key,
    check_method,
    progress_bar,
    sha256_file,
)
from dnx.model_repository.layout import atomic_write_bytes
from dnx.preprocess import probe_inputs
from dnx.spec import DEFAULT_MODEL, ModelSpec

FP16_MAX = 65504.0
# Nodes touching a tensor larger than this on the probe data stay FP32: 4x head-room below
# FP16's max, because unseen inputs can go further than a handful of probe images.
FP16_DATA_MAX = FP16_MAX / 4
# Calibration runs collect every intermediate tensor; merging every few samples bounds memory.
CALIB_CHUNK = 8


def _check_source(src: str | os.PathLike) -> Path:
    src = Path(src)
    if not src.is_file():
        raise InputError(f"{src}: no such ONNX file; export the FP32 model first (dnx export)")
    return src


def _check_unchanged(src: Path, sha_before: str) -> None:
    if sha256_file(src) != sha_before:
        raise DnxError(f"{src} was modified while converting it; restore it from a fresh `dnx export` and report this bug")


def _unoptimized_session(model, threads: int = 2):
    # Unoptimized, so every node of the graph (not ORT's fused version of it) is measured.
    ort = lazy_import("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def default_probe(spec: ModelSpec = DEFAULT_MODEL, photos: int = 4, random: int = 2, seed: int = 0) -> dict:
    """Probe feed for range measurement: :func:`dnx.preprocess.probe_inputs` keyed by the input name."""
    return {spec.input_name: probe_inputs(spec, random=random, seed=seed, photo_limit=photos)[0]}


def tensor_ranges(model, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute value of every float tensor in ``model`` (inputs and node outputs) over ``feeds``.

    Runs sample by sample on a copy of the model that exposes every node output.
    """
    onnx = lazy_import("onnx")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [o for node in probe.graph.node for o in node.output if o]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    sess = _unoptimized_session(probe)
    n = len(next(iter(feeds.values())))
    ranges: dict[str, float] = {}
    for i in range(n):
        feed = {k: v[i : i + 1] for k, v in feeds.items()}
        for name, value in [*feed.items(), *zip(names, sess.run(names, feed))]:
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
                ranges[name] = max(ranges.get(name, 0.0), float(np.nanmax(np.abs(value))))
    return ranges


def fp16_unsafe_nodes(model, ranges: dict[str, float], data_max: float = FP16_DATA_MAX) -> list[str]:
    """Nodes to keep in FP32: any float input/output beyond ``data_max``, or an initializer beyond FP16."""
    numpy_helper = lazy_import("onnx.numpy_helper")
    big_inits = {
        init.name
        for init in model.graph.initializer
        if init.data_type == 1 and np.abs(numpy_helper.to_array(init)).max(initial=0.0) > FP16_MAX
    }
    unsafe = []
    for node in model.graph.node:
        tensors = [t for t in (*node.input, *node.output) if t]
        if any(ranges.get(t, 0.0) > data_max or t in big_inits for t in tensors):
            unsafe.append(node.name)
    return unsafe


class Fp16FromOnnx:
    """FP16 ONNX from FP32 ONNX (onnxconverter-common), FP32 inputs/outputs kept.

    Nodes whose tensors overflow FP16 on the probe data (real photographs plus random inputs
    by default) stay FP32, with casts around them. ``op_block_list`` / ``node_block_list`` add
    op types / node names that must stay FP32.
    """

    def __init__(
        self,
        src: str | os.PathLike,
        *,
        probe: dict[str, np.ndarray] | None = None,
        data_max: float = FP16_DATA_MAX,
        op_block_list: list[str] | None = None,
        node_block_list: list[str] | None = None,
        spec: ModelSpec = DEFAULT_MODEL,
    ):
        self.src = _check_source(src)
        self.probe, self.data_max, self.spec = probe, data_max, spec
        self.op_block_list, self.node_block_list = list(op_block_list or []), list(node_block_list or [])

    def __call__(self, dst: str | os.PathLike) -> dict:
        """Write the FP16 model to ``dst`` (atomically); return its info for the manifest."""
        onnx = lazy_import("onnx")
        float16 = lazy_import("onnxconverter_common.float16")
        start = time.perf_counter()
        sha_before = sha256_file(self.src)
        model = onnx.load(str(self.src))
        probe = self.probe if self.probe is not None else default_probe(self.spec)
        overflow = fp16_unsafe_nodes(model, tensor_ranges(model, probe), self.data_max)
        blocked = sorted(set(overflow) | set(self.node_block_list))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # It warns for every tiny weight it rounds to its min_positive_val (1e-7).
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=True,
                # FP16 max, not the library's default 1e4: representable values are kept exactly.
                max_finite_val=FP16_MAX,
                op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(self.op_block_list)),
                node_block_list=blocked,
            )
        data = converted.SerializeToString()
        atomic_write_bytes(dst, data)
        _check_unchanged(self.src, sha_before)
        return {
            "precision": "fp16",
            "converter": f"onnxconverter-common {_version('onnxconverter_common')} float16 (keep_io_types)",
            "source_sha256": sha_before,
            "sha256": sha256_file(dst),
            "io_types": "fp32",
            "fp32_nodes": blocked,
            "overflow_nodes": overflow,
            "data_max": self.data_max,
            "probe_samples": int(len(next(iter(probe.values())))),
            "op_counts": dict(Counter(n.op_type for n in converted.graph.node)),
            "seconds": round(time.perf_counter() - start, 2),
        }


def int8_weights(model) -> dict[str, np.ndarray]:
    """The int8 weight tensor of every quantized Conv/Gemm/MatMul of ``model``, by node name.

    A weight is quantized when the node's second input comes from a DequantizeLinear of an int8
    initializer (the Q/DQ form both quantizers write).
    """
    numpy_helper = lazy_import("onnx.numpy_helper")
    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        src = dq.get(node.input[1])
        if src is not None and src.input[0] in inits:
            w = numpy_helper.to_array(inits[src.input[0]])
            if w.dtype == np.int8:
                out[node.name or node.output[0]] = w
    return out


def qdq_summary(model) -> dict:
    """Q/DQ node counts and zero-point facts of a quantized model (TensorRT needs int8, zero point 0),
    and the largest int8 weight magnitude (at most 64 makes it exact on every x86 CPU, see dnx.cpu)."""
    numpy_helper = lazy_import("onnx.numpy_helper")
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    q = dq = per_channel = 0
    zp_dtypes: set[str] = set()
    zp_nonzero = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        q += node.op_type == "QuantizeLinear"
        dq += node.op_type == "DequantizeLinear"
        if len(node.input) < 3 or not node.input[2]:
            zp_dtypes.add("uint8 (default)")  # ONNX default zero point is uint8 0: not symmetric int8
            continue
        if node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
        else:
            zp = numpy_helper.to_array(consts[node.input[2]].attribute[0].t)
        zp_dtypes.add(str(zp.dtype))
        zp_nonzero += int(np.count_nonzero(zp))
        per_channel += zp.size > 1
    return {
        "quantize_linear": q,
        "dequantize_linear": dq,
        "per_channel_dq": per_channel,
        "zero_point_dtypes": sorted(zp_dtypes),
        "nonzero_zero_points": zp_nonzero,
        "symmetric_int8": zp_dtypes == {"int8"} and zp_nonzero == 0,
        "max_abs_weight": max((int(np.abs(w.astype(np.int16)).max(initial=0)) for w in int8_weights(model).values()),
                              default=None),
    }


class Int8FromOnnx:
    """INT8 ONNX with explicit Q/DQ from FP32 ONNX, calibrated with ONNX Runtime's quantizer.

    Symmetric signed int8 (zero points 0) for activations, per-channel symmetric int8 weights,
    biases left in float: the Q/DQ form TensorRT compiles as a strongly typed network.
    Steps: ``quant_pre_process`` on a copy, calibration ranges (``method``: max | entropy |
    percentile), ``quantize_static(QuantFormat.QDQ)``. The result is cached under
    ``cache_dir``, keyed by the source hash, the calibration set hash, method and count.

    ``symmetric=False`` gives uint8 activations with zero points instead: ONNX Runtime's CPU
    kernels then fuse every Conv+Relu into QLinearConv, but TensorRT rejects non-zero zero
    points, so that flavour is for CPU serving only.

    ``weight_bits=7`` keeps every weight inside +-64 (ONNX Runtime's ``reduce_range``): CPUs
    without VNNI then cannot saturate their 16-bit pair sums, so the graph computes the same
    numbers on every x86 CPU (:mod:`dnx.cpu`). GPUs have no such limit: the TensorRT graph
    keeps 8 bits.
    """

    # Histogram bins for entropy: ORT's default of 128 equals its 128 quantized bins, which
    # leaves KL one candidate threshold (the max); 512 gives it a real search.
    ENTROPY_BINS = 512
    # TensorRT-style placement: Q/DQ on the inputs of compute and pooling ops only. Measured
    # the same parity as ORT's default (which also quantizes BatchNormalization's scale and
    # mean, so TensorRT could not fold them) with a third fewer Q/DQ nodes.
    OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "MaxPool", "GlobalAveragePool")

    def __init__(
        self,
        src: str | os.PathLike,
        calibration: CalibrationSet,
        *,
        method: str = DEFAULT_METHOD,
        per_channel: bool = True,
        symmetric: bool = True,
        weight_bits: int = 8,
        nodes_to_exclude: list[str] | None = None,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
        progress: bool = True,
        spec: ModelSpec = DEFAULT_MODEL,
    ):
        self.src = _check_source(src)
        self.calibration, self.method = calibration, check_method(method)
        if weight_bits not in (7, 8):
            raise InputError(f"int8 weights are 7 or 8 bits, not {weight_bits}")
        self.per_channel, self.symmetric, self.weight_bits = per_channel, symmetric, weight_bits
        self.nodes_to_exclude = list(nodes_to_exclude or [])
        self.cache = CalibrationCache(cache_dir) if cache_dir is not None else None
        self.progress, self.spec = progress, spec

    def recipe(self) -> dict:
        """Everything besides the inputs that determines the quantized model (part of the cache key)."""
        return {
            "quantizer": f"onnxruntime {_version('onnxruntime')} quantize_static",
            "format": "QDQ",
            "activations": "int8 symmetric per-tensor" if self.symmetric else "uint8 asymmetric per-tensor",
            "weights": f"int8 symmetric {'per-channel' if self.per_channel else 'per-tensor'}"
                       + (", 7-bit range [-64, 64]" if self.weight_bits == 7 else ""),
            "bias": "float",
            "pre_process": "quant_pre_process",
            "op_types": list(self.OP_TYPES),
            "entropy_bins": self.ENTROPY_BINS if self.method == "entropy" else None,
            "nodes_to_exclude": sorted(self.nodes_to_exclude),
        }

    def __call__(self, dst: str | os.PathLike) -> dict:
        """Write the INT8 model to ``dst`` (atomically); return its info, with ``cache_hit``."""
        onnx = lazy_import("onnx")
        start = time.perf_counter()
        sha_before = sha256_file(self.src)
        recipe = self.recipe()
        key = cache_key(sha_before, self.calibration, self.method, recipe)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            model_path, meta = cached
            atomic_write_bytes(dst, model_path.read_bytes())
            timings = meta.get("timings", {})
        else:
            with tempfile.TemporaryDirectory(prefix="dnx-int8-") as tmp:
                tmp = Path(tmp)
                out, ranges, timings = self._quantize(tmp)
                summary = qdq_summary(onnx.load(str(out)))
                if summary["quantize_linear"] == 0 or (self.symmetric and not summary["symmetric_int8"]):
                    raise DnxError(f"the quantizer did not produce the expected Q/DQ nodes ({summary}); report this bug")
                if self.weight_bits == 7 and (summary["max_abs_weight"] or 0) > SAFE_INT8_WEIGHT:
                    raise DnxError(f"the quantizer wrote int8 weights up to {summary['max_abs_weight']}, beyond the "
                                   f"7-bit range +-{SAFE_INT8_WEIGHT} asked for; report this bug")
                meta = {"qdq": summary, "timings": timings, "recipe": recipe}
                if self.cache is not None:
                    self.cache.put(key, out, ranges, meta)
                atomic_write_bytes(dst, out.read_bytes())
        _check_unchanged(self.src, sha_before)
        return {
            "precision": "int8",
            "source_sha256": sha_before,
            "sha256": sha256_file(dst),
            **recipe,
            "calibration": self.calibration.describe(self.method),
            "qdq": meta["qdq"],
            "tensorrt_compatible": meta["qdq"]["symmetric_int8"],
            "weight_bits": self.weight_bits,
            "cache_hit": cached is not None,
            "cache_key": key,
            "cache_path": str(self.cache.entry(key)) if self.cache is not None else None,
            "timings": timings,
            "seconds": round(time.perf_counter() - start, 2),
        }

    def _quantize(self, tmp: Path) -> tuple[Path, Path, dict]:
        quant = lazy_import("onnxruntime.quantization")
        calibrate = lazy_import("onnxruntime.quantization.calibrate")
        if "calibration_cache_path" not in inspect.signature(quant.quantize_static).parameters:
            raise MissingDependencyError(
                "this onnxruntime has no quantize_static(calibration_cache_path=...); install onnxruntime>=1.32"
            )
        t0 = time.perf_counter()
        copy, pre = tmp / "source.onnx", tmp / "pre.onnx"
        shutil.copyfile(self.src, copy)
        quant.quant_pre_process(str(copy), str(pre))
        t1 = time.perf_counter()

        ort_method = getattr(quant.CalibrationMethod, ORT_METHODS[self.method])
        calib_options = {"symmetric": self.symmetric}
        if self.method == "entropy":
            calib_options.update(num_bins=self.ENTROPY_BINS, num_quantized_bins=128)
        calibrator = quant.create_calibrator(
            pre, list(self.OP_TYPES), augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=ort_method, extra_options=calib_options,
        )
        data, name = self.calibration, self.spec.input_name
        with progress_bar(data.count, f"calibrating ({self.method})", self.progress) as bar, \
                contextlib.redirect_stdout(io.StringIO()):
            for first in range(0, data.count, CALIB_CHUNK):
                calibrator.collect_data(data.reader(name, first, first + CALIB_CHUNK, bar))
            tensors_range = calibrator.compute_data()
        del calibrator
        ranges = tmp / "ranges.json"
        calibrate.save_tensors_data(tensors_range, ranges)
        t2 = time.perf_counter()

        out = tmp / "int8.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quant.quantize_static(
                str(pre), str(out), None,
                quant_format=quant.QuantFormat.QDQ,
                per_channel=self.per_channel,
                activation_type=quant.QuantType.QInt8 if self.symmetric else quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8,
                op_types_to_quantize=list(self.OP_TYPES),
                nodes_to_exclude=self.nodes_to_exclude,
                calibrate_method=ort_method,
                calibration_cache_path=str(ranges),
                reduce_range=self.weight_bits == 7,  # weights only: activations keep their 8 bits
                extra_options={"ActivationSymmetric": self.symmetric, "WeightSymmetric": True, "QuantizeBias": False},
            )
        t3 = time.perf_counter()
        timings = {"pre_process_s": round(t1 - t0, 2), "calibrate_s": round(t2 - t1, 2), "quantize_s": round(t3 - t2, 2)}
        return out, ranges, timings


def _version(module: str) -> str:
    try:
        return lazy_import(module).__version__
    except (DnxError, AttributeError):
        return "unknown"
