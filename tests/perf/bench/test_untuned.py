"""``make bench`` after ``dnx tune``: untuned vs tuned side by side, the async OpenVINO baseline, the tuned targets."""

from __future__ import annotations

import pytest

from dnx.model_repository.config_edit import read_config, write_config
from dnx.perf.tune import space as t
from dnx.perf.bench import BenchOptions, run_bench, time_runner
from dnx.perf.bench import openvino_async_runner, tuned_ratios, untuned_configs
from dnx.perf.levels import ConcurrencyRange
from tests.fixtures_server import _link_tree
from tests.perf.bench.test_bench import timing

MODEL = "densenet121_onnx"


def test_tuned_targets_compare_with_the_fastest_run_of_the_same_runtime_and_precision():
    in_process = [timing("openvino", 1, 143.0, 8.0, "int8"), timing("openvino", 4, 240.0, 20.0, "int8"),
                  timing("openvino", 16, 400.0, 50.0, "int8"),  # batch 16 is outside 1..8: not compared
                  timing("openvino", 8, 300.0, 30.0, "fp32"), timing("onnxruntime", 1, 68.0, 15.0)]
    served = [{"model": "densenet121_openvino_int8", "batch": 1, "concurrency": 2, "throughput": 228.0, "p99_ms": 12.0},
              {"model": MODEL, "batch": 1, "concurrency": 1, "throughput": 66.0, "p99_ms": 16.0}]
    r = {x.name.split(" / ")[0]: x for x in tuned_ratios(in_process, served, MODEL)}
    best = r["best served variant"]
    assert best.value == pytest.approx(228 / 240) and best.passed and best.target == ">= 0.9x"
    ort = r["served ONNX Runtime fp32"]
    assert ort.value == pytest.approx(66 / 68) and ort.passed and ort.target == ">= 0.95x"
    served[0]["throughput"] = 200.0
    assert not tuned_ratios(in_process, served, MODEL)[0].passed


def test_async_openvino_runner_times_real_openvino(onnx_fp32_path):
    from dnx.preprocess import photo_batch

    runner = openvino_async_runner(onnx_fp32_path, "fp32", {"INFERENCE_PRECISION_HINT": "f32"}, batch_sizes=(2,))
    (timed,) = time_runner(runner, photo_batch(limit=2), duration_s=0.5, warmup=2, min_iterations=4)
    assert timed.runner == "openvino fp32 async" and timed.batch == 2 and timed.iterations >= 4 and timed.throughput > 0
    assert "AsyncInferQueue(4)" in timed.notes and "THROUGHPUT" in timed.notes


@pytest.mark.server
@pytest.mark.slow
def test_bench_reports_untuned_and_tuned_side_by_side(fp32_repository, tmp_path):
    repo = tmp_path / "model_repository"
    _link_tree(fp32_repository, repo)
    base = read_config(repo / MODEL)
    write_config(repo / MODEL, t.apply_knobs(base, {**t.knobs_of(base), "layout": (2, 1)}))  # what dnx tune writes
    assert list(untuned_configs(repo, [MODEL])) == [MODEL]
    opts = BenchOptions(
        repository=repo, out_md=tmp_path / "BENCHMARKS.md", results_dir=tmp_path / "res", duration_s=0.2, warmup=1,
        min_iterations=2, concurrency=ConcurrencyRange(1, 2), measurement_interval_ms=1000, stability_percentage=100,
        max_trials=3, include_torch=False, include_openvino=False, served_models=[MODEL], progress=False,
        fill_cap=3,
    )
    res = run_bench(opts)
    assert [(r["model"], r["concurrency"]) for r in res.untuned] == [(MODEL, 1), (MODEL, 2), (MODEL, 3)]  # + fill level
    assert all(r["throughput"] > 0 for r in res.untuned + res.served)
    assert res.served_configs[MODEL]["instance_group"][0]["count"] == 2  # swept tuned first
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Untuned vs tuned" in md and f"| `{MODEL}` |" in md.split("## Untuned vs tuned")[1]
    assert "served ONNX Runtime fp32 / in-process ONNX Runtime fp32 best (tuned)" in md
    assert (tmp_path / "res" / "untuned" / "raw").is_dir()
    assert read_config(repo / MODEL).instance_count == 2  # the repository is only read
