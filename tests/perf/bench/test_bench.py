"""``dnx bench``: in-process baselines vs the repository served through dnx, ratios in BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.perf.bench import (
    KEEP_MARKER, BenchOptions, Timing, compute_ratios, openvino_runners, onnxruntime_runner, run_bench, time_runner,
)
from dnx.perf.levels import ConcurrencyRange


def timing(family, batch, thr, p99, precision="fp32"):
    return Timing(f"{family} {precision}", family, precision, batch, 2, 10, 1000 / thr * batch, p99, p99, thr)


def test_ratios_against_the_targets():
    in_process = [timing("pytorch", 1, 14.0, 80.0), timing("onnxruntime", 1, 67.0, 16.0),
                  timing("onnxruntime", 8, 49.0, 170.0)]
    served = [{"model": "densenet121_onnx", "batch": 1, "concurrency": 1, "throughput": 60.0, "p99_ms": 20.0},
              {"model": "densenet121_onnx", "batch": 1, "concurrency": 2, "throughput": 50.0, "p99_ms": 45.0}]
    r = {x.name: x for x in compute_ratios(in_process, served, "densenet121_onnx")}
    ort = r["served best throughput / in-process ONNX Runtime best"]
    assert ort.value == pytest.approx(60 / 67) and ort.passed and ort.target == ">= 0.8x"
    torch = r["served best throughput / PyTorch eager batch 1"]
    assert torch.value == pytest.approx(60 / 14) and torch.passed
    p99 = r["served p99 at concurrency 1 / in-process ONNX Runtime batch-1 p99"]
    assert p99.value == pytest.approx(20 / 16) and p99.passed and p99.target == "<= 1.5x"
    assert r["best served variant / fastest in-process runner"].value == pytest.approx(60 / 67)
    assert r["best served variant / in-process ONNX Runtime fp32 best"].passed is False  # 0.9x < 1.6x
    served[0]["p99_ms"] = 30.0
    r = {x.name: x for x in compute_ratios(in_process, served, "densenet121_onnx")}
    assert r["served p99 at concurrency 1 / in-process ONNX Runtime batch-1 p99"].passed is False


def test_in_process_runners_time_real_runtimes(onnx_fp32_path, photos):
    from dnx.preprocess import photo_batch

    images = photo_batch(limit=2)
    (t,) = time_runner(onnxruntime_runner(onnx_fp32_path, (2,), threads=2), images, duration_s=0.1, warmup=1,
                       min_iterations=2)
    assert t.batch == 2 and t.iterations >= 2 and t.throughput > 0 and t.p50_ms <= t.p99_ms


def test_openvino_runners_per_precision(fp32_repository):
    from dnx.preprocess import photo_batch

    runners = openvino_runners(fp32_repository, None)
    assert runners and runners[0].name == "openvino fp32" and runners[0].batch_sizes == (1, 8)
    (t,) = time_runner(dataclasses.replace(runners[0], batch_sizes=(1,)), photo_batch(limit=1), 0.1, 1, 2)
    assert t.family == "openvino" and t.throughput > 0


def test_sync_openvino_baseline_ignores_tuned_streams(fp32_repository):
    """A tuned config (THROUGHPUT, 2 streams) must not halve the synchronous in-process baseline."""
    from dnx.perf.bench import sync_parameters
    from dnx.perf.served import model_file
    from dnx.runtimes.openvino import compile_model

    tuned = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2", "INFERENCE_PRECISION_HINT": "f32",
             "ENABLE_BATCH_PADDING": "YES"}
    params = sync_parameters("fp32", tuned)
    assert params == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    compiled = compile_model(model_file(fp32_repository, "densenet121_onnx"), params)
    assert int(compiled.get_property("NUM_STREAMS")) == 1
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert sync_parameters("bf16") == {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


@pytest.mark.server
@pytest.mark.slow
def test_quick_bench_writes_benchmarks_md_with_ratios(fp32_repository, onnx_fp32_path, tmp_path):
    extra = onnxruntime_runner(onnx_fp32_path, (1,), threads=1)
    extra = dataclasses.replace(extra, name="onnxruntime fp32 1-thread")
    opts = BenchOptions(
        repository=fp32_repository, out_md=tmp_path / "BENCHMARKS.md", results_dir=tmp_path / "res",
        duration_s=0.2, warmup=1, min_iterations=2, concurrency=ConcurrencyRange(1, 2),
        measurement_interval_ms=1000, stability_percentage=100, max_trials=3, torch_batches=(1,),
        include_openvino=False, extra_runners=[extra], command="dnx bench --test", progress=False,
        notes="Tried: nothing yet.", fill_cap=3, other_concurrency=ConcurrencyRange(1, 1),
    )
    (tmp_path / "BENCHMARKS.md").write_text(f"# Benchmarks\nstale figures 12.3\n{KEEP_MARKER}\n# GPU run\nkept 456\n")
    res = run_bench(opts)
    runners = [(t.runner, t.batch) for t in res.in_process]
    # PyTorch runs last: it slows the other runtimes of the process once it has run.
    assert runners == [("onnxruntime fp32", 1), ("onnxruntime fp32", 8),
                       ("onnxruntime fp32 1-thread", 1), ("pytorch eager fp32", 1)]
    assert all(t.throughput > 0 for t in res.in_process)
    # c1..c2, then where its batches fill (2 x 1 instance x max batch 8, capped at fill_cap 3).
    assert [(r["model"], r["concurrency"]) for r in res.served] == [("densenet121_onnx", c) for c in (1, 2, 3)]
    # The second pass, with system shared memory, at c1 only (what --quick does with c1, c2).
    assert res.shared_memory == "none" and all(r["shared_memory"] == "none" for r in res.served)
    assert [(r["model"], r["concurrency"], r["shared_memory"]) for r in res.served_other] == [
        ("densenet121_onnx", 1, "system")]
    assert all(r["rss_mib"] > 0 for r in res.served + res.served_other)  # the launched server's backend stub
    assert len(res.ratios) == 10 and all(r.value > 0 for r in res.ratios)  # 7 + 2 tuned-target + shared memory
    shm = res.ratios[-1]
    assert shm.name.startswith("best served variant, better of shared memory none/system")
    better = max(res.served + res.served_other, key=lambda r: r["throughput"])["shared_memory"]
    assert shm.detail.startswith(f"shared memory {better}: ") and shm.target == (">= 0.9x" if better == "system"
                                                                                    else ">= 0.8x")

    md = (tmp_path / "BENCHMARKS.md").read_text()
    # The bench's own part is rewritten; other runs' sections below the marker are kept, once.
    assert "stale figures 12.3" not in md and md.count("kept 456") == 1 and md.index("## Machine") < md.index("kept 456")
    for needle in ("## Machine", "logical cores", "GiB", "onnxruntime 1.", "torch 2.", "tritonclient 2.50.0",
                   "served best throughput / in-process ONNX Runtime best", ">= 3x",
                   "served p99 at concurrency 1 / in-process ONNX Runtime batch-1 p99",
                   "| onnxruntime fp32 1-thread | 1 |", "dnx bench --test",
                   "perf_analyzer -m densenet121_onnx", "--input-data", "Tried: nothing yet.", '"max_batch_size": 8',
                   "--shared-memory system", "| `densenet121_onnx` | system | 1 |", "| `densenet121_onnx` | none | 2 |",
                   "RSS MiB"):
        assert needle in md, needle
    assert (tmp_path / "res" / "input-data" / "input").stat().st_size == 3 * 224 * 224 * 4
    doc = json.loads((tmp_path / "res" / "bench.json").read_text())
    assert doc["machine"]["cores"] >= 1 and doc["served_configs"]["densenet121_onnx"]["max_batch_size"] == 8
    assert (tmp_path / "res" / "report.md").is_file() and (tmp_path / "res" / "plots").is_dir()
    assert [r["shared_memory"] for r in doc["served_other"]] == ["system"]
    assert "`system`" in (tmp_path / "res" / "shared-memory-system" / "report.md").read_text()


def test_bench_missing_repository_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(cli, ["bench", "--repository", str(tmp_path / "nope"), "--out-md", str(tmp_path / "B.md")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("Error: model repository")
    r = CliRunner().invoke(cli, ["bench", "--concurrency", "5:1"])
    assert r.exit_code == 1 and "below start" in r.output


def test_shared_memory_ratio_takes_the_better_pass_and_names_it():
    from dnx.perf.bench.ratios import shared_memory_ratio

    in_process = [timing("onnxruntime", 1, 50.0, 20.0), timing("onnxruntime", 8, 60.0, 150.0)]

    def row(c, thr, mode):
        return {"model": "densenet121_onnx", "batch": 1, "concurrency": c, "throughput": thr, "p99_ms": 30.0,
                "shared_memory": mode}
    (r,) = shared_memory_ratio(in_process, [row(1, 40.0, "none"), row(2, 45.0, "none"), row(1, 56.0, "system")])
    assert r.value == pytest.approx(56 / 60) and r.target == ">= 0.9x" and r.passed
    assert r.detail.startswith("shared memory system: densenet121_onnx c1 56.0 infer/s (with none: densenet121_onnx c2 45.0")
    (r,) = shared_memory_ratio(in_process, [row(1, 50.0, "none"), row(1, 47.0, "system")])
    assert r.value == pytest.approx(50 / 60) and r.target == ">= 0.8x" and r.detail.startswith("shared memory none:")
    assert shared_memory_ratio(in_process, [row(1, 50.0, "none")]) == []  # one pass: nothing to choose from
    unstable = row(2, 70.0, "system") | {"stable": False}
    (r,) = shared_memory_ratio(in_process, [row(1, 40.0, "none"), row(1, 52.0, "system"), unstable])
    assert r.value == pytest.approx(52 / 60) and r.passed is False and "c1 52.0 infer/s" in r.detail


def test_benchmarks_md_says_the_ratios_quote_stable_levels_when_one_was_unstable(tmp_path):
    from dnx.perf.bench.markdown import render_markdown
    from dnx.perf.bench.ratios import tuned_ratios
    from dnx.perf.bench.result import BenchResult
    from dnx.perf.results import machine_info

    def row(c, thr, stable):
        return {"model": "densenet121_openvino_int8", "batch": 1, "concurrency": c, "throughput": thr, "p50_ms": 50.0,
                "p99_ms": 90.0, "server_queue_ms": 10.0, "server_compute_input_ms": 0.5, "server_compute_infer_ms": 30.0,
                "server_compute_output_ms": 0.1, "stable": stable, "shared_memory": "system"}
    served = [row(8, 134.1, False), row(16, 111.8, True)]
    in_process = [timing("openvino", 8, 140.5, 120.0, precision="int8")]
    ratios = tuned_ratios(in_process, served, "densenet121_onnx")
    assert "c16 111.8 infer/s" in ratios[0].detail and ratios[0].passed is False  # 0.80x < 0.9x

    def md(rows):
        res = BenchResult(machine=machine_info(), versions={}, in_process=in_process, served=rows, served_configs={},
                          ratios=ratios, commands=[], out_md=tmp_path / "B.md", results_dir=tmp_path)
        return render_markdown(res, BenchOptions(repository=tmp_path))
    assert "each model's best *stable* level" in md(served)
    assert "best *stable* level" not in md([row(16, 111.8, True)])
