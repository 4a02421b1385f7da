"""LoadGen's summary file read back: real summaries written by mlperf_loadgen 6.0.17 (tests/fixtures/loadgen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnx.perf.slo.summary import OVER, TOO_SHORT, VALID, parse_summary

FIXTURES = Path(__file__).parents[2] / "fixtures" / "loadgen"


def read(name: str):
    return parse_summary((FIXTURES / name).read_text())


def test_valid_server_run():
    s = read("server_valid.txt")
    assert s.scenario == "Server" and s.verdict == VALID and s.result_valid
    assert s.constraints_met and s.early_stopping_met and s.min_queries_met and s.min_duration_met
    assert s.scheduled_qps == pytest.approx(21.90) and s.completed_qps == pytest.approx(21.87)
    assert s.p("99") == pytest.approx(83.581233) and s.p("50") == pytest.approx(22.770616)
    assert s.p("99.9") == pytest.approx(97.510794) and s.mean_ms == pytest.approx(29.967583)
    assert s.more_queries_needed is None


def test_too_short_run_says_how_many_more_queries():
    s = read("server_too_short.txt")
    assert s.verdict == TOO_SHORT and not s.result_valid
    assert s.constraints_met is True and s.early_stopping_met is False
    assert s.processed == 71 and s.more_queries_needed == 388
    assert "* Run unsuccessful." in s.early_stopping_lines


def test_over_the_bound():
    s = read("server_over.txt")
    assert s.verdict == OVER and s.constraints_met is False
    assert s.processed == 127 and s.more_queries_needed == 5363
    assert s.completed_qps == pytest.approx(41.16)


def test_single_stream():
    s = read("single_stream_valid.txt")
    assert s.scenario == "SingleStream" and s.verdict == VALID
    assert s.p("90") == pytest.approx(20.262757) and s.p("99") == pytest.approx(21.48155)
    assert s.processed == 149


def test_not_a_summary():
    with pytest.raises(ValueError, match="not a LoadGen summary"):
        parse_summary("hello: world\n")
