"""The whole CPU export as a user runs it: fp32 + calibrated int8, ONNX Runtime + OpenVINO, parity
gates, then `dnx validate` rerunning every model through dnx.runtimes."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.cpu import NEEDS_NOTHING, saturated_pairs, this_cpu
from dnx.model_repository.render import parse_config
from dnx.pipeline.stages import EXACT_QDQ_NOTE

# ---------------------------------------------------------------- the whole CPU export

CALIB_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "calib"
MODELS = {"densenet121_onnx": ("onnxruntime", "fp32"), "densenet121_onnx_int8": ("onnxruntime", "int8"),
          "densenet121_openvino": ("openvino", "fp32"), "densenet121_openvino_int8": ("openvino", "int8")}


@pytest.fixture(scope="module")
def cpu_int8_repository(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "model_repository"
    r = CliRunner().invoke(cli, ["export", "--weights", "random", "--target", "cpu", "--precision", "fp32",
                                 "--precision", "int8", "--calib-dir", str(CALIB_DIR), "--calib-samples", "4",
                                 "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_cpu_export_with_int8_and_openvino_passes_every_gate(cpu_int8_repository):
    repo = cpu_int8_repository
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    assert {n: (m["runtime"], m["precision"]) for n, m in manifest["models"].items()} == MODELS
    stages = {s["name"]: s["status"] for s in manifest["stages"]}
    assert stages["int8_onnx"] == stages["openvino_models"] == stages["parity"] == "OK"
    assert manifest["parity"]["passed"] is True and len(manifest["parity"]["variants"]) == 4
    for name, (runtime, precision) in MODELS.items():
        parity = manifest["models"][name]["parity"]
        assert parity["passed"] is True, (name, parity)
        assert parity["cos_min"] >= (0.99999 if precision == "fp32" else 0.99), (name, parity["cos_min"])
        cfg = parse_config((repo / name / "config.pbtxt").read_text())
        assert cfg.backend == runtime and cfg.name == name
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert params == manifest["models"][name]["config"]["parameters"]
    assert manifest["calibration"]["count"] == 4
    ov_int8 = (repo / "densenet121_openvino_int8" / "1" / "model.xml").read_text()
    assert ov_int8.count('type="FakeQuantize"') > 100


@pytest.mark.slow
def test_validate_reruns_every_model_with_its_served_config(cpu_int8_repository):
    r = CliRunner().invoke(cli, ["validate", "--repository", str(cpu_int8_repository), "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["variant"]: row for row in json.loads(r.output)["local"]["variants"]}
    assert set(rows) == set(MODELS) and all(row["passed"] for row in rows.values())
    manifest = json.loads((cpu_int8_repository / "dnx-manifest.json").read_text())
    for name, row in rows.items():
        # Same runtime, same config, same probe inputs (dnx.preprocess.probe_inputs): validate agrees with what export measured.
        assert row["cos_min"] == pytest.approx(manifest["models"][name]["parity"]["cos_min"], abs=1e-4), name


# ---------------------------------------------------------------- int8 that is exact on every x86 CPU

def _classifier_operands(model_path: Path, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's (Gemm's) quantized input activations over ``inputs`` and its int8 weights.

    The quantized values come from ONNX Runtime with graph optimisations off, which runs Q/DQ
    as float fake-quant: the same numbers on every CPU.
    """
    import onnx
    import onnxruntime as ort

    from dnx.exporter.precision import int8_weights

    model = onnx.load(str(model_path))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    dq = next(n for n in model.graph.node if n.output[0] == gemm.input[0])
    del model.graph.output[:]
    model.graph.output.extend([onnx.ValueInfoProto(name=dq.input[0])])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    acts = np.concatenate([sess.run(None, {"input": inputs[i:i + 1]})[0] for i in range(len(inputs))])
    return acts, int8_weights(model)[gemm.name]


def _ir_int8_weights(xml: Path) -> list[np.ndarray]:
    import openvino as ov

    from dnx.runtimes.openvino import core

    model = core().read_model(str(xml))
    return [op.get_data() for op in model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]


@pytest.fixture(scope="module")
def gpu_int8_repository(tmp_path_factory):
    """The GPU target's ONNX Runtime variants (no TensorRT here): the TensorRT-style int8 graph."""
    out = tmp_path_factory.mktemp("gpu") / "model_repository"
    r = CliRunner().invoke(cli, ["export", "--weights", "random", "--target", "gpu", "--runtime", "onnxruntime",
                                 "--precision", "fp32", "--precision", "int8", "--calib-dir", str(CALIB_DIR),
                                 "--calib-samples", "4", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_every_cpu_int8_artifact_keeps_its_weights_within_64(cpu_int8_repository):
    from dnx.exporter.precision import int8_weights
    import onnx

    repo = cpu_int8_repository
    ort_weights = int8_weights(onnx.load(str(repo / "densenet121_onnx_int8" / "1" / "model.onnx")))
    ov_weights = _ir_int8_weights(repo / "densenet121_openvino_int8" / "1" / "model.xml")
    for weights in (list(ort_weights.values()), ov_weights):
        assert len(weights) == 121  # 120 Conv + the classifier
        assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    here = this_cpu().to_dict()
    assert manifest["host"]["cpu"] == here
    for name, (runtime, precision) in MODELS.items():
        record = manifest["models"][name]["cpu"]
        assert record["built_on"] == here and record["safe_on"] == NEEDS_NOTHING, (name, record)
        if precision == "int8":
            assert record["max_abs_int8_weight"] <= 64
            assert manifest["models"][name]["onnx"]["weight_bits"] == 7
    onnx_rec = {n: manifest["models"][n]["onnx"] for n in ("densenet121_onnx_int8", "densenet121_openvino_int8")}
    assert onnx_rec["densenet121_onnx_int8"]["graph"] == "int8_cpu"
    assert onnx_rec["densenet121_onnx_int8"]["activations"].startswith("uint8")
    assert onnx_rec["densenet121_openvino_int8"]["graph"] == "int8_openvino"
    assert onnx_rec["densenet121_openvino_int8"]["activations"].startswith("int8 symmetric")


@pytest.mark.slow
def test_no_classifier_pair_saturates_without_vnni_unlike_the_full_range_graph(cpu_int8_repository, gpu_int8_repository):
    from dnx.preprocess import probe_inputs

    inputs = probe_inputs()[0]
    acts, weights = _classifier_operands(cpu_int8_repository / "densenet121_onnx_int8" / "1" / "model.onnx", inputs)
    assert acts.dtype == np.uint8 and saturated_pairs(acts, weights)[0] == 0
    # The full-range symmetric graph (TensorRT's, and every CPU int8 graph dnx wrote before)
    # saturates on such a CPU: that is what made its parity 0.98 there.
    acts, weights = _classifier_operands(gpu_int8_repository / "densenet121_onnx_int8" / "1" / "model.onnx", inputs)
    saturated, total = saturated_pairs(acts, weights)
    assert acts.dtype == np.int8 and np.abs(weights.astype(np.int16)).max() > 64 and saturated / total > 0.001


@pytest.mark.slow
def test_cpu_int8_variants_agree_with_fp32_on_a_wider_set(cpu_int8_repository):
    from dnx.parity import cosine_per_sample, run_outputs
    from dnx.preprocess import photo_batch, probe_inputs
    from dnx.runtimes import model_runner

    repo = cpu_int8_repository
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    photos = photo_batch()
    wide = np.concatenate([probe_inputs()[0], photos[..., ::-1],
                           np.random.default_rng(7).standard_normal((16, 3, 224, 224)).astype(np.float32)])
    for fp32, int8 in (("densenet121_onnx", "densenet121_onnx_int8"), ("densenet121_openvino", "densenet121_openvino_int8")):
        assert manifest["models"][int8]["parity"]["cos_min"] >= 0.995, int8  # the parity inputs
        ref, out = (run_outputs(model_runner(repo, n, manifest["models"][n])[0], wide) for n in (fp32, int8))
        assert cosine_per_sample(ref, out).min() >= 0.995, int8


@pytest.mark.slow
def test_gpu_export_keeps_the_full_range_graph_and_gates_it_exactly(gpu_int8_repository):
    manifest = json.loads((gpu_int8_repository / "dnx-manifest.json").read_text())
    record = manifest["models"]["densenet121_onnx_int8"]
    assert record["onnx"]["graph"] == "int8" and record["onnx"]["weight_bits"] == 8
    assert record["onnx"]["qdq"]["symmetric_int8"] and record["onnx"]["qdq"]["max_abs_weight"] > 64
    assert record["onnx"]["tensorrt_compatible"] is True and "cpu" not in record
    # Exact on any build CPU: fake-quant, not this CPU's integer kernels.
    assert record["parity"]["passed"] and record["parity"]["cos_min"] >= 0.995
    assert EXACT_QDQ_NOTE in record["parity"]["notes"]
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["speed"]["status"] == "SKIPPED" and stages["tensorrt_engines"]["status"] == "SKIPPED"


@pytest.mark.slow
def test_the_ensemble_serves_the_fastest_variant_timed_on_this_cpu(cpu_int8_repository):
    manifest = json.loads((cpu_int8_repository / "dnx-manifest.json").read_text())
    here = this_cpu().to_dict()
    speed = {n: manifest["models"][n]["speed"] for n in MODELS}
    for name, s in speed.items():
        assert s["cpu"] == here and s["best"] > 0 and s["rounds"] == 3, name
        batches = {int(b) for b in s["img_s"]}
        assert batches == {1, manifest["models"][name]["config"]["max_batch_size"]}, name
        assert s["best"] == max(s["img_s"].values())
    fastest = max(speed, key=lambda n: speed[n]["best"])
    assert manifest["ensemble"]["variant"] == fastest
    assert manifest["ensemble"]["why"].startswith(f"fastest on {here['model']}: ")
    assert {s["name"]: s["status"] for s in manifest["stages"]}["speed"] == "OK"
