"""The one rule for what a perf command measures, and the manifest's view of a model."""

from __future__ import annotations

from dnx.manifest import Manifest, ModelRecord
from dnx.perf.served import (
    ServedModel, backend_kind, manifest_entry, measurable, model_file, openvino_models, repository_manifest,
    repository_manifest_json, variant_of,
)
from dnx.model_repository.render import TritonConfig


def _models():
    fixed = {"input": [{"name": "input", "dims": ["3", "224", "224"]}]}
    steps = [{"model_name": "m_preprocess"}, {"model_name": "m_onnx"}, {"model_name": "m_softmax"}]
    return [ServedModel("m", "1", {"input": [{"name": "image", "dims": ["1"], "data_type": "TYPE_STRING"}],
                                   "ensemble_scheduling": {"step": steps}}),
            ServedModel("m_onnx", "1", fixed), ServedModel("m_preprocess", "1", fixed),
            ServedModel("m_softmax", "1", fixed), ServedModel("tiny", "1", {"input": [{"name": "x", "dims": ["-1"]}]})]


def test_what_is_measured_without_names_with_names_and_for_bench():
    kept, skipped = measurable(_models(), named=False)
    assert [m.name for m in kept] == ["m", "m_onnx"]
    assert skipped == {"tiny": "variable input dims (x)", "m_preprocess": "ensemble step of m (measured through it)",
                       "m_softmax": "ensemble step of m (measured through it)"}
    kept, skipped = measurable(_models(), named=False, ensembles=False)  # bench compares runtimes
    assert [m.name for m in kept] == ["m_onnx"] and "ensemble" in skipped["m"]
    kept, skipped = measurable(_models(), named=True)  # asked for: the steps are measured too
    assert [m.name for m in kept] == ["m", "m_onnx", "m_preprocess", "m_softmax"] and list(skipped) == ["tiny"]


def test_backend_kind_is_spelled_one_way():
    grpc = TritonConfig.from_served({"backend": "onnxruntime", "platform": "onnxruntime_onnx"})
    assert backend_kind(grpc) == "onnxruntime"
    assert backend_kind(TritonConfig.from_served({"platform": "tensorrt_plan", "backend": "tensorrt"})) == "tensorrt_plan"
    assert backend_kind(TritonConfig.from_served({"backend": "openvino"})) == "openvino"


def test_model_file_and_manifest_entry(fp32_repository):
    assert model_file(fp32_repository, "densenet121_onnx").name == "model.onnx"
    assert model_file(fp32_repository, "nope") is None
    assert manifest_entry(None, "x") is None
    typed = Manifest.from_dict({"models": {"x": {"precision": "fp32", "runtime": "onnxruntime"}}})
    entry = manifest_entry(typed, "x")
    assert isinstance(entry, ModelRecord) and entry.precision == "fp32" and manifest_entry(typed, "y") is None
    # tune still holds the JSON object: read the same way
    assert manifest_entry({"models": {"x": {"precision": "fp32"}}}, "x").precision == "fp32"


def test_perf_reads_the_typed_manifest(fp32_repository, tmp_path):
    manifest = repository_manifest(fp32_repository)
    assert isinstance(manifest, Manifest) and isinstance(manifest.models["densenet121_onnx"], ModelRecord)
    assert variant_of("densenet121_onnx", manifest) == ("fp32", "onnxruntime")
    assert repository_manifest_json(fp32_repository)["models"].keys() == manifest.models.keys()  # tune's write-back
    assert repository_manifest(tmp_path) is None and repository_manifest_json(tmp_path) is None  # not built by dnx
    ensemble = Manifest.from_dict({"models": {"v": {"precision": "int8", "runtime": "openvino"}},
                                   "ensemble": {"name": "e", "variant": "v"}})
    assert variant_of("e", ensemble) == ("int8", "ensemble(openvino)")
    assert openvino_models(fp32_repository, manifest) == []  # ONNX Runtime only
