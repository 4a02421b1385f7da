"""The export pipeline: stage bookkeeping (FAILED lines from any exception, SKIPPED with why, the
target line), and the whole CPU export as a user runs it: fp32 + calibrated int8, ONNX Runtime +
OpenVINO, parity gates, then `dnx validate` rerunning every model through dnx.runtimes."""

import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.errors import InputError
from dnx.model_repository.render import parse_config
from dnx.pipeline import (STAGES, Context, ExportOptions, Stage, Status, _run_stage, disk_full_reason,
                          resolve_target)
from dnx.spec import get_spec


def _ctx(tmp_path, **kw):
    ctx = Context(options=ExportOptions(out=tmp_path / "r"), spec=get_spec("densenet121"), work=tmp_path, **kw)
    return ctx


def test_any_exception_in_a_stage_is_its_failed_line(tmp_path):
    def boom(ctx):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code\nsecond line")

    r = _run_stage(Stage("openvino_models", boom), _ctx(tmp_path))
    assert r.status is Status.FAILED and r.name == "openvino_models"
    assert r.reason == "RuntimeError: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code"


def test_user_errors_still_stop_the_run(tmp_path):
    def bad(ctx):
        raise InputError("--calib-dir x has no images; pass a folder of JPEG/PNG files")

    with pytest.raises(InputError):
        _run_stage(Stage("int8_onnx", bad), _ctx(tmp_path))


def test_disk_full_inside_a_stage_names_the_path_and_the_space(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "model.onnx").write_bytes(b"\0" * (3 << 20))

    def full(ctx):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.fp32.onnx"))

    ctx = _ctx(tmp_path, previous_bytes=3 << 20)
    r = _run_stage(Stage("torch_to_onnx", full), ctx)
    assert r.status is Status.FAILED
    assert r.reason.startswith(f"no space left on device writing {tmp_path / 'model.fp32.onnx'}: this run needs about 3 MiB")
    assert "measured from the previous repository" in r.reason and "MiB free there" in r.reason


def test_skipped_stages_say_why(tmp_path):
    ctx = _ctx(tmp_path, target="cpu", precisions=("fp32",), runtimes=("onnxruntime", "openvino"))
    why = {s.name: s.why_not(ctx) for s in STAGES if not s.when(ctx)}
    assert why["fp16_onnx"] == "fp16 not asked for (add --precision fp16)"
    assert why["tensorrt_engines"].startswith("target cpu: TensorRT engines were not built")
    assert "`make engines`" in why["tensorrt_engines"]
    assert why["parity"] == "no model was built"


def test_auto_target_says_what_it_chose_and_why():
    from dnx.exporter.engine import tensorrt_available

    target, why = resolve_target("auto")
    usable, _ = tensorrt_available()
    assert target == ("gpu" if usable else "cpu") and why.startswith("auto: ")
    if not usable:
        assert "TensorRT engines will not be built" in why and "make engines" in why
    assert resolve_target("cpu") == ("cpu", "--target cpu")


def test_disk_full_reason_without_an_estimate(tmp_path):
    text = disk_full_reason(OSError(errno.ENOSPC, "full"), Path(tmp_path), 0, "")
    assert "no estimate" in text and str(tmp_path) in text and "TMPDIR" in text


# ---------------------------------------------------------------- the whole CPU export

CALIB_DIR = Path(__file__).resolve().parent / "fixtures" / "calib"
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
