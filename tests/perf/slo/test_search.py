"""The SLO rate search on synthetic p99(rate) curves (pure: no LoadGen, no server)."""

from __future__ import annotations

import pytest

from dnx.perf.slo.search import OVER, TOO_SHORT, VALID, Point, bracket_answer, search_rate

SERVICE_MS, BOUND_MS = 20.0, 100.0
MU = 1000.0 / SERVICE_MS  # 50/s


def p99(rate: float) -> float:
    """A p99 that grows without bound as the rate nears the service rate (M/M/1-like: D / (1 - rho) * ln 100)."""
    rho = rate / MU
    return float("inf") if rho >= 1 else SERVICE_MS / (1 - rho) * 4.6


# The highest rate with p99(rate) <= BOUND_MS: 1 - rho = 0.92 -> rate = 50 * 0.08 = 4.0 (inverted exactly below).
TRUE_RATE = MU * (1 - SERVICE_MS * 4.6 / BOUND_MS)


def judge_from(curve, undecided_band: float = 0.0):
    calls = []

    def judge(rate: float) -> Point:
        calls.append(rate)
        value = curve(rate)
        if value > BOUND_MS:
            verdict = OVER
        elif value > BOUND_MS * (1 - undecided_band):
            verdict = TOO_SHORT  # early stopping cannot confirm a p99 this close to the bound
        else:
            verdict = VALID
        return Point(rate, verdict, value)

    return judge, calls


def test_highest_valid_rate_within_precision():
    judge, calls = judge_from(p99)
    r = search_rate(judge, start=1.0, precision=0.05, max_runs=20)
    assert r.stopped == "converged"
    assert r.slo_rate <= TRUE_RATE < r.upper
    assert r.upper / r.slo_rate <= 1.05
    assert p99(r.slo_rate) <= BOUND_MS < p99(r.upper)
    assert len(calls) == len(r.points) <= 20 and not r.undecided


@pytest.mark.parametrize("start", [0.1, 3.9, 4.1, 40.0])
def test_any_start_brackets_the_same_answer(start):
    judge, _ = judge_from(p99)
    r = search_rate(judge, start=start, precision=0.02, max_runs=30)
    assert r.slo_rate == pytest.approx(TRUE_RATE, rel=0.021)
    assert r.slo_rate <= TRUE_RATE


def test_early_stopping_undecided_points_are_not_valid_and_listed():
    judge, _ = judge_from(p99, undecided_band=0.05)  # p99 in (95, 100] ms: "too short to decide"
    r = search_rate(judge, start=1.0, precision=0.02, max_runs=30)
    assert r.undecided and all(p.verdict == TOO_SHORT for p in r.undecided)
    assert p99(r.slo_rate) <= 95.0  # the reported rate is one LoadGen confirmed
    assert all(p.rate >= r.upper for p in r.points if not p.valid)
    assert r.upper == min(p.rate for p in r.undecided + [p for p in r.points if p.verdict == OVER])


def test_a_lucky_valid_above_a_failure_is_not_the_answer():
    points = [Point(10, VALID), Point(20, OVER), Point(30, VALID), Point(15, VALID)]
    assert bracket_answer(points) == (15, 20)


def test_nothing_valid_stops_at_the_floor():
    judge, _ = judge_from(lambda rate: 1e9)
    r = search_rate(judge, start=10.0, floor=1.0, max_runs=30)
    assert r.slo_rate is None and r.stopped == "floor"
    assert min(p.rate for p in r.points) == pytest.approx(1.0)


def test_ceiling_and_max_runs():
    judge, _ = judge_from(lambda rate: 1.0)
    r = search_rate(judge, start=1.0, ceiling=5.0, max_runs=30)
    assert r.stopped == "ceiling" and r.slo_rate == 5.0 and r.upper is None
    judge, calls = judge_from(p99)
    r = search_rate(judge, start=0.01, max_runs=3, precision=0.01)
    assert len(calls) == 3 and r.stopped == "max_runs"


def test_bad_arguments():
    with pytest.raises(ValueError):
        search_rate(lambda r: Point(r, VALID), start=0)
