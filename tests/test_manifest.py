"""The typed manifest (one reader, lossless round trip) and its one-line calibration summary."""

from __future__ import annotations

import json

import pytest

from dnx.errors import InputError
from dnx.manifest import (MANIFEST_NAME, Manifest, ModelRecord, calibration_summary, load_manifest, read_manifest,
                          repository_calibration, write_manifest)


def test_demo_calibrations_are_flagged_and_user_images_are_not():
    bundled = {"calibration": {"kind": "bundled", "count": 26, "method": "max",
                               "source": "bundled scikit-image photographs (generic, not production)"}}
    assert calibration_summary(bundled) == (
        "INT8 calibrated on 26 bundled scikit-image photographs (generic, not production), max ranges; "
        "re-export with --calib-dir <your images> for production")
    synthetic = {"calibration": {"synthetic": True, "count": 8, "method": "max", "source": "synthetic"}}  # older manifests: no kind
    assert "8 SYNTHETIC random tensors (not production)" in calibration_summary(synthetic)
    assert "--calib-dir" in calibration_summary(synthetic)
    own = {"calibration": {"kind": "images", "count": 512, "method": "entropy", "source": "/data/val"}}
    assert calibration_summary(own) == "INT8 calibrated on 512 images from /data/val, entropy ranges"
    assert calibration_summary({"models": {}}) == "no INT8 model (nothing calibrated)"


def test_repository_without_a_manifest(tmp_path):
    assert repository_calibration(tmp_path).startswith("unknown (")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"models": {}}))
    assert repository_calibration(tmp_path) == "no INT8 model (nothing calibrated)"


def test_an_exported_manifest_reads_as_typed_records_and_writes_back_unchanged(fp32_repository, tmp_path):
    text = (fp32_repository / MANIFEST_NAME).read_text()
    manifest = load_manifest(fp32_repository)
    record = manifest.models["densenet121_onnx"]
    assert (record.runtime, record.precision, record.backend, record.max_batch_size) == ("onnxruntime", "fp32",
                                                                                         "onnxruntime", 8)
    assert record.passed and record.files["1/model.onnx"] == json.loads(text)["models"]["densenet121_onnx"]["files"]["1/model.onnx"]
    assert manifest.model == "densenet121" and manifest.weights["random"] is True
    write_manifest(tmp_path, manifest)
    assert (tmp_path / MANIFEST_NAME).read_text() == text  # same keys, same order, same values


def test_keys_the_types_do_not_name_survive_a_round_trip():
    data = {"model": "resnet50", "tuning": {"objective": "throughput"}, "models": {
        "m": {"runtime": "openvino", "config": {"max_batch_size": 4}, "tune": {"throughput": 101.5}, "bench": {}}}}
    manifest = Manifest.from_dict(json.loads(json.dumps(data)))
    assert manifest.extra == {"tuning": {"objective": "throughput"}}
    assert manifest.models["m"].extra == {"tune": {"throughput": 101.5}, "bench": {}}
    assert manifest.models["m"].get("tune") == {"throughput": 101.5} and manifest.models["m"].get("runtime") == "openvino"
    assert manifest.to_dict() == data


def test_a_new_record_writes_every_field_and_a_gate_failure_is_not_passed():
    record = ModelRecord("m", runtime="tensorrt", platform="tensorrt_plan", parity={"passed": False})
    assert not record.passed and ModelRecord("n").passed
    assert record.to_dict()["backend"] is None and list(record.to_dict())[:3] == ["runtime", "precision", "backend"]


def test_one_reader_for_missing_corrupt_and_foreign_manifests(tmp_path):
    assert load_manifest(tmp_path, required=False) is None
    with pytest.raises(InputError, match="not found; build the repository first with `dnx export`"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(InputError, match="unreadable or corrupt"):
        load_manifest(tmp_path, required=False)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"models": []}))
    with pytest.raises(InputError, match='no valid "models" object'):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"models": {"a": {"runtime": "onnxruntime"}}}))
    assert read_manifest(tmp_path) == {"models": {"a": {"runtime": "onnxruntime"}}}  # the dict, for older callers
