"""The bytes-in models dnx export writes: configs, the copied preprocessing code, the variant choice."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from dnx.errors import InputError
from dnx.manifest import Manifest, ModelRecord
from dnx.model_repository.ensemble import (
    PREPROCESS_LIBRARY, choose_variant, measured_throughput, render_ensemble, render_preprocess,
)
from dnx.model_repository.render import parse_config
from dnx.spec import MODELS, get_spec


def test_ensemble_config_parses_and_chains_the_steps():
    spec = get_spec("resnet50")
    cfg = parse_config(render_ensemble(spec, "resnet50_openvino_int8", 1))
    assert cfg.name == "resnet50" and cfg.platform == "ensemble" and cfg.max_batch_size == 1
    assert cfg.input[0].name == "image" and cfg.input[0].data_type == 13  # TYPE_STRING
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [
        "resnet50_preprocess", "resnet50_openvino_int8", "resnet50_softmax"]
    first, middle, last = cfg.ensemble_scheduling.step
    assert dict(first.output_map) == {"input": "preprocessed"} and dict(middle.input_map) == {"input": "preprocessed"}
    assert dict(middle.output_map) == {"logits": "logits"} and dict(last.output_map) == {"probabilities": "probabilities"}
    assert cfg.output[0].label_filename == "labels.txt" and list(cfg.output[0].dims) == [1000]


def test_preprocess_config_carries_the_spec_transform():
    spec = get_spec("convnext_tiny")
    cfg = parse_config(render_preprocess(spec, 16, instances=2))
    assert cfg.backend == "python" and list(cfg.output[0].dims) == [3, 224, 224] and list(cfg.input[0].dims) == [1]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params == {"resize": "236", "crop": "224", "interpolation": "bilinear",
                      "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
    assert cfg.instance_group[0].count == 2


def test_export_places_the_one_preprocessing_file_beside_model_py(fp32_repository):
    pre = fp32_repository / "densenet121_preprocess" / "1"
    assert (pre / "model.py").is_file()
    copied = (pre / "dnx_preprocess.py").read_bytes()
    assert hashlib.sha256(copied).digest() == hashlib.sha256(PREPROCESS_LIBRARY.read_bytes()).digest()
    assert (fp32_repository / "densenet121" / "1").is_dir()
    assert parse_config((fp32_repository / "densenet121_softmax" / "config.pbtxt").read_text()).backend == "onnxruntime"


def test_copied_preprocessing_runs_without_dnx(fp32_repository, photos):
    """The Python backend has no dnx: the copy must import and give the same array on its own."""
    from dnx.preprocess import load_image

    code = (
        "import sys, types, numpy as np\n"
        "sys.modules['dnx'] = None  # any `import dnx...` now fails, as in the NGC image\n"
        f"sys.path.insert(0, {str(fp32_repository / 'densenet121_preprocess' / '1')!r})\n"
        "import dnx_preprocess as p\n"
        "spec = types.SimpleNamespace(resize=256, crop=224, interpolation='bilinear',"
        " mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))\n"
        f"np.save(sys.argv[1], p.preprocess_bytes(open({str(photos[0])!r}, 'rb').read(), spec))\n"
        "try:\n    p.preprocess_bytes(b'', spec)\nexcept p.InputError as e:\n    print('ERR', e)\n"
    )
    out = fp32_repository.parent / "copied.npy"
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERR empty image (0 bytes)" in r.stdout
    assert np.array_equal(np.load(out), load_image(photos[0]))
    out.unlink()


def _entry(name, runtime, precision, passed=True):
    return ModelRecord(name, runtime=runtime, precision=precision, parity={"passed": passed})


def test_choose_variant():
    models = {n: _entry(n, r, p) for n, r, p in [("m_onnx", "onnxruntime", "fp32"), ("m_openvino_int8", "openvino", "int8"),
                                                ("m_openvino_bf16", "openvino", "bf16"), ("m_openvino", "openvino", "fp32")]}
    assert choose_variant(models, None) == ("m_onnx", "most accurate variant that passed its gate")
    assert choose_variant(models, "m_openvino_int8")[0] == "m_openvino_int8"
    name, why = choose_variant(models, None, {"m_openvino_int8": 180.0, "m_onnx": 66.0, "gone": 999.0})
    assert name == "m_openvino_int8" and "180.0 infer/s" in why
    models["m_onnx"].parity["passed"] = False
    assert choose_variant(models, None)[0] == "m_openvino"
    with pytest.raises(InputError, match="--serve-variant 'nope' was not built; choose one of: m_onnx"):
        choose_variant(models, "nope")


def test_measured_throughput_reads_tune_and_bench_records():
    manifest = {"models": {"a": {"tune": {"throughput": 120.5}}, "b": {"bench": {"throughput": 80}}, "c": {}}}
    assert measured_throughput(Manifest.from_dict(manifest)) == {"a": 120.5, "b": 80.0}
    assert measured_throughput(None) == {}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_spec_names_its_bytes_path(name):
    spec = get_spec(name)
    assert (spec.ensemble_name, spec.preprocess_name, spec.softmax_name) == (name, f"{name}_preprocess", f"{name}_softmax")
