"""``dnx perf`` end to end: the real perf_analyzer against a real local tritonserver."""

from __future__ import annotations

import base64
import csv
import json

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.perf.served import inspect_server
from dnx.photos import MIX_INPUT_DATA
from dnx.serving.server import free_port

PNG = b"\x89PNG\r\n\x1a\n"
# Short windows; a loose stability check keeps the run short on a shared 2-core machine.
FAST = ["--measurement-mode", "time_windows", "--measurement-interval", "1000", "--stability-percentage", "100", "--max-trials", "3", "-q"]


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]


def report_is_complete(out) -> bool:
    report = json.loads((out / "report.json").read_text())
    return report["complete"] and report["incomplete_reason"] is None and "Incomplete" not in (out / "report.md").read_text()


@pytest.mark.server
@pytest.mark.slow
def test_short_sweep_writes_every_result_file(triton_server, serving_repository, tmp_path):
    out = tmp_path / "results"
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--concurrency", "1:2", "--batch-size", "1,2",
                                 "--out", str(out), "--latency-budget-ms", "100000", "--repository",
                                 str(serving_repository), *FAST])
    assert r.exit_code == 0, r.output
    assert "densenet121_onnx" in r.output and "infer/s" in r.output and str(out / "report.md") in r.output
    assert "points, estimated" in r.output  # printed before the sweep starts
    # No --models: every READY model; variable-shape ones (the fixture's test models) are named, not measured,
    # and so are the ensemble's own steps; the ensemble itself is measured with real JPEGs.
    variable = [m.name for m in inspect_server(triton_server.grpc_url) if m.variable_inputs]
    steps = ["densenet121_preprocess", "densenet121_softmax"]
    for name in variable:
        assert f"{name}" in r.output and "not measured: variable input dims" in r.output
    measured = ["densenet121", "densenet121_onnx"]

    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for model in measured:
        got = sorted((int(x["batch"]), int(x["concurrency"])) for x in rows if x["model"] == model)
        assert got == [(1, 1), (1, 2), (2, 1), (2, 2)], model
    for x in rows:
        assert x["model"] in measured
        assert float(x["throughput"]) > 0
        p = [float(x[k]) for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms")]
        assert 0 < p[0] <= p[1] <= p[2] <= p[3] < 60_000  # ms, not microseconds
        assert float(x["server_compute_infer_ms"]) > 0
    onnx_rows = [x for x in rows if x["model"] == "densenet121_onnx"]
    assert all(x["precision"] == "fp32" and x["runtime"] == "onnxruntime" for x in onnx_rows)

    # One perf_analyzer per batch size and level, so each level is on disk as soon as it is done
    # (plus a retry per level it found unstable, if any; the log of every run is kept).
    logs = {p.name for p in (out / "raw").glob("*.log")}
    for model in measured:
        assert {f"{model}_b{b}_c{c}_w1000.log" for b in (1, 2) for c in (1, 2)} <= logs
    assert list((out / "raw").glob("*.csv"))
    commands = (out / "commands.txt").read_text().splitlines()
    assert all("LD_LIBRARY_PATH=" in c for c in commands)
    ensemble_cmds = [c for c in commands if "perf_analyzer -m densenet121 " in c]
    assert len(ensemble_cmds) >= 4 and all(f"--input-data {out / MIX_INPUT_DATA}" in c for c in ensemble_cmds)
    data = json.loads((out / MIX_INPUT_DATA).read_text())["data"]
    blobs = [base64.b64decode(d["image"]["b64"]) for d in data]  # BYTES serialization: <u32 length><JPEG>
    assert len(blobs) >= 5 and all(int.from_bytes(b[:4], "little") == len(b) - 4 and b[4:6] == b"\xff\xd8" for b in blobs)
    # The default mix has real sizes: the shipped photographs and one 12 MP phone JPEG.
    assert max(len(b) for b in blobs) > 10 * min(len(b) for b in blobs)
    for c in (1, 2):  # 2 models x 2 batch sizes, one run each
        assert sum(f"--concurrency-range {c}:{c}:1 --measurement-interval 1000" in x for x in commands) == 4
    assert report_is_complete(out)

    report = json.loads((out / "report.json").read_text())
    cfg = report["models"]["densenet121_onnx"]["config"]
    assert cfg["max_batch_size"] == 8 and cfg["instance_group"][0]["kind"] == "KIND_CPU"
    from dnx.model_repository.render import parse_config

    written = parse_config((serving_repository / "densenet121_onnx" / "config.pbtxt").read_text())
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == written.dynamic_batching.max_queue_delay_microseconds
    assert cfg["parameters"] == {k: v.string_value for k, v in written.parameters.items()}
    assert len(report["results"]) == 8 and report["comparison"][0]["within_budget"] is not None
    assert sorted(report["models"]) == measured and sorted(report["skipped"]) == sorted(variable + steps)
    assert report["options"]["concurrency"] == "1:2:1"
    assert [r["command"] for r in report["runs"]] == commands

    md = (out / "report.md").read_text()
    assert "## Comparison" in md and "## `densenet121_onnx` (onnxruntime, fp32)" in md
    assert "max_batch_size 8" in md and "best within p99 <= 100000 ms" in md
    assert md.count("\n| 1 | ") == 4 and md.count("\n| 2 | ") == 4  # a table row per model x batch x concurrency

    # A local server: every level has its CPU cost, and the ensemble's beside its variant's gives
    # what decoding and resizing cost (the mix has a 12 MP JPEG: tens of ms on average).
    assert all(float(x["server_cpu_ms_per_inference"]) > 0 and float(x["client_cpu_ms_per_request"]) > 0 for x in rows)
    costs = report["preprocessing_cost"]
    assert sorted((c["batch"], c["concurrency"]) for c in costs) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(c["ensemble"] == "densenet121" and c["variant"] == "densenet121_onnx" for c in costs)
    assert sum(c["preprocessing_cpu_ms"] for c in costs) / len(costs) > 5
    assert "## What preprocessing costs (bytes in vs tensor in)" in md

    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == ["cpu_ms_per_inference.png", "densenet121_onnx_throughput_vs_p99.png",
                     "densenet121_throughput_vs_p99.png", "throughput_vs_concurrency.png"]
    import matplotlib.image as mpimg

    for name in plots:
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(PNG)
        assert mpimg.imread(out / "plots" / name).shape[0] > 100


@pytest.mark.server
@pytest.mark.slow
def test_unstable_level_is_retried_with_a_longer_window_then_flagged(triton_server, tmp_path):
    """A 0.01 % stability threshold is never met: 500 ms, then 1000 ms, then a relaxed check."""
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.sweep import SweepOptions, sweep

    models = inspect_server(triton_server.grpc_url, "grpc", ["densenet121_onnx"])
    opts = SweepOptions(url=triton_server.grpc_url, concurrency=ConcurrencyRange(1, 1), measurement_interval_ms=500,
                        stability_percentage=0.01, max_trials=3, retries=1, progress=False)
    res = sweep(models, opts, tmp_path)
    assert [(r.window_ms, r.returncode, r.unstable_at) for r in res.runs] == [(500, 2, 1), (1000, 2, 1), (1000, 0, None)]
    assert "--stability-percentage 1000" in res.runs[-1].command
    (m,) = res.measurements[("densenet121_onnx", 1)]
    assert m.concurrency == 1 and not m.stable and m.window_ms == 1000 and m.throughput > 0


@pytest.mark.server
@pytest.mark.slow
def test_collect_metrics_adds_verbose_csv_and_metrics_url(triton_server, tmp_path):
    """What a GPU server gets automatically, forced here on the CPU server (GPU columns stay empty)."""
    metrics = triton_server.metrics_url.removeprefix("http://")
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--models", "densenet121_onnx",
                                 "--concurrency", "1", "--collect-metrics", "--metrics-url", metrics,
                                 "--out", str(tmp_path), *FAST])
    assert r.exit_code == 0, r.output
    (command,) = (tmp_path / "commands.txt").read_text().splitlines()[:1]
    assert f"--collect-metrics --metrics-url {metrics} --verbose-csv" in command
    raw = next((tmp_path / "raw").glob("*.csv")).read_text()
    assert "Avg GPU Utilization" in raw.splitlines()[0]
    rows = json.loads((tmp_path / "report.json").read_text())["results"]
    assert [(x["concurrency"], x["gpu_utilization"]) for x in rows] == [(1, "")]


@pytest.mark.server
def test_variable_shape_model_asked_by_name_is_a_one_line_error(triton_server, tmp_path):
    variable = [m.name for m in inspect_server(triton_server.grpc_url) if m.variable_inputs]
    assert variable, "the session server (tests/fixtures_server.py) serves a variable-shape model for this test"
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--models", variable[0],
                                 "--out", str(tmp_path), *FAST])
    one_line_error(r, variable[0], "--shape")


@pytest.mark.server
def test_unknown_model_is_a_one_line_error(triton_server, tmp_path):
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--models", "nope", "--out", str(tmp_path), *FAST])
    one_line_error(r, "'nope'", "densenet121_onnx")


@pytest.mark.server
def test_http_protocol_inspection(triton_server):
    (m,) = inspect_server(triton_server.http_url, "http", ["densenet121_onnx"])
    assert m.name == "densenet121_onnx" and m.max_batch_size == 8 and not m.on_gpu


def test_server_down_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(cli, ["perf", "--url", f"127.0.0.1:{free_port()}", "--out", str(tmp_path), *FAST])
    one_line_error(r, "no Triton server answers", "make serve")


@pytest.mark.parametrize("flags,needles", [
    (["--concurrency", "5:1"], ["--concurrency '5:1'", "below start"]),
    (["--concurrency", "x"], ["start:end[:step]"]),
    (["--batch-size", "0,a"], ["--batch-size"]),
    (["--measurement-interval", "5"], ["too short"]),
])
def test_bad_flags_are_one_line_errors(flags, needles, tmp_path):
    r = CliRunner().invoke(cli, ["perf", "--out", str(tmp_path), *flags])
    one_line_error(r, *needles)


def test_saturation_rule():
    from dnx.perf.levels import saturated

    assert not saturated({1: 28.0, 2: 29.0, 3: 30.1})  # too few levels to judge
    assert saturated({1: 28.0, 2: 30.0, 3: 30.5, 4: 30.2, 5: 30.8})  # 3 levels within 3 % of 30.0
    assert not saturated({1: 28.0, 2: 30.0, 3: 30.5, 4: 31.0, 5: 30.8})  # c4 gained 3.3 %
    assert not saturated({1: 20.0, 2: 30.0, 3: 30.5, 4: 30.2, 5: 30.8}, floor=8)  # padded batches fill at c8
    assert saturated({c: 50.0 for c in range(1, 9)}, floor=8)


@pytest.mark.server
@pytest.mark.slow
def test_sweep_stops_at_the_first_saturated_level(triton_server, tmp_path):
    """Whatever this machine's numbers: the sweep stops exactly where the rule first holds, and says so."""
    from dnx.perf.levels import ConcurrencyRange, saturated
    from dnx.perf.sweep import SweepOptions, sweep

    models = inspect_server(triton_server.grpc_url, "grpc", ["densenet121_onnx"])
    opts = SweepOptions(url=triton_server.grpc_url, concurrency=ConcurrencyRange(1, 7), measurement_interval_ms=500,
                        stability_percentage=100, max_trials=3, progress=False, skip_saturated=True)
    res = sweep(models, opts, tmp_path)
    rows = res.measurements[("densenet121_onnx", 1)]
    thr = {m.concurrency: m.throughput for m in rows}
    levels = sorted(thr)
    assert levels == list(range(1, len(levels) + 1))
    first = next((k for k in levels if saturated({c: thr[c] for c in levels if c <= k})), None)
    skipped = res.saturated.get(("densenet121_onnx", 1), [])
    if first is None:
        assert levels == list(range(1, 8)) and skipped == []
    else:
        assert first == levels[-1] and skipped == list(range(first + 1, 8)), (thr, skipped)
        assert res.planned() == res.points() == first


@pytest.mark.server
@pytest.mark.slow
def test_system_shared_memory_run_says_so_and_records_memory(triton_server, tmp_path):
    """perf_analyzer --shared-memory system through the real server; each level keeps the model's memory."""
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--models", "densenet121_onnx",
                                 "--concurrency", "1:2", "--shared-memory", "system", "--out", str(tmp_path), *FAST])
    assert r.exit_code == 0, r.output
    commands = (tmp_path / "commands.txt").read_text().splitlines()
    assert len(commands) >= 2 and all("--shared-memory system" in c for c in commands)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["complete"] and report["options"]["shared_memory"] == "system"
    assert "perf_analyzer shared memory: `system`" in (tmp_path / "report.md").read_text()
    rows = report["results"]
    assert [x["concurrency"] for x in rows] == [1, 2] and all(x["shared_memory"] == "system" for x in rows)
    # The session server runs on this machine: found by its port, its model's backend stub measured.
    assert any("RSS" in s for s in report["memory"]["sources"])
    assert all(x["rss_mib"] > 0 and x["server_rss_mib"] > 0 for x in rows), rows
    with (tmp_path / "results.csv").open(newline="") as fh:
        tidy = list(csv.DictReader(fh))
    assert all(float(x["rss_mib"]) > 0 and x["shared_memory"] == "system" for x in tidy)


@pytest.mark.server
def test_memory_probe_finds_the_local_server_and_reads_its_metrics(triton_server):
    from dnx.perf.sweep.memory import MemoryProbe, listening_pid

    assert listening_pid(triton_server.grpc_port) == triton_server.pid
    (model,) = inspect_server(triton_server.grpc_url, "grpc", ["densenet121_onnx"])
    got = MemoryProbe(server_pid=triton_server.pid, metrics_url=triton_server.metrics_url)(model)
    assert got["rss_mib"] > 0 and got["server_rss_mib"] > 0 and got["triton_cpu_memory_mib"] > 0, got
    dead = MemoryProbe(metrics_url=f"127.0.0.1:{free_port()}/metrics")  # nothing listens: given up once, noted
    assert dead(model)["triton_cpu_memory_mib"] is None and dead.metrics_url is None and len(dead.notes) == 1


def test_system_shared_memory_is_refused_for_a_remote_server(tmp_path):
    for command in (["perf"], ["tune", "--repository", str(tmp_path)], ["perf", "--protocol", "http"]):
        r = CliRunner().invoke(cli, [*command, "--url", "10.0.0.5:8001", "--shared-memory", "system",
                                     "--out", str(tmp_path / "out")])
        one_line_error(r, "--shared-memory system needs a server on this machine", "10.0.0.5",
                       "use --shared-memory none")
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.server
@pytest.mark.slow
def test_photos_folder_is_what_the_ensemble_is_sent(triton_server, serving_repository, tmp_path):
    """``--photos DIR``: exactly the folder's photographs (any of JPEG/PNG/WebP) go to the bytes-in model."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (320, 240), (200, 30, 30)).save(photos / "red.jpg", quality=90)
    Image.new("RGB", (240, 320), (30, 200, 30)).save(photos / "green.png")
    out = tmp_path / "results"
    r = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--models", "densenet121", "--concurrency", "1",
                                 "--photos", str(photos), "--out", str(out), "--repository", str(serving_repository),
                                 *FAST])
    assert r.exit_code == 0, r.output
    data = json.loads((out / MIX_INPUT_DATA).read_text())["data"]
    blobs = sorted(base64.b64decode(d["image"]["b64"])[4:6] for d in data)
    assert blobs == sorted([b"\xff\xd8", PNG[:2]])  # one JPEG and one PNG, as stored
    assert report_is_complete(out)
    bad = CliRunner().invoke(cli, ["perf", "--url", triton_server.grpc_url, "--photos", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "nowhere" in bad.output  # click's own usage error for a missing folder
