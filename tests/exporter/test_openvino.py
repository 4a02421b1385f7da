"""OpenVINO variants: IR files, backend parameters, config rendering, parity with PyTorch.

Everything here runs for real (OpenVINO CPU plugin, ONNX Runtime's quantizer, PyTorch).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dnx.errors import InputError
from dnx.exporter import openvino as ovx
from dnx.model_repository.render import parse_config, render_config
from dnx.runtimes import openvino as ov_rt

# Keys the C++ openvino backend reads (openvino_backend README "Parameters", src/openvino.cc).
DOCUMENTED_KEYS = {
    "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "COMPILATION_NUM_THREADS", "NUM_STREAMS", "HINT_BF16",
    "ENABLE_BATCH_PADDING", "SKIP_OV_DYNAMIC_BATCHSIZE", "RESHAPE_IO_LAYERS", "CPU_EXTENSION_PATH",
}
needs_bf16 = pytest.mark.skipif(not ov_rt.cpu_supports_bf16(), reason="this CPU has no native bfloat16")


def cosine_and_max_abs(reference: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Smallest per-sample cosine similarity and largest absolute error (float64)."""
    ref, out = reference.astype(np.float64), got.astype(np.float64)
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    return float(cos.min()), float(np.abs(ref - out).max())


def quantize_qdq(onnx_path: Path, out: Path, calib: np.ndarray) -> Path:
    """Symmetric per-channel int8 Q/DQ on the convolutions (ONNX Runtime quantize_static), weights in
    7 bits as dnx's OpenVINO graph has them, so every x86 CPU computes it alike (dnx.cpu)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": c[None].copy()} for c in calib])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
        calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    return out


@pytest.fixture(scope="module")
def int8_onnx(onnx_fp32_path, photo_array, tmp_path_factory):
    calib = np.concatenate([photo_array, photo_array[:, :, :, ::-1]])  # photos and their mirror images
    return quantize_qdq(onnx_fp32_path, tmp_path_factory.mktemp("qdq") / "model.int8.onnx", calib)


@pytest.fixture(scope="module")
def variants(onnx_fp32_path, int8_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("ov")
    precisions = ["fp32", "int8"] + (["bf16"] if ov_rt.cpu_supports_bf16() else [])
    return {
        p: ovx.openvino_variant(int8_onnx if p == "int8" else onnx_fp32_path, p, root / p)
        for p in precisions
    }


def test_bf16_variant_follows_openvino_capabilities():
    caps = ov_rt.cpu_capabilities()
    assert "FP32" in caps
    assert (ovx.unsupported_reason("bf16") is None) == ("BF16" in caps)
    assert ovx.unsupported_reason("fp32") is None
    assert "not fp16" in ovx.unsupported_reason("fp16")


def test_ir_files_keep_names_dynamic_batch_and_fp32_weights(variants, onnx_fp32_path):
    files = variants["fp32"].files
    assert sorted(files) == ["model.bin", "model.xml"]
    model = ov_rt.core().read_model(str(files["model.xml"]))
    assert model.input(0).get_names() >= {"input"} and model.output(0).get_names() >= {"logits"}
    assert str(model.input(0).get_partial_shape()) == "[?,3,224,224]"
    # compress_to_fp16=False: weights stay 4 bytes each (about the size of the ONNX file).
    assert files["model.bin"].stat().st_size > 0.95 * onnx_fp32_path.stat().st_size
    types = {layer.find("data").get("element_type") for layer in ET.parse(files["model.xml"]).getroot().iter("layer")
             if layer.get("type") == "Const"}
    assert "f16" not in types and "f32" in types


def test_int8_ir_holds_fake_quantize(variants):
    text = variants["int8"].files["model.xml"].read_text()
    assert text.count('type="FakeQuantize"') > 100  # every convolution is quantized


def test_input_onnx_is_not_modified(onnx_fp32_path, tmp_path):
    before = hashlib.sha256(onnx_fp32_path.read_bytes()).hexdigest()
    ovx.IrFromOnnx(onnx_fp32_path)(tmp_path)
    assert hashlib.sha256(onnx_fp32_path.read_bytes()).hexdigest() == before


def test_parameters_are_documented_backend_keys():
    serving = ovx.ServingDefaults(max_batch_size=4, num_streams=2, threads=2)
    bf16 = ovx.backend_parameters("bf16", serving)
    assert bf16 == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": "2",
                    "ENABLE_BATCH_PADDING": "YES", "HINT_BF16": "YES"}
    int8 = ovx.backend_parameters("int8", serving)
    assert set(int8) <= DOCUMENTED_KEYS and "HINT_BF16" not in int8
    # fp32 carries OpenVINO's own property name, which only dnx's local backend reads.
    fp32 = ovx.backend_parameters("fp32", serving)
    assert set(fp32) - DOCUMENTED_KEYS == {"INFERENCE_PRECISION_HINT"} and fp32["INFERENCE_PRECISION_HINT"] == "f32"
    # Threads are written only when asked for: OpenVINO's default uses the serving machine's cores.
    assert "INFERENCE_NUM_THREADS" not in ovx.backend_parameters("bf16", ovx.ServingDefaults(max_batch_size=4))
    # Padding is only needed (and only written) when batches smaller than max_batch_size can come.
    assert "ENABLE_BATCH_PADDING" not in ovx.backend_parameters("int8", ovx.ServingDefaults(max_batch_size=1))


def test_compile_properties_map_like_the_cpp_backend():
    props = ov_rt.compile_properties({"HINT_BF16": "yes", "NUM_STREAMS": "auto", "PERFORMANCE_HINT": "throughput",
                                      "INFERENCE_NUM_THREADS": "2", "ENABLE_BATCH_PADDING": "YES"})
    assert props == {"INFERENCE_PRECISION_HINT": "bf16", "NUM_STREAMS": "AUTO", "PERFORMANCE_HINT": "THROUGHPUT",
                     "INFERENCE_NUM_THREADS": "2"}


@pytest.mark.parametrize("params,needle", [
    ({"NUM_STREAMS": "many"}, "NUM_STREAMS must be AUTO, NUMA or a number"),
    ({"PERFORMANCE_HINT": "fast"}, "PERFORMANCE_HINT must be one of"),
    ({"INFERENCE_NUM_THREADS": "-1"}, "INFERENCE_NUM_THREADS must be a non-negative number"),
    ({"HINT_BF16": "no"}, "HINT_BF16 must be YES"),
])
def test_compile_properties_refuse_what_the_backend_refuses(params, needle):
    with pytest.raises(InputError, match=needle):
        ov_rt.compile_properties(params)


def test_serving_overrides():
    s = ovx.serving_defaults("bf16", max_batch_size=1, instance_count=2, threads=None)
    assert (s.max_batch_size, s.preferred_batch_sizes, s.instance_count, s.num_streams) == (1, (), 2, 2)
    with pytest.raises(InputError, match="precision 'fp16'"):
        ovx.serving_defaults("fp16")


EXPECTED_BF16_CONFIG = """\
name: "densenet121_openvino_bf16"
backend: "openvino"
max_batch_size: 4
version_policy: { latest: { num_versions: 1 } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "labels.txt"
  }
]
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
dynamic_batching {
  preferred_batch_size: [ 4 ]
  max_queue_delay_microseconds: 500
}
parameters: { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }
parameters: { key: "NUM_STREAMS" value: { string_value: "2" } }
parameters: { key: "INFERENCE_NUM_THREADS" value: { string_value: "2" } }
parameters: { key: "ENABLE_BATCH_PADDING" value: { string_value: "YES" } }
parameters: { key: "HINT_BF16" value: { string_value: "YES" } }
model_warmup [
  {
    name: "warmup_batch_1"
    batch_size: 1
    inputs {
      key: "input"
      value: {
        data_type: TYPE_FP32
        dims: [ 3, 224, 224 ]
        random_data: true
      }
    }
  }
]
"""


def test_config_golden_parsed_with_triton_proto():
    serving = ovx.ServingDefaults(max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=500,
                                  instance_count=2, num_streams=2, threads=2)
    from dnx.pipeline import openvino_entry, triton_config
    from dnx.spec import DEFAULT_MODEL

    variant = ovx.OpenVinoVariant("bf16", {}, ovx.backend_parameters("bf16", serving), serving)
    text = render_config(triton_config(openvino_entry(variant, DEFAULT_MODEL), DEFAULT_MODEL))
    assert text == EXPECTED_BF16_CONFIG
    msg = parse_config(text)
    assert msg.backend == "openvino" and not msg.platform and not msg.default_model_filename  # model.xml is the default
    assert msg.max_batch_size == 4 and list(msg.dynamic_batching.preferred_batch_size) == [4]
    assert msg.instance_group[0].count == 2 and msg.instance_group[0].kind == msg.instance_group[0].KIND_CPU
    assert {k: v.string_value for k, v in msg.parameters.items()}["HINT_BF16"] == "YES"


def test_unsupported_precision_and_missing_onnx(tmp_path, onnx_fp32_path):
    with pytest.raises(InputError, match="fp16.*drop --precision fp16"):
        ovx.openvino_variant(onnx_fp32_path, "fp16", tmp_path)
    with pytest.raises(InputError, match="no Q/DQ nodes"):
        ovx.openvino_variant(onnx_fp32_path, "int8", tmp_path / "int8")
    with pytest.raises(InputError, match="not found"):
        ovx.IrFromOnnx(tmp_path / "missing.onnx")(tmp_path / "out")


def test_runner_pads_to_the_fixed_batch(variants, photo_array):
    v = variants["fp32"]
    padded = ov_rt.OpenVinoModel(v.files["model.xml"], v.parameters, max_batch_size=4)(photo_array)  # 4+4+2(+2 pad)
    dynamic = ov_rt.OpenVinoModel(v.files["model.xml"], v.parameters, max_batch_size=0)(photo_array)
    assert padded.shape == (len(photo_array), 1000)
    np.testing.assert_allclose(padded, dynamic, rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16), "int8"])
def test_parity_with_pytorch_on_photos(variants, precision, photo_array, torch_reference):
    from dnx.spec import DEFAULT_MODEL

    v = variants[precision]
    runner = ov_rt.OpenVinoModel(v.files["model.xml"], v.parameters, v.serving.max_batch_size)
    cos, max_abs = cosine_and_max_abs(torch_reference, runner(photo_array))
    gate = DEFAULT_MODEL.gates[precision]
    assert cos >= gate.min_cosine, (precision, cos, max_abs)
    if gate.max_abs is not None:
        assert max_abs <= gate.max_abs, (precision, cos, max_abs)
    expected = {"fp32": "f32", "bf16": "bf16"}.get(precision)
    if expected:
        assert runner.precision == expected
