"""FP16 and INT8 ONNX variants of a random-weight DenseNet-121, on real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dnx.errors import InputError
from dnx.exporter.calibration import calibration_set
from dnx.hashing import sha256_file
from dnx.exporter.precision import Fp16FromOnnx, Int8FromOnnx, qdq_summary
from dnx.parity import cosine_per_sample

import onnx
import onnx.numpy_helper
import onnxruntime as ort
numpy_helper = onnx.numpy_helper

CALIB_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "calib"


@pytest.fixture(scope="module")
def source_sha(onnx_fp32_path) -> str:
    """Hash of the FP32 source taken before any converter touched it."""
    return sha256_file(onnx_fp32_path)


@pytest.fixture(scope="module")
def fp16(onnx_fp32_path, source_sha, tmp_path_factory):
    dst = tmp_path_factory.mktemp("fp16") / "model.onnx"
    return dst, Fp16FromOnnx(onnx_fp32_path)(dst)


@pytest.fixture(scope="module")
def int8(onnx_fp32_path, source_sha, tmp_path_factory):
    calib = calibration_set(CALIB_DIR, samples=6, progress=False)
    out = tmp_path_factory.mktemp("int8")
    return out / "model.onnx", Int8FromOnnx(onnx_fp32_path, calib, cache_dir=out / "cache", progress=False)(out / "model.onnx")


def _run(path, x, exact: bool = False):
    """ONNX Runtime outputs; ``exact`` runs the graph unoptimised, so Q/DQ is float fake-quant (a GPU's
    arithmetic) instead of this CPU's int8 kernels."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def probe_batch():
    from dnx.preprocess import photo_batch

    rand = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    return np.concatenate([photo_batch(limit=4), rand])


def test_fp16_keeps_fp32_io_and_converts_weights(fp16):
    path, info = fp16
    model = onnx.load(str(path))
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    dtypes = [i.data_type for i in model.graph.initializer]
    assert dtypes.count(onnx.TensorProto.FLOAT16) > 100  # conv weights and BN params
    assert info["precision"] == "fp16" and info["io_types"] == "fp32"
    assert info["fp32_nodes"] == [] and info["overflow_nodes"] == []  # random weights stay far from 65504
    assert info["probe_samples"] == 6


def test_fp16_parity_with_fp32(onnx_fp32_path, fp16, probe_batch):
    ref, out = _run(onnx_fp32_path, probe_batch), _run(fp16[0], probe_batch)
    assert out.dtype == np.float32
    assert cosine_per_sample(ref, out).min() >= 0.999
    assert np.abs(ref - out).max() < 0.05


def _overflow_model(path: Path) -> None:
    """y = (x * 300)^2 / 90000: the square (9e4 for x=1) overflows FP16 (max 65504)."""
    h = onnx.helper
    nodes = [
        h.make_node("Mul", ["x", "k300"], ["a"], name="up1"),
        h.make_node("Mul", ["a", "a"], ["b"], name="square"),
        h.make_node("Mul", ["b", "kdown"], ["y"], name="down"),
    ]
    inits = [numpy_helper.from_array(np.array([300.0], np.float32), "k300"),
             numpy_helper.from_array(np.array([1 / 90000], np.float32), "kdown")]
    graph = h.make_graph(nodes, "overflow", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))


def _node_output_types(path: Path) -> dict[str, int]:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    return {n.name: types[n.output[0]] for n in model.graph.node}


def test_fp16_overflowing_nodes_stay_fp32(tmp_path):
    # ONNX Runtime's CPU provider runs many FP16 ops through FP32 casts, so the overflow is
    # shown with numpy and the fix is checked on the graph's types (what TensorRT compiles).
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(300) * np.float16(300))
    src = tmp_path / "overflow.onnx"
    _overflow_model(src)
    x = np.ones((1, 4), np.float32)
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

    naive = Fp16FromOnnx(src, probe={"x": x}, data_max=np.inf)(tmp_path / "naive.onnx")
    assert naive["fp32_nodes"] == []
    types = _node_output_types(tmp_path / "naive.onnx")
    assert types["up1"] == types["square"] == types["down"] == f16

    info = Fp16FromOnnx(src, probe={"x": x})(tmp_path / "safe.onnx")
    # "square" produces 9e4 and "down" consumes it: both stay FP32; "up1" (300) is converted.
    assert info["fp32_nodes"] == sorted(info["overflow_nodes"]) == ["down", "square"]
    types = _node_output_types(tmp_path / "safe.onnx")
    assert (types["up1"], types["square"], types["down"]) == (f16, f32, f32)
    y = ort.InferenceSession(str(tmp_path / "safe.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, np.ones((1, 4)), rtol=1e-3)


def test_int8_has_symmetric_qdq_with_per_channel_weights(int8):
    path, info = int8
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 100 and ops.count("DequantizeLinear") > 100
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[2] in inits]
    assert len(zero_points) == ops.count("QuantizeLinear") + ops.count("DequantizeLinear")
    assert all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    # Every Conv weight (120) and the classifier's Gemm weight (1) is dequantized per channel.
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and inits[n.input[2]].size > 1]
    assert len(per_channel) == 121
    axes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("axis", 1) for n in per_channel]
    assert axes == [0] * 121  # output channels
    # BatchNormalization parameters stay plain initializers (TensorRT can fold them).
    producers = {o for n in model.graph.node for o in n.output}
    for bn in (n for n in model.graph.node if n.op_type == "BatchNormalization"):
        assert not any(i in producers for i in bn.input[1:])
    summary = info["qdq"]
    assert summary == qdq_summary(model)
    assert summary["symmetric_int8"] and summary["nonzero_zero_points"] == 0
    assert summary["quantize_linear"] == ops.count("QuantizeLinear")


def test_int8_info_describes_calibration(int8):
    _, info = int8
    calib = info["calibration"]
    assert calib["count"] == 6 and calib["images_found"] == 6
    assert calib["method"] == "max" and calib["synthetic"] is False
    assert calib["source"] == str(CALIB_DIR) and len(calib["sha256"]) == 64
    assert info["cache_hit"] is False
    assert info["format"] == "QDQ" and "per-channel" in info["weights"]


def test_int8_parity_with_fp32(onnx_fp32_path, int8, probe_batch):
    # The TensorRT graph: full-range weights, which a CPU without VNNI computes with saturating
    # sums, so its parity is judged on the exact Q/DQ arithmetic, as the export's gate does.
    ref, out = _run(onnx_fp32_path, probe_batch), _run(int8[0], probe_batch, exact=True)
    assert cosine_per_sample(ref, out).min() >= 0.995
    assert int8[1]["tensorrt_compatible"] is True and int8[1]["weight_bits"] == 8
    assert int8[1]["qdq"]["max_abs_weight"] > 64  # 8 bits used: nothing narrowed for the GPU


def test_asymmetric_uint8_flavour_for_cpu_serving(onnx_fp32_path, int8, probe_batch, tmp_path):
    calib = calibration_set(CALIB_DIR, samples=6, progress=False)
    info = Int8FromOnnx(onnx_fp32_path, calib, symmetric=False, weight_bits=7, cache_dir=tmp_path,
                        progress=False)(tmp_path / "u8.onnx")
    assert info["tensorrt_compatible"] is False and info["activations"] == "uint8 asymmetric per-tensor"
    assert info["qdq"]["zero_point_dtypes"] == ["int8", "uint8"]  # int8 weights, uint8 activations
    assert info["qdq"]["nonzero_zero_points"] > 0
    assert info["weight_bits"] == 7 and info["weights"].endswith("7-bit range [-64, 64]")
    assert info["qdq"]["max_abs_weight"] == 64  # the widest weight uses the whole 7-bit range
    assert info["cache_key"] != int8[1]["cache_key"]
    # The CPU graph runs through this CPU's own int8 kernels: exact on any x86 CPU.
    ref, out = _run(onnx_fp32_path, probe_batch), _run(tmp_path / "u8.onnx", probe_batch)
    assert cosine_per_sample(ref, out).min() >= 0.995


def test_weight_bits_other_than_7_or_8_are_refused(onnx_fp32_path):
    calib = calibration_set(CALIB_DIR, samples=1, progress=False)
    with pytest.raises(InputError, match="int8 weights are 7 or 8 bits, not 6"):
        Int8FromOnnx(onnx_fp32_path, calib, weight_bits=6)


def test_converters_never_modify_their_input(onnx_fp32_path, source_sha, fp16, int8):
    assert sha256_file(onnx_fp32_path) == source_sha
    assert fp16[1]["source_sha256"] == source_sha == int8[1]["source_sha256"]
    assert fp16[1]["sha256"] == sha256_file(fp16[0]) and int8[1]["sha256"] == sha256_file(int8[0])


def test_missing_source_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="no such ONNX file") as err:
        Fp16FromOnnx(tmp_path / "absent.onnx")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="unknown calibration method"):
        Int8FromOnnx(__file__, calibration_set(synthetic=True, samples=1), method="kl")


def _activation_scales(path) -> dict[str, float]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("method", ["percentile", pytest.param("entropy", marks=pytest.mark.slow)])
def test_other_calibration_methods_clip_below_max(method, onnx_fp32_path, int8, tmp_path):
    calib = calibration_set(CALIB_DIR, samples=6, progress=False)
    info = Int8FromOnnx(onnx_fp32_path, calib, method=method, cache_dir=None, progress=False)(tmp_path / "m.onnx")
    assert info["qdq"]["symmetric_int8"] and info["calibration"]["method"] == method
    assert info["cache_hit"] is False and info["cache_path"] is None
    maxed, clipped = _activation_scales(int8[0]), _activation_scales(tmp_path / "m.onnx")
    assert maxed.keys() == clipped.keys()
    # Percentile and KL-entropy thresholds never exceed the observed max, and some clip below it.
    assert all(clipped[k] <= maxed[k] * (1 + 1e-5) for k in maxed)
    assert sum(clipped[k] < 0.99 * maxed[k] for k in maxed) > len(maxed) // 4
