"""What every perf command records: results folders, the machine (with its ISA flags), the best row."""

from __future__ import annotations

import re
from pathlib import Path

from dnx.perf.results import ISA_FLAGS, best_per_model, best_row, machine_info, new_results_dir


def test_results_folders_keep_their_names_per_command(tmp_path):
    assert re.fullmatch(r"\d{8}T\d{6}Z", new_results_dir("perf", tmp_path).name)
    assert re.fullmatch(r"bench-\d{8}T\d{6}Z", new_results_dir("bench", tmp_path).name)
    assert re.fullmatch(r"\d{8}T\d{6}Z-tune", new_results_dir("tune", tmp_path).name)
    assert new_results_dir("perf", tmp_path).parent == tmp_path and not new_results_dir("perf", tmp_path).exists()


def test_machine_info_records_the_cpu_and_the_isa_flags_that_change_the_answer():
    m = machine_info()
    text = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    assert m["isa"] == [f for f in ISA_FLAGS if f in flags]
    assert m["cpu"] in text and m["cores"] >= 1 and m["ram_gib"] > 0 and len(m["load_average"]) == 3
    assert isinstance(m["bf16"], bool)  # openvino is installed: its answer, not None


def test_best_row_and_best_per_model_keep_the_first_on_ties():
    rows = [{"model": "a", "batch": 1, "concurrency": 1, "throughput": 5.0},
            {"model": "a", "batch": 1, "concurrency": 2, "throughput": 9.0},
            {"model": "a", "batch": 2, "concurrency": 1, "throughput": 12.0},
            {"model": "b", "batch": 1, "concurrency": 1, "throughput": 7.0},
            {"model": "b", "batch": 1, "concurrency": 2, "throughput": 7.0}]
    assert best_row(rows)["throughput"] == 12.0
    assert best_row(rows, "a", batch=1)["concurrency"] == 2
    assert best_row(rows, "c") is None
    assert {m: r["concurrency"] for m, r in best_per_model(rows).items()} == {"a": 1, "b": 1}


def test_best_row_quotes_a_stable_window_over_a_higher_unstable_one():
    """dnx bench of 2026-12-02 12:46 UTC: c8 134.1 infer/s unstable, c16 111.8 stable; the ratio quoted c8."""
    rows = [{"model": "a", "batch": 1, "concurrency": 8, "throughput": 134.1, "stable": False},
            {"model": "a", "batch": 1, "concurrency": 12, "throughput": 108.8, "stable": True},
            {"model": "a", "batch": 1, "concurrency": 16, "throughput": 111.8, "stable": True}]
    assert best_row(rows)["concurrency"] == 16
    assert best_per_model(rows)["a"]["throughput"] == 111.8
    for r in rows:
        r["stable"] = False  # none stable: the best of what there is, not nothing
    assert best_row(rows)["concurrency"] == 8
