"""The stage engine: FAILED lines from any exception (one wrapper, the write stage too), SKIPPED
with why, --keep-failing decided by whether a stage is required, the target line."""

import errno
from pathlib import Path

import pytest

from dnx.errors import InputError
from dnx.exporter.engine import tensorrt_available
from dnx.pipeline import (STAGES, Context, ExportOptions, ModelEntry, Stage, StageResult, Status, disk_full_reason,
                          resolve_target, run_stage)
from dnx.pipeline.write import WRITE
from dnx.spec import get_spec


def _ctx(tmp_path, **kw):
    ctx = Context(options=ExportOptions(out=tmp_path / "r"), spec=get_spec("densenet121"), work=tmp_path, **kw)
    return ctx


def test_any_exception_in_a_stage_is_its_failed_line(tmp_path):
    def boom(ctx):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code\nsecond line")

    r = run_stage(Stage("openvino_models", boom), _ctx(tmp_path))
    assert r.status is Status.FAILED and r.name == "openvino_models"
    assert r.reason == "RuntimeError: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code"


def test_user_errors_still_stop_the_run(tmp_path):
    def bad(ctx):
        raise InputError("--calib-dir x has no images; pass a folder of JPEG/PNG files")

    with pytest.raises(InputError):
        run_stage(Stage("int8_onnx", bad), _ctx(tmp_path))


def test_disk_full_inside_a_stage_names_the_path_and_the_space(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "model.onnx").write_bytes(b"\0" * (3 << 20))

    def full(ctx):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.fp32.onnx"))

    ctx = _ctx(tmp_path, previous_bytes=3 << 20)
    r = run_stage(Stage("torch_to_onnx", full), ctx)
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
    target, why = resolve_target("auto")
    usable, _ = tensorrt_available()
    assert target == ("gpu" if usable else "cpu") and why.startswith("auto: ")
    if not usable:
        assert "TensorRT engines will not be built" in why and "make engines" in why
    assert resolve_target("cpu") == ("cpu", "--target cpu")


def test_disk_full_reason_without_an_estimate(tmp_path):
    text = disk_full_reason(OSError(errno.ENOSPC, "full"), Path(tmp_path), 0, "")
    assert "no estimate" in text and str(tmp_path) in text and "TMPDIR" in text


def test_a_full_disk_in_the_write_stage_names_the_staging_folder_and_the_models(tmp_path):
    """The write stage goes through run_stage like every other: a full disk is its FAILED line."""
    built = tmp_path / "model.onnx"
    built.write_bytes(b"\0" * (2 << 20))
    ctx = _ctx(tmp_path, staging=tmp_path / "staging")
    ctx.models = [ModelEntry("onnxruntime", "fp32", "m_onnx", {"model.onnx": built})]

    def full(c):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "staging" / "m_onnx"))

    r = run_stage(Stage(WRITE.name, full, space=WRITE.space), ctx)
    assert r.status is Status.FAILED and r.name == "write_repository"
    assert r.reason.startswith(f"no space left on device writing {tmp_path / 'staging' / 'm_onnx'}: this run needs about 2 MiB")
    assert "measured from the 1 models this run built" in r.reason


def test_keep_failing_carries_on_past_a_gate_only(tmp_path):
    failed = StageResult("any name", Status.FAILED, "x")
    gate, step = Stage("g", lambda c: failed, required=False), Stage("s", lambda c: failed)
    assert gate.stops(failed, ExportOptions()) and step.stops(failed, ExportOptions())
    assert not gate.stops(failed, ExportOptions(keep_failing=True))
    assert step.stops(failed, ExportOptions(keep_failing=True))
    assert [s.name for s in STAGES if not s.required] == ["parity"]
