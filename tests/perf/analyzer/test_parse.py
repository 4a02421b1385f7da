"""perf_analyzer CSV parsing, on files the real perf_analyzer 2.50 wrote (tests/fixtures/perf/)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dnx.errors import PerfError
from dnx.perf.analyzer import parse_csv

FIXTURES = Path(__file__).parents[2] / "fixtures" / "perf"


def raw_order(name: str) -> list[int]:
    with (FIXTURES / name).open(newline="") as fh:
        return [int(r["Concurrency"]) for r in csv.DictReader(fh)]


def test_rows_out_of_order_come_back_sorted_by_concurrency_in_ms():
    # perf_analyzer wrote these rows sorted by throughput: concurrency 2, 3, 1.
    assert raw_order("grpc_b1_c1-3.csv") == [2, 3, 1]
    rows = parse_csv(FIXTURES / "grpc_b1_c1-3.csv")
    assert [r.concurrency for r in rows] == [1, 2, 3]
    c1 = rows[0]
    assert c1.throughput == pytest.approx(5.35833)
    # microseconds in the file -> milliseconds here
    assert c1.p50_ms == pytest.approx(175.961)
    assert c1.p90_ms == pytest.approx(227.967)
    assert c1.p95_ms == pytest.approx(230.463)
    assert c1.p99_ms == pytest.approx(236.332)
    assert c1.server_queue_ms == pytest.approx(0.413)
    assert c1.server_compute_infer_ms == pytest.approx(174.638)
    # perf_analyzer printed "Avg latency: 181956 usec" for this level; the CSV parts sum to it.
    assert c1.avg_ms == pytest.approx(181.956, abs=0.01)
    assert rows[2].p99_ms == pytest.approx(956.222)
    assert all(r.stable and r.gpu_utilization == "" for r in rows)


def test_verbose_csv_with_collect_metrics():
    rows = parse_csv(FIXTURES / "grpc_b1_c1-2_verbose_metrics.csv")
    assert [r.concurrency for r in rows] == [1, 2]
    with (FIXTURES / "grpc_b1_c1-2_verbose_metrics.csv").open(newline="") as fh:
        avg = {int(r["Concurrency"]): float(r["Avg latency"]) / 1000 for r in csv.DictReader(fh)}
    for r in rows:
        assert r.avg_ms == pytest.approx(avg[r.concurrency], abs=0.01)
        assert r.gpu_utilization == ""  # CPU-only server: the GPU columns are empty
    assert rows[1].server_queue_ms == pytest.approx(113.330)


def test_http_batch4_throughput_is_inferences_not_requests():
    rows = parse_csv(FIXTURES / "http_b4_c1-2.csv")
    assert [(r.concurrency, r.throughput) for r in rows] == [(1, pytest.approx(4.34498)), (2, pytest.approx(5.48884))]
    assert rows[0].p99_ms == pytest.approx(1123.48)


def test_unreadable_or_foreign_csv_is_a_one_line_perf_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Request Rate,Inferences/Second\n10,5\n")
    with pytest.raises(PerfError, match="not a perf_analyzer concurrency CSV row") as exc:
        parse_csv(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(PerfError, match="cannot read"):
        parse_csv(tmp_path / "missing.csv")
