"""TensorRT engine building: pure settings/profile/flag logic here, real builds on a GPU only."""

from __future__ import annotations

import enum
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dnx.errors import InputError, MissingDependencyError
from dnx.exporter import engine as eng
from dnx.exporter.engine import (
    EngineFromOnnx,
    EngineSettings,
    builder_flags,
    hardware_compatibility_level,
    network_flags,
    parse_nvidia_smi,
    profile_shapes,
    tensorrt_available,
)

TRT10_BUILDER_FLAGS = {"FP16", "BF16", "INT8", "FP8", "TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "STRICT_TYPES"}
TRT11_BUILDER_FLAGS = {"TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}  # precision flags removed


# ---------------------------------------------------------------- pure code (no TensorRT)


def test_profile_is_batch_one_to_max():
    assert profile_shapes((3, 224, 224), EngineSettings(max_batch_size=8)) == (
        (1, 3, 224, 224), (8, 3, 224, 224), (8, 3, 224, 224))
    assert profile_shapes((3, 224, 224), EngineSettings(max_batch_size=16, opt_batch_size=4))[1] == (4, 3, 224, 224)
    assert profile_shapes((3, 224, 224), EngineSettings(max_batch_size=1)) == ((1, 3, 224, 224),) * 3


@pytest.mark.parametrize(
    "settings, message",
    [
        (EngineSettings(max_batch_size=0), "max batch size must be >= 1"),
        (EngineSettings(max_batch_size=4, opt_batch_size=8), "opt batch size 8 must be between 1 and the max batch size 4"),
        (EngineSettings(optimization_level=6), "optimization level must be 0-5"),
        (EngineSettings(workspace_mib=0), "at least 1 MiB"),
    ],
)
def test_bad_settings_are_one_line_input_errors(settings, message):
    with pytest.raises(InputError, match=message) as err:
        settings.validated()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("available", [TRT10_BUILDER_FLAGS, TRT11_BUILDER_FLAGS])
def test_builder_flags_never_set_precision(available):
    to_set, to_clear = builder_flags(EngineSettings(), available)
    assert to_set == [] and to_clear == ["TF32"]  # strict FP32 for the 1e-3 parity gate
    to_set, to_clear = builder_flags(EngineSettings(version_compatible=True, tf32=True), available)
    assert to_set == ["VERSION_COMPATIBLE", "TF32"] and to_clear == []
    assert not eng.PRECISION_FLAGS & set(to_set)


def test_version_compatible_needs_the_flag():
    with pytest.raises(InputError, match="VERSION_COMPATIBLE"):
        builder_flags(EngineSettings(version_compatible=True), {"TF32"})


def test_strongly_typed_when_the_enum_has_it():
    assert network_flags({"EXPLICIT_BATCH", "STRONGLY_TYPED"}) == ["STRONGLY_TYPED"]  # TensorRT 10
    assert network_flags({"STRONGLY_TYPED"}) == ["STRONGLY_TYPED"]  # TensorRT 11: accepted, implied
    assert network_flags({"EXPLICIT_BATCH"}) == []  # older: no strongly typed networks


def test_hardware_compatibility_level():
    assert hardware_compatibility_level(EngineSettings()) is None
    assert hardware_compatibility_level(EngineSettings(hardware_compatible=True)) == "AMPERE_PLUS"


def test_settings_round_trip_for_the_manifest():
    d = EngineSettings(max_batch_size=4, timing_cache=None).to_dict()
    assert d["max_batch_size"] == 4 and d["timing_cache"] is None and d["tf32"] is False
    assert EngineSettings(**d) == EngineSettings(max_batch_size=4, timing_cache=None)


def test_parse_nvidia_smi():
    assert parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0\nNVIDIA H100 80GB HBM3, 9.0\n") == {
        "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "source": "nvidia-smi"}
    assert parse_nvidia_smi("") is None


def test_tensorrt_available_gives_a_reason():
    ok, reason = tensorrt_available()
    assert reason
    if not ok:
        assert "TensorRT" in reason and ("not importable" in reason or "no NVIDIA GPU" in reason)


def test_build_without_tensorrt_raises_the_skip_reason(tmp_path):
    ok, reason = tensorrt_available()
    if ok:
        pytest.skip("TensorRT and a GPU are present; the real build tests below cover this machine")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"onnx")
    with pytest.raises(MissingDependencyError) as err:
        EngineFromOnnx(src).build()
    assert str(err.value) == reason


# ---------------------------------------------------------------- wiring, against a fake TensorRT
# MOCK: TensorRT cannot be installed on these CPU machines (see STACK-FACTS.md), so this test
# records the calls EngineFromOnnx makes on a stand-in module with TensorRT 10's API shape.
# The real builds are the `tensorrt`+`gpu` tests at the end of this file.


def _fake_tensorrt(calls: list, version: str = "10.13.3"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(sorted(TRT10_BUILDER_FLAGS))})
    trt.HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel", "NONE AMPERE_PLUS")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.OnnxParserFlag = enum.Enum("OnnxParserFlag", "NATIVE_INSTANCENORM")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Cache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return self.blob + b"+timings"

    class Config:
        def __getattr__(self, name):
            return lambda *a, **k: calls.append((name, a, k))

        def __setattr__(self, name, value):
            calls.append((name, value))
            object.__setattr__(self, name, value)

        def create_timing_cache(self, blob):
            return Cache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", cache.blob))
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

    class Profile:
        def set_shape(self, *args):
            calls.append(("set_shape", args))

    network = types.SimpleNamespace(get_input=lambda i: types.SimpleNamespace(name="input"))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return network

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, net, config):
            return b"PLAN"

    class OnnxParser:
        num_errors = 0

        def __init__(self, net, logger):
            pass

        def set_flag(self, flag):
            calls.append(("parser_flag", flag.name))

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return True

    class Engine:
        num_io_tensors = 2
        _io = {"input": (trt.TensorIOMode.INPUT, (-1, 3, 224, 224)), "logits": (trt.TensorIOMode.OUTPUT, (-1, 1000))}

        def get_tensor_name(self, i):
            return list(self._io)[i]

        def get_tensor_mode(self, name):
            return self._io[name][0]

        def get_tensor_dtype(self, name):
            return "DataType.FLOAT"

        def get_tensor_shape(self, name):
            return self._io[name][1]

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 3, 224, 224), (4, 3, 224, 224), (4, 3, 224, 224)]

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda plan: Engine())
    return trt


def test_engine_wiring_with_a_fake_tensorrt(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(calls))
    monkeypatch.setattr(eng.trt_runtime, "gpu_info", lambda: {"name": "NVIDIA H100", "compute_capability": "9.0", "source": "test"})
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx bytes")
    cache = tmp_path / "trt" / "timing.cache"
    cache.parent.mkdir()
    cache.write_bytes(b"old")
    settings = EngineSettings(max_batch_size=4, workspace_mib=512, optimization_level=5,
                              hardware_compatible=True, version_compatible=True, timing_cache=str(cache))

    meta = EngineFromOnnx(src, settings, precision="int8")(tmp_path / "model.plan")

    assert (tmp_path / "model.plan").read_bytes() == b"PLAN"
    assert src.read_bytes() == b"onnx bytes"
    assert ("create_network", 1 << 1) in calls  # STRONGLY_TYPED only, no EXPLICIT_BATCH
    assert ("parse_from_file", str(src)) in calls
    assert ("parser_flag", "NATIVE_INSTANCENORM") in calls
    assert ("set_shape", ("input", (1, 3, 224, 224), (4, 3, 224, 224), (4, 3, 224, 224))) in calls
    assert [c for c in calls if c[0] == "set_memory_pool_limit"][0][1][1] == 512 << 20
    assert ("builder_optimization_level", 5) in calls
    flags_set = [c[1][0].name for c in calls if c[0] == "set_flag"]
    assert flags_set == ["VERSION_COMPATIBLE"]  # never FP16/INT8: precision is in the graph
    assert [c[1][0].name for c in calls if c[0] == "clear_flag"] == ["TF32"]
    assert ("hardware_compatibility_level", sys.modules["tensorrt"].HardwareCompatibilityLevel.AMPERE_PLUS) in calls
    assert ("set_timing_cache", b"old") in calls
    assert cache.read_bytes() == b"old+timings"  # saved back for the next build
    assert meta["tensorrt_version"] == "10.13.3" and meta["gpu_name"] == "NVIDIA H100"
    assert meta["compute_capability"] == "9.0" and meta["precision"] == "int8"
    assert meta["profile"] == {"input": "input", "min": (1, 3, 224, 224), "opt": (4, 3, 224, 224), "max": (4, 3, 224, 224)}
    assert meta["timing_cache"] == {"path": str(cache), "loaded_bytes": 3, "reused": True, "saved_bytes": 11}
    assert meta["io"][0] == {"name": "input", "mode": "INPUT", "dtype": "FLOAT", "shape": [-1, 3, 224, 224],
                             "profile": [[1, 3, 224, 224], [4, 3, 224, 224], [4, 3, 224, 224]]}


# ---------------------------------------------------------------- real TensorRT on a GPU

_TRT_OK, _TRT_REASON = tensorrt_available()
requires_trt = pytest.mark.skipif(not _TRT_OK, reason=f"needs TensorRT and an NVIDIA GPU: {_TRT_REASON}")


@pytest.fixture(scope="module")
def densenet(onnx_fp32_path):
    from dnx.exporter.torch_export import load_torch_model

    return load_torch_model(weights="random", seed=0)[0], onnx_fp32_path


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@requires_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_engine_builds_and_passes_parity(precision, densenet, tmp_path_factory):
    from dnx.exporter.calibration import calibration_set
    from dnx.exporter.precision import Fp16FromOnnx, Int8FromOnnx
    from dnx.parity import Variant, check_parity
    from dnx.runtimes import tensorrt
    from dnx.runtimes import torch as torch_rt

    model, fp32 = densenet
    work = tmp_path_factory.mktemp(precision)
    src = fp32
    if precision == "fp16":
        src = work / "fp16.onnx"
        Fp16FromOnnx(fp32)(src)
    elif precision == "int8":
        src = work / "int8.onnx"
        calib = calibration_set(Path(__file__).parents[1] / "fixtures" / "calib", samples=6, progress=False)
        Int8FromOnnx(fp32, calib, cache_dir=work / "cache", progress=False)(src)
    cache = tmp_path_factory.getbasetemp() / "timing.cache"
    settings = EngineSettings(max_batch_size=4, opt_batch_size=2, optimization_level=2, timing_cache=str(cache))
    meta = EngineFromOnnx(src, settings, precision=precision)(work / "model.plan")

    assert meta["profile"]["min"] == (1, 3, 224, 224) and meta["profile"]["max"] == (4, 3, 224, 224)
    assert meta["io"][0]["profile"] == [[1, 3, 224, 224], [2, 3, 224, 224], [4, 3, 224, 224]]
    assert meta["compute_capability"] and meta["tensorrt_version"]
    assert cache.is_file() and cache.stat().st_size > 0
    report = check_parity(torch_rt.runner(model), [Variant(f"densenet121_trt_{precision}", precision,
                                                          tensorrt.runner(work / "model.plan", f"trt-{precision}"), runtime="tensorrt")])
    print(report.format_table())
    assert report.passed, report.format_table()
    assert np.isfinite(report.rows[0].metrics.cos_min)

