"""The speed stage's decisions (dnx.pipeline.speed) on given figures, and its timing on a real model."""

import numpy as np

from dnx.pipeline.entries import ModelEntry
from dnx.pipeline.speed import WORTH_IT, slow_precisions, time_variants


def _m(name, runtime, precision):
    return ModelEntry(runtime, precision, name, {})


def test_a_lower_precision_not_worth_it_over_fp32_is_named_once():
    models = [_m("a", "onnxruntime", "fp32"), _m("a_int8", "onnxruntime", "int8"),
              _m("b", "openvino", "fp32"), _m("b_int8", "openvino", "int8"), _m("b_bf16", "openvino", "bf16")]
    figures = {"a": {"best": 50.0}, "a_int8": {"best": 50.0 * WORTH_IT - 0.1},
               "b": {"best": 30.0}, "b_int8": {"best": 30.0 * WORTH_IT}, "b_bf16": {"best": 45.0}}
    (line,) = slow_precisions(models, figures)
    assert line.startswith("int8 gives no speed-up over fp32 on this CPU for onnxruntime (a_int8 1.20x a)")
    assert slow_precisions(models[1:2], figures) == []  # no fp32 of its runtime: nothing to compare with


def test_time_variants_measures_each_batch_size_the_config_serves(onnx_fp32_path):
    m = ModelEntry("onnxruntime", "fp32", "m", {"model.onnx": onnx_fp32_path}, max_batch_size=2,
                   parameters={"intra_op_thread_count": "1", "inter_op_thread_count": "1"})
    sample = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    figures = time_variants([m], sample, seconds=0.2, rounds=2)["m"]
    assert set(figures["img_s"]) == {1, 2} and all(v > 0 for v in figures["img_s"].values())
    assert figures["best"] == figures["img_s"][figures["best_batch"]] == max(figures["img_s"].values())
