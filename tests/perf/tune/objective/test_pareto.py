"""Pareto fronts, the decision's PNG and its markdown section."""

from __future__ import annotations

import subprocess
import sys

from dnx.perf.tune.curves import Curve, Load
from dnx.perf.tune.confirm import confirm
from dnx.perf.tune.objective import choose
from dnx.perf.tune.pareto import (curve_dominates, dominates, front, front_at, operating_front, overall_front,
                                       plot_pareto, render_png, report_markdown)
from tests.perf.tune.objective.helpers import AS_EXPORTED, MODEL_ANALYZER, curve, rerun

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_dominates():
    assert dominates((100, 10), (90, 12))
    assert dominates((100, 10), (100, 12)) and dominates((100, 10), (90, 10))
    assert not dominates((100, 10), (100, 10))
    assert not dominates((100, 12), (90, 10))


def test_front_keeps_the_non_dominated_points_by_p99():
    pts = {"a": (100, 10), "b": (150, 20), "c": (120, 25), "d": (200, 40), "e": (90, 9), "f": (200, 40)}
    assert front(pts) == ["e", "a", "b", "d", "f"]  # c is beaten by b; equal points d, f both stay
    assert front({}) == []


def test_front_at_a_level(issue_table):
    current, dnx, ma = issue_table
    curves = [current, dnx, ma, Curve("broken", error="x")]
    assert front_at(curves, 1) == ["as exported"]  # c1: more throughput and (Little's law) less p99
    assert front_at(curves, 16) == ["model analyzer"]
    assert front_at(curves, 32) == []


def test_overall_front_over_the_load():
    a = curve("a", (100, 100, 100), p99=(10, 20, 40), levels=(1, 2, 4))
    b = curve("b", (90, 100, 100), p99=(10, 20, 40), levels=(1, 2, 4))  # dominated by a
    c = curve("c", (80, 100, 140), p99=(12, 20, 30), levels=(1, 2, 4))  # better at c4 only: on the front
    partial = curve("partial", (100, 100), p99=(10, 20), levels=(1, 2))  # c4 missing counts as the worst
    levels = (1, 2, 4)
    assert curve_dominates(a, b, levels) and not curve_dominates(b, a, levels)
    assert curve_dominates(a, partial, levels)
    assert overall_front([a, b, c, partial, Curve("broken", error="x")], levels) == ["a", "c"]
    assert not curve_dominates(a, a, levels)


def test_operating_front_pools_every_level(issue_table):
    current, dnx, ma = issue_table
    on = operating_front([current, dnx, ma], (1, 2, 4, 8, 16))
    assert on[0] == ("as exported", 1) and on[-1] == ("model analyzer", 16)
    assert ("dnx tune defaults", 1) not in on


def test_the_plot_is_a_png(tmp_path, issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma, Curve("broken", error="load failed")])
    path = plot_pareto(d, tmp_path / "out" / "tune-densenet.png")
    data = path.read_bytes()
    assert path == tmp_path / "out" / "tune-densenet.png"
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    assert [p.name for p in path.parent.iterdir()] == ["tune-densenet.png"]  # written atomically, no temp left
    # one level, the saturation objective, and a winner: also drawn
    for dd in (choose(current, [dnx, ma], "16"), choose(current, [dnx, ma], objective="saturation")):
        assert render_png(dd, title="x")[:8] == PNG_MAGIC


def test_importing_the_objective_does_not_import_matplotlib():
    code = ("import sys, dnx.perf.tune.objective, dnx.perf.tune.pareto; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_markdown_when_the_current_config_stays(issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma])
    md = report_markdown(d, plot="tune-densenet.png")
    assert md.startswith("### `as exported` stays\n")
    assert "- a candidate more than 3 % slower than the current config at any level is refused" in md
    assert "![each config over the load; throughput vs p99](tune-densenet.png)" in md
    assert "| `as exported` (current) | 113.8 | 115.2 | 124.5 | 132.4 | 120.1 | 121.0 | front | current, **stays** |" in md
    assert "| `model analyzer` | 25.8 (-77 %) | 50.2 (-56 %) | 71.9 (-42 %) | 133.7 (+1.0 %) | 187.7 (+56 %) |" in md
    assert ("- `model analyzer`: faster at c16 (+56 %) but slower at c1 (-77 %), c2 (-56 %), c4 (-42 %); "
            "`as exported` stays unless you state that load: with `--concurrency 8:16` tune picks it.") in md
    assert "every faster curve drops below the current config's 3 % band at some level" in md
    assert "Rerun" not in md


def test_markdown_when_a_candidate_wins_and_holds(issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma], Load.parse("16"))
    again = rerun("model analyzer", MODEL_ANALYZER[:4] + (185.0,))
    md = report_markdown(d, confirmation=confirm(rerun("as exported", AS_EXPORTED), again, d), heading="##")
    assert md.startswith("## `model analyzer` replaces `as exported`\n")
    assert "**Chosen**: model analyzer: 187.7 infer/s against 120.1 infer/s for the current config (at c16, +56 %)." in md
    assert "| `model analyzer` | 187.7 (+56 %) | 187.7 | front | **chosen** |" in md
    assert "it is on the Pareto front over the load" in md
    assert "**Rerun** (current config and winner back to back, interleaved at every level): holds on the rerun" in md
    assert "c16 185.0 infer/s" in md  # the figures recorded are the rerun's


def test_markdown_names_unstable_figures_and_a_failed_rerun():
    cur = curve("cur", (100.0,) * 5, repeats=[(100, 101)] * 4 + [(100, 125)])
    win = curve("inst=2", (112.0, 118.0, 131.0, 140.0, 135.0))
    d = choose(cur, [win, Curve("broken", error="answers differ")])
    md = report_markdown(d, confirmation=confirm(curve("cur", (120.0,) + (100.0,) * 4), win, d))
    assert "- `cur`: c16 25 %" in md
    assert "| `broken` | - | - | - | - | - | - | failed | failed: answers differ |" in md
    assert "does not hold on the rerun" in md and "Figures recorded for `cur`" in md


def test_markdown_for_a_no_gain_decision_says_so():
    cur = curve("cur", (100.0,) * 5)
    d = choose(cur, [curve("same+", (102.0,) * 5)])
    md = report_markdown(d, [cur, *d.candidates])
    assert "gain less than 3 % on the geometric mean, within measurement noise" in md
    assert "`same+` dominates it by less than the noise margin" in md


def test_markdown_says_why_a_config_within_the_noise_of_the_best_was_chosen():
    base = {"layout": (1, 1), "max_batch": 1, "queue_us": 0}
    current = Curve("exported", curve("exported", AS_EXPORTED).points, knobs=base)
    delay = Curve("mbs=4 q=5000us", curve("q", (130, 140, 150, 170, 200)).points,
                  knobs={**base, "layout": (2, 2), "max_batch": 4, "queue_us": 5000})
    plain = Curve("mbs=4", curve("p", (128, 139, 149, 168, 198)).points, knobs={**base, "layout": (2, 2), "max_batch": 4})
    d = choose(current, [delay, plain])
    assert d.winner.label == "mbs=4"
    md = report_markdown(d, heading="##")
    assert "within 3 % of the highest geometric mean (`mbs=4 q=5000us`) and changes fewer settings" in md
    assert "it is within the noise margin of the Pareto front over the load" in md  # the delay dominates it
