"""Curves, points, repeats and the load parser (pure)."""

from __future__ import annotations

import math

import pytest

from dnx.errors import InputError
from dnx.perf.tune.curves import UNSTABLE_SPREAD, Curve, Load, Point, combine, geomean


@pytest.mark.parametrize("text, levels", [
    ("1:16", (1, 2, 4, 8, 16)),  # the card's default: powers of two
    ("16", (16,)),
    ("1:16:2", (1, 3, 5, 7, 9, 11, 13, 15)),  # explicit step, perf_analyzer's meaning
    ("1:16:1", tuple(range(1, 17))),
    ("3:16", (3, 6, 12, 16)),  # doubling from start, the end always measured
    ("1:12", (1, 2, 4, 8, 12)),
    ("4:4", (4,)),
    ("1,2,4", (1, 2, 4)),  # today's tune --concurrency form
    (" 8, 2 ,2 ", (2, 8)),
])
def test_load_parse(text, levels):
    assert Load.parse(text).levels == levels


@pytest.mark.parametrize("text", ["1:16", "16", "1:16:2", "3:16", "1:12", "1,3,16", "2:10:4"])
def test_load_text_round_trips(text):
    load = Load.parse(text)
    assert Load.parse(str(load)) == load


def test_load_text_is_the_shortest_form():
    assert str(Load((1, 2, 4, 8, 16))) == "1:16"
    assert str(Load((8, 16))) == "8:16"
    assert str(Load((16,))) == "16"
    assert str(Load((2, 4, 6))) == "2:6"  # doubling from 2, then the end
    assert str(Load((3, 5, 7))) == "3:7:2"
    assert str(Load((1, 3, 16))) == "1,3,16"
    assert Load.parse("1:16").describe() == "c1, c2, c4, c8, c16"


@pytest.mark.parametrize("text", ["", "a", "0", "0:16", "16:1", "1:2:3:4", "1:16:0", "1,x"])
def test_load_parse_refuses_with_the_accepted_forms(text):
    with pytest.raises(InputError, match=r"--concurrency .*1:16"):
        Load.parse(text)


def test_point_spread_and_unstable_levels():
    assert Point(1, 100.0, 9.0).spread() == 0.0
    assert Point(1, 100.0, 9.0, (100.0, 110.0)).spread() == pytest.approx(0.10)
    assert Point(1, 0.0, 9.0, (5.0,)).spread() == math.inf
    c = Curve("x", (Point(1, 100.0, 9.0, (100.0, 110.0)), Point(2, 100.0, 19.0, (95.0, 112.0)),
                    Point(4, 120.0, 30.0, (120.0, 121.0))))
    # 10 % exactly is tolerated, 17.9 % is not
    assert list(c.unstable()) == [2]
    assert c.unstable(0.05) == pytest.approx({1: 0.10, 2: 112 / 95 - 1})
    assert UNSTABLE_SPREAD == 0.10


def test_curve_sorts_levels_and_refuses_two_points_at_one_level():
    c = Curve("x", (Point(4, 3.0, 1.0), Point(1, 1.0, 1.0)))
    assert c.levels == (1, 4)
    assert c.at(2) is None and c.throughput(4) == 3.0
    with pytest.raises(ValueError, match="combine"):
        Curve("x", (Point(1, 1.0, 1.0), Point(1, 2.0, 1.0)))


def test_combine_takes_the_median_throughput_and_the_worst_p99():
    runs = [Point(1, 100.0, 10.0), Point(1, 90.0, 12.0), Point(1, 130.0, 9.0), Point(2, 150.0, 14.0)]
    c = combine("x", runs, knobs={"layout": (1, 1)})
    assert c.at(1).throughput == 100.0
    assert c.at(1).p99_ms == 12.0
    assert sorted(c.at(1).repeats) == [90.0, 100.0, 130.0]
    assert c.at(2) == Point(2, 150.0, 14.0)
    assert c.knobs == {"layout": (1, 1)}
    assert c.unstable() == {1: pytest.approx(130 / 90 - 1)}


def test_from_dicts_reads_todays_tune_points():
    points = [{"concurrency": 1, "throughput": 110.0, "p50_ms": 8.0, "p99_ms": 9.5, "stable": True},
              {"concurrency": 2, "throughput": 120.0, "p99_ms": 17.0, "repeats": [118.0, 122.0]}]
    c = Curve.from_dicts("base", points, knobs={"hint": "LATENCY"})
    assert c.levels == (1, 2)
    assert c.at(2).repeats == (118.0, 122.0)
    assert not c.failed
    assert Curve.from_dicts("broken", [], error="load failed").failed
    assert Curve("empty").failed


def test_geomean():
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([5.0]) == pytest.approx(5.0)
    assert geomean([0.0, 8.0]) == 0.0
    with pytest.raises(ValueError):
        geomean([])


def test_to_dict_is_plain():
    c = Curve("x", (Point(1, 1.0, 2.0, (1.0, 1.1)),), error="")
    assert c.to_dict() == {"label": "x", "error": "",
                           "points": [{"concurrency": 1, "throughput": 1.0, "p99_ms": 2.0, "repeats": [1.0, 1.1]}]}
