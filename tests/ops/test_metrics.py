"""Reading Triton's memory metrics and the RSS of a local server's processes (real server)."""

from __future__ import annotations

import time

import pytest

from dnx.errors import ServerError
from dnx.ops.metrics import (SERVER_METRICS_FLAGS, memory_by_model, memory_snapshot, parse_metrics, process_memory,
                             scrape, triton_memory)


def test_parse_metrics_reads_labels_and_skips_comments():
    text = ('# HELP nv_cpu_memory_used_bytes CPU memory\n# TYPE nv_cpu_memory_used_bytes gauge\n'
            'nv_cpu_memory_used_bytes 1.5e+09\n'
            'nv_gpu_memory_used_bytes{gpu_uuid="GPU-1"} 2048\n'
            'nv_inference_request_summary_us{model="m",version="1",quantile="0.99"} 123 1700000000000\n'
            'garbage line\n')
    samples = parse_metrics(text)
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("nv_cpu_memory_used_bytes", {}, 1.5e9), ("nv_gpu_memory_used_bytes", {"gpu_uuid": "GPU-1"}, 2048.0),
        ("nv_inference_request_summary_us", {"model": "m", "version": "1", "quantile": "0.99"}, 123.0)]
    mem = triton_memory(samples)
    assert mem.cpu_used == 1.5e9 and mem.gpu_used == {"GPU-1": 2048.0}
    assert mem.to_dict()["cpu_used_mib"] == round(1.5e9 / 2**20, 1)


def test_server_exports_memory_and_latency_summaries(ops_server):
    assert set(SERVER_METRICS_FLAGS) <= set(ops_server.argv)
    deadline = time.monotonic() + 60
    while True:  # CPU figures read 0 until Triton's first collection (every 2 s)
        samples = scrape(ops_server.metrics_url)
        mem = triton_memory(samples)
        if mem.cpu_total or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert mem.cpu_total and 0 < mem.cpu_used <= mem.cpu_total
    quantiles = {s.labels["quantile"] for s in samples if s.name == "nv_inference_request_summary_us"}
    assert quantiles == {"0.5", "0.9", "0.95", "0.99"}


def test_rss_per_model_of_a_local_server(ops_server):
    procs = process_memory(ops_server._proc.pid)
    assert procs[0].role == "tritonserver" and procs[0].rss_bytes > 10 * 2**20
    totals = memory_by_model(procs)
    # One backend stub per model instance (dnx's onnxruntime backend and the Python preprocessing).
    assert {"densenet121_onnx", "densenet121_preprocess", "densenet121_softmax"} <= set(totals)
    assert "densenet121" not in totals  # the ensemble has no process of its own
    assert totals["densenet121_onnx"] > totals["densenet121_softmax"] > 0  # 30 MB of weights vs a Softmax node
    snap = memory_snapshot(metrics_url=ops_server.metrics_url, server_pid=ops_server._proc.pid)
    assert snap["rss_mib"]["densenet121_onnx"] > 30 and snap["triton"]["cpu_total_mib"] is not None


def test_unreachable_endpoint_and_dead_process_are_one_line():
    from dnx.serving.server import free_port

    with pytest.raises(ServerError, match="cannot read Triton metrics at"):
        scrape(f"http://127.0.0.1:{free_port()}/metrics", timeout=3)
    with pytest.raises(ServerError, match="not running"):
        process_memory(2**22 + 12345)
