"""Pipeline stage bookkeeping: FAILED lines from any exception, SKIPPED with why, the target line."""

import errno
from pathlib import Path

import pytest

from dnx.errors import InputError
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
