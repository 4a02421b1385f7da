"""OnnxFromTorch and weight loading: real torch, real ONNX Runtime, real files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dnx.errors import WeightsError
from dnx.exporter.torch_export import imagenet_labels, load_torch_model, torch_forward
from dnx.hashing import sha256_file

import torch


@pytest.fixture(scope="module")
def random_model():
    model, info = load_torch_model(weights="random", seed=0)
    return model, info


def test_random_weights_are_seeded_and_labelled(random_model):
    model, info = random_model
    again, _ = load_torch_model(weights="random", seed=0)
    other, _ = load_torch_model(weights="random", seed=1)
    w = model.classifier.weight
    assert torch.equal(w, again.classifier.weight)
    assert not torch.equal(w, other.classifier.weight)
    assert info.random and not info.trained and info.source == "random" and info.seed == 0


def test_pth_roundtrip_with_old_key_names_and_dataparallel_prefix(random_model, tmp_path):
    model, _ = random_model
    import re

    old = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    state = {}
    for k, v in model.state_dict().items():
        m = old.match(k)
        state["module." + (f"{m.group(1)}.{m.group(2)}" if m else k)] = v
    assert any(".norm.1.weight" in k for k in state)
    path = tmp_path / "old.pth"
    torch.save({"state_dict": state}, path)
    before = sha256_file(path)
    loaded, info = load_torch_model(weights=str(path))
    assert sha256_file(path) == before  # input never modified
    assert info.sha256 == before and info.trained and not info.random
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_torch_model(weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, b"PK\x03\x04garbage"])
def test_corrupt_weights_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_torch_model(weights=str(path))


def test_truncated_weights_file(random_model, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(random_model[0].state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_torch_model(weights=str(path))


def test_pickled_code_is_refused(tmp_path):
    # weights_only=True: an arbitrary pickled object is not loaded.
    path = tmp_path / "evil.pth"
    torch.save({"obj": hashlib.sha256}, path)
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_torch_model(weights=str(path))


def test_wrong_keys(tmp_path):
    import torchvision

    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="missing keys"):
        load_torch_model(weights=str(path))


def test_wrong_shapes(random_model, tmp_path):
    state = dict(random_model[0].state_dict())
    state["classifier.weight"] = torch.zeros(10, 1024)
    state["classifier.bias"] = torch.zeros(10)
    path = tmp_path / "ten.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="wrong shape"):
        load_torch_model(weights=str(path))


def test_imagenet_offline_error_or_trained(monkeypatch, tmp_path):
    # With no network and an empty hub cache, the download fails with a one-line fix.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        _, info = load_torch_model(weights="imagenet")
    except WeightsError as exc:
        assert "--weights random" in str(exc) and "\n" not in str(exc)
    else:  # a connected machine: the real weights loaded
        assert info.trained and info.source.startswith("imagenet:")


def test_labels_are_imagenet():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[281] == "tabby"


def test_exported_onnx_has_dynamic_batch_and_matches_torch(onnx_fp32_path, random_model):
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_fp32_path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    inp, out = proto.graph.input[0], proto.graph.output[0]
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, 224, 224]
    sess = ort.InferenceSession(str(onnx_fp32_path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 224, 224), dtype=np.float32)
        got = sess.run(None, {"input": x})[0]
        ref = torch_forward(random_model[0], x)
        assert got.shape == (n, 1000)
        assert np.abs(got - ref).max() < 1e-3
