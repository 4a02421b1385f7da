"""The golden set `dnx export` writes: contents, manifest record, publication, Triton ignoring it."""

from __future__ import annotations

import base64
import json

import numpy as np

from dnx.hashing import sha256_file
from dnx.ops import golden as g


def test_export_writes_golden_answers_recorded_in_the_manifest(fp32_repository):
    path = fp32_repository / g.GOLDEN_NAME
    doc = g.read_golden(path)
    manifest = json.loads((fp32_repository / "dnx-manifest.json").read_text())
    assert manifest["golden"]["sha256"] == sha256_file(path)
    assert manifest["golden"]["models"] == sorted(doc["models"])
    assert set(doc["models"]) == {"densenet121", "densenet121_onnx", "densenet121_preprocess", "densenet121_softmax"}
    images = g.image_bytes(doc)
    assert 3 <= len(images) <= 6 and all(b[:2] == b"\xff\xd8" for _, b in images)  # JPEG
    assert 50_000 < sum(len(b) for _, b in images) < 600_000 and path.stat().st_size < 1_000_000
    variant = doc["models"]["densenet121_onnx"]
    assert variant["gate"] == {"max_abs": 1e-3, "min_cosine": 0.99999}  # fp32's gate; random weights: no top-1
    assert variant["versions"] == ["1"] and variant["config"]["max_batch_size"] == 8
    assert doc["models"]["densenet121"]["kind"] == "ensemble" and doc["models"]["densenet121"]["variant"] == "densenet121_onnx"


def test_expected_outputs_are_what_the_exported_model_computes(fp32_repository):
    """Recomputed independently: ONNX Runtime on the exported file, softmax for the ensemble."""
    import onnxruntime as ort

    from dnx.preprocess import preprocess_bytes

    doc = g.read_golden(fp32_repository / g.GOLDEN_NAME)
    batch = np.stack([preprocess_bytes(b) for _, b in g.image_bytes(doc)])
    sess = ort.InferenceSession(str(fp32_repository / "densenet121_onnx" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": batch})[0]
    recorded = g.decode_array(doc["models"]["densenet121_onnx"]["expected"])
    assert recorded.shape == (len(batch), 1000)
    assert np.abs(recorded - logits).max() < 1e-4
    assert doc["models"]["densenet121_onnx"]["top_k"] == np.argsort(-logits, axis=1, kind="stable")[:, :5].tolist()
    probs = g.decode_array(doc["models"]["densenet121"]["expected"])
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert np.abs(probs - e / e.sum(1, keepdims=True)).max() < 1e-6


def test_publish_ships_the_golden_file(fp32_repository):
    from dnx.deploy.publish import scan_repository

    files = {f.path: f.sha256 for f in scan_repository(fp32_repository)}
    assert files[g.GOLDEN_NAME] == sha256_file(fp32_repository / g.GOLDEN_NAME)


def test_triton_loads_the_repository_and_ignores_the_golden_file(ops_server, fp32_repository):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(ops_server.http_url)
    try:
        index = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
        assert index == {m: "READY" for m in ("densenet121", "densenet121_onnx", "densenet121_preprocess",
                                              "densenet121_softmax")}
    finally:
        client.close()
    assert (fp32_repository / g.GOLDEN_NAME).is_file()


def test_damaged_records_are_one_line_errors(tmp_path):
    import pytest

    from dnx.errors import InputError

    with pytest.raises(InputError, match="damaged"):
        g.decode_array({"dtype": "float32", "shape": [2, 3], "data": base64.b64encode(b"123").decode()})
    (tmp_path / "x.json").write_text('{"format": "something else", "models": {}}')
    with pytest.raises(InputError, match="is not a dnx golden set"):
        g.read_golden(tmp_path / "x.json")
    with pytest.raises(InputError, match="not found"):
        g.read_golden(tmp_path / "missing.json")


def test_config_normalization_reads_pbtxt_and_served_json_alike(fp32_repository):
    text = (fp32_repository / "densenet121_onnx" / "config.pbtxt").read_text()
    ours = g.normalize_config(text)
    # Triton's JSON spelling: int64 as strings, parameters wrapped, autofilled fields.
    served = {"name": "densenet121_onnx", "platform": "onnxruntime_onnx", "backend": "onnxruntime",
              "max_batch_size": 8, "version_policy": {"latest": {"num_versions": 1}},
              "input": [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": ["3", "224", "224"]}],
              "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["1000"], "label_filename": "labels.txt"}],
              "instance_group": [{"name": "densenet121_onnx", "kind": "KIND_CPU", "count": 1}],
              "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": "0"},
              "parameters": {k: {"string_value": v} for k, v in ours["parameters"].items()}}
    assert g.config_differences(ours, g.normalize_config(served)) == []
    served["max_batch_size"] = 4
    served["dynamic_batching"]["preferred_batch_size"] = [4]  # what Triton fills in for max batch 4
    assert g.config_differences(ours, g.normalize_config(served)) == ["max_batch_size: expected 8, served 4"]
