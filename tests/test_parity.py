"""Parity metrics, gates and reports; real variants through Polygraphy's Comparator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dnx.parity import (
    Metrics,
    ParityReport,
    Variant,
    check_parity,
    compare_arrays,
    gate_failures,
    output_metrics,
    run_outputs,
)
from dnx.preprocess import probe_inputs
from dnx.runtimes import callable_runner, onnxruntime
from dnx.runtimes import torch as torch_rt
from dnx.spec import DEFAULT_MODEL, Gate

CALIB_DIR = Path(__file__).resolve().parent / "fixtures" / "calib"


# ---------------------------------------------------------------- metrics and gates (pure numpy)


def test_identical_outputs():
    x = np.random.default_rng(0).standard_normal((5, 1000)).astype(np.float32)
    m = output_metrics(x, x.copy())
    assert (m.samples, m.max_abs, m.mean_abs, m.top1, m.top5, m.finite) == (5, 0.0, 0.0, 1.0, 1.0, True)
    assert m.cos_min == pytest.approx(1.0) and m.cos_mean == pytest.approx(1.0)


def test_known_metric_values():
    ref = np.array([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    cand = ref.copy()
    cand[0] = [2.0, 3.0, 1.0, 0.0, -1.0, -2.0]  # swaps the top-2: top-1 differs, still in top-5
    cand[1] = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0]  # opposite direction: cosine -1, class 1 drops out of the top-5
    m = output_metrics(ref, cand)
    assert m.max_abs == 2.0 and m.mean_abs == pytest.approx(4.0 / 12)
    assert m.top1 == 0.0 and m.top5 == 0.5
    assert m.cos_min == pytest.approx(-1.0) and m.cos_mean == pytest.approx((18 / 19 - 1) / 2)


def test_scaled_outputs_keep_cosine_but_not_max_abs():
    x = np.random.default_rng(1).standard_normal((4, 10))
    m = output_metrics(x, 1.1 * x)
    assert m.cos_min == pytest.approx(1.0) and m.max_abs > 0.1 and m.top1 == 1.0


def test_non_finite_and_shape_mismatch_fail():
    x = np.ones((2, 4), np.float32)
    bad = x.copy()
    bad[0, 1] = np.nan
    m = output_metrics(x, bad)
    assert not m.finite and m.max_abs == np.inf
    assert gate_failures(m, Gate(min_cosine=0.5), trained=False)[0] == "non-finite outputs (NaN/inf)"
    row = compare_arrays("v", "fp16", x, np.ones((2, 5)))
    assert not row.passed and "output shapes differ" in row.reason and row.metrics is None


def test_gates_follow_the_spec_and_top1_only_when_trained():
    m = Metrics(samples=10, max_abs=2e-3, mean_abs=1e-4, cos_min=0.995, cos_mean=0.998, top1=0.5, top5=0.9, finite=True)
    gates = DEFAULT_MODEL.gates
    assert gate_failures(m, gates["fp32"], trained=False) == ["max abs error 0.002 > 0.001", "min cosine 0.995000 < 0.99999"]
    assert gate_failures(m, gates["fp16"], trained=False) == ["min cosine 0.995000 < 0.999"]
    assert gate_failures(m, gates["int8"], trained=False) == []
    assert gate_failures(m, gates["int8"], trained=True) == ["top-1 agreement 50.0% < 95%"]


def test_report_dict_and_table():
    ref = np.random.default_rng(2).standard_normal((6, 1000)).astype(np.float32)
    rows = [
        compare_arrays("densenet121_onnx", "fp32", ref, ref + 1e-6, runtime="onnxruntime"),
        compare_arrays("densenet121_onnx_int8", "int8", ref, -ref, runtime="onnxruntime", notes="calibrated on synthetic data"),
    ]
    report = ParityReport(rows, inputs={"photographs": 4, "random": 2, "seed": 0, "total": 6})
    assert not report.passed and [r.variant for r in report.failures()] == ["densenet121_onnx_int8"]
    d = json.loads(json.dumps(report.to_dict()))
    assert d["passed"] is False and d["inputs"]["photographs"] == 4
    fp32 = d["variants"][0]
    assert fp32["passed"] and fp32["gate"] == {"max_abs": 1e-3, "min_cosine": 0.99999}
    assert fp32["max_abs"] == pytest.approx(1e-6, rel=0.5) and fp32["samples"] == 6 and fp32["top1"] == 1.0
    assert d["variants"][1]["gate"] == {"min_cosine": 0.99}  # top-1 not gated with random weights
    assert d["variants"][1]["notes"] == "calibrated on synthetic data"
    table = report.format_table()
    lines = table.splitlines()
    assert "4 photographs, 2 random" in lines[0] and "not gated" in lines[0]
    assert lines[1].split()[:4] == ["variant", "precision", "runtime", "max_abs"]
    assert lines[3].split()[0] == "densenet121_onnx" and lines[3].endswith("PASS")
    assert lines[4].endswith("FAIL") and "FAIL densenet121_onnx_int8: min cosine -1.000000 < 0.99" in table
    assert "note densenet121_onnx_int8: calibrated on synthetic data" in table
    assert [r.variant for r in report.failures()] == ["densenet121_onnx_int8"] and not report.passed
    assert ParityReport(rows[:1]).passed and not ParityReport(rows[:1]).failures()


def test_served_outputs_reuse_the_same_metrics():
    ref = np.random.default_rng(3).standard_normal((3, 1000)).astype(np.float32)
    served = ref.astype(np.float16).astype(np.float32)  # what a FP16 server could return
    row = compare_arrays("densenet121_onnx_fp16", "fp16", ref, served, runtime="triton")
    assert row.passed and row.metrics.cos_min > 0.9999 and row.reason == "within cos>=0.999"


def test_probe_inputs_are_photos_plus_seeded_random():
    x, info = probe_inputs(random=2, seed=5, photo_limit=3)
    assert x.shape == (5, 3, 224, 224) and x.dtype == np.float32
    assert info == {"photographs": 3, "random": 2, "seed": 5, "total": 5}
    y, _ = probe_inputs(random=2, seed=5, photo_limit=3)
    np.testing.assert_array_equal(x, y)
    z, _ = probe_inputs(random=2, seed=6, photo_limit=3)
    np.testing.assert_array_equal(x[:3], z[:3])  # the photographs do not depend on the seed
    assert not np.array_equal(x[3:], z[3:])


def test_callable_runner_through_polygraphy():
    x = np.random.default_rng(4).standard_normal((5, 3, 224, 224)).astype(np.float32)
    loads = []
    runner = callable_runner(lambda: loads.append(1) or (lambda b: b.reshape(len(b), -1)[:, :1000] * 2), "doubler")
    assert not loads  # nothing is loaded until the Comparator activates the runner
    out = run_outputs(runner, x, batch_size=2)  # batches of 2, 2, 1
    assert loads == [1]
    np.testing.assert_array_equal(out, x.reshape(5, -1)[:, :1000] * 2)


# ---------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def densenet(onnx_fp32_path):
    """The random-weight (seed 0) PyTorch model and its ONNX export from tests/conftest.py."""
    from dnx.exporter.torch_export import load_torch_model

    model, info = load_torch_model(weights="random", seed=0)
    assert info.random
    return model, onnx_fp32_path


def _perturbed(src: Path, dst: Path) -> None:
    """A broken variant: noise (half the weights' std) on the first convolution's weights."""
    import onnx
    model = onnx.load(str(src))
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(i for i in model.graph.initializer if i.name == first_conv.input[1])
    w = onnx.numpy_helper.to_array(init)
    noisy = w + np.random.default_rng(0).normal(0, 0.5 * w.std(), w.shape).astype(np.float32)
    init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst))


@pytest.fixture(scope="module")
def report(densenet, tmp_path_factory):
    from dnx.exporter.calibration import calibration_set
    from dnx.exporter.precision import Fp16FromOnnx, Int8FromOnnx

    model, fp32 = densenet
    work = tmp_path_factory.mktemp("variants")
    Fp16FromOnnx(fp32)(work / "fp16.onnx")
    calib = calibration_set(CALIB_DIR, samples=6, progress=False)
    # The graph ONNX Runtime serves on a CPU (uint8 activations, 7-bit weights: exact on every x86 CPU).
    Int8FromOnnx(fp32, calib, symmetric=False, weight_bits=7, cache_dir=work / "cache", progress=False)(work / "int8.onnx")
    _perturbed(fp32, work / "broken.onnx")
    import onnxruntime as ort
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    variants = [
        Variant("densenet121_onnx", "fp32", onnxruntime.runner(fp32, "ort-fp32")),
        Variant("densenet121_onnx_fp16", "fp16", onnxruntime.runner(work / "fp16.onnx", "ort-fp16")),
        Variant("densenet121_onnx_int8", "int8", onnxruntime.runner(work / "int8.onnx", "ort-int8")),
        Variant("densenet121_onnx_broken", "int8", onnxruntime.runner(work / "broken.onnx", "ort-broken")),
        # A plain callable, as the OpenVINO variants and served models plug in.
        Variant("callable_fp32", "fp32", lambda b: sess.run(None, {"input": b})[0], runtime="callable"),
        Variant("missing_file", "fp16", onnxruntime.runner(work / "absent.onnx", "ort-absent")),
    ]
    return check_parity(torch_rt.runner(model), variants)


def test_variants_pass_their_gates(report):
    print("\n" + report.format_table())
    assert report.inputs == {"photographs": 10, "random": 4, "seed": 0, "total": 14}
    for name in ("densenet121_onnx", "densenet121_onnx_fp16", "densenet121_onnx_int8", "callable_fp32"):
        assert report.row(name).passed, report.row(name).reason
    fp32, fp16, int8 = (report.row(n).metrics for n in ("densenet121_onnx", "densenet121_onnx_fp16", "densenet121_onnx_int8"))
    assert fp32.samples == 14 and fp32.max_abs < 1e-4 and fp32.cos_min > 0.999999
    assert 1e-5 < fp16.max_abs < 0.05 and fp16.cos_min >= 0.999
    assert int8.max_abs > fp16.max_abs and 0.99 <= int8.cos_min < 0.99999


def test_broken_variant_fails_its_gate(report):
    row = report.row("densenet121_onnx_broken")
    assert not row.passed and row.metrics.cos_min < 0.99
    assert row.reason.startswith("min cosine ")
    assert not report.passed
    assert "densenet121_onnx_broken" in [r.variant for r in report.failures()]


def test_variant_that_cannot_run_fails_without_stopping_the_others(report):
    row = report.row("missing_file")
    assert not row.passed and row.reason.startswith("could not run:") and "absent.onnx" in row.reason
    assert row.metrics is None and "FAIL missing_file: could not run" in report.format_table()


def test_precomputed_reference_logits(densenet, report):
    model, fp32 = densenet
    x, info = probe_inputs(random=1, photo_limit=2)
    ref = run_outputs(torch_rt.runner(model), x)
    again = check_parity(ref, [Variant("densenet121_onnx", "fp32", onnxruntime.runner(fp32, "ort"))], inputs=x, inputs_info=info)
    assert again.passed and again.rows[0].metrics.samples == 3
