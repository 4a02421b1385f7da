"""The whole CPU export as a user runs it: fp32 + calibrated int8, ONNX Runtime + OpenVINO, parity
gates, then `dnx validate` rerunning every model through dnx.runtimes."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.model_repository.render import parse_config

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
