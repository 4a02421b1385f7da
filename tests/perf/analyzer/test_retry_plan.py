"""Retry planning for unstable levels (pure), fed with what the real perf_analyzer wrote and printed."""

from __future__ import annotations

from pathlib import Path

from dnx.perf.analyzer import Segment, parse_csv, plan_retries, unstable_levels

FIXTURES = Path(__file__).parents[2] / "fixtures" / "perf"
# perf_analyzer 2.50's own message for the run that wrote grpc_b2_c1-2_level2_unstable.csv (exit code 0).
MESSAGE = ("Request concurrency: 2\nFailed to obtain stable measurement within 3 measurement windows for "
           "concurrency 2. Please try to increase the --measurement-interval.\n")


def test_a_later_unstable_level_is_left_out_of_the_csv_and_retried_alone_with_a_longer_window():
    measured = {m.concurrency for m in parse_csv(FIXTURES / "grpc_b2_c1-2_level2_unstable.csv")}
    unstable = unstable_levels(MESSAGE)
    assert measured == {1} and unstable == {2}
    assert plan_retries(Segment((1, 2), 1000), measured, unstable, step=1, retries=2) == [Segment((2,), 2000, 1)]


def test_first_level_unstable_aborts_the_range_levels_after_it_rerun_with_the_same_window():
    # exit code 2, no CSV: nothing measured
    plan = plan_retries(Segment((1, 3, 5, 7), 1000), set(), {1}, step=2, retries=2)
    assert plan == [Segment((1,), 2000, 1), Segment((3, 5, 7), 1000, 0)]


def test_retries_spent_then_relaxed_once():
    assert plan_retries(Segment((4,), 4000, 2), set(), {4}, step=1, retries=2) == [Segment((4,), 4000, 2, relaxed=True)]
    assert plan_retries(Segment((4,), 1000, 0), set(), {4}, step=1, retries=0) == [Segment((4,), 1000, 0, relaxed=True)]


def test_gaps_split_into_contiguous_ranges():
    plan = plan_retries(Segment((1, 2, 3, 4, 5, 6), 500), {1, 2}, {4}, step=1, retries=1)
    assert plan == [Segment((4,), 1000, 1), Segment((3,), 500), Segment((5, 6), 500)]
    assert plan_retries(Segment((1, 2), 500), {1, 2}, set(), step=1, retries=1) == []
