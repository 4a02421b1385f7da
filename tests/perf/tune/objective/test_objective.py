"""The load-aware objective, the saturation and latency objectives, trade-offs (pure, synthetic curves)."""

from __future__ import annotations

import json
import random

import pytest

from dnx.errors import InputError
from dnx.perf.tune.curves import Curve, Load, Point, geomean
from dnx.perf.tune.objective import MIN_GAIN, SLACK, choose, early_refusal, pct, share
from dnx.perf.tune.pareto import curve_dominates
from tests.perf.tune.objective.helpers import AS_EXPORTED, LEVELS, MODEL_ANALYZER, curve

FLAT = (100.0, 100.0, 100.0, 100.0, 100.0)


def test_defaults_are_the_issues():
    assert SLACK == 0.03 and MIN_GAIN == 0.03
    d = choose(curve("cur", FLAT), [])
    assert d.load.levels == LEVELS and d.objective == "load"
    assert d.aggregate == "geometric mean of throughput over c1, c2, c4, c8, c16"


# ------------------------------------------------------------------ the issue's table


def test_issue_table_default_load_keeps_as_exported(issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma], "1:16")
    assert not d.changes and d.winner is current
    assert "every candidate was refused" in d.why
    assert {r.label: r.kind for r in d.refused} == {"dnx tune defaults": "slower", "model analyzer": "slower"}
    # the issue's wording: faster at the high levels, named with their gains, but slower at c1
    assert d.refusal("model analyzer").reason == ("faster at c16 (+56 %) but 77 % slower than the current config at c1 "
                                                  "(allowed: 3 %)")
    assert d.refusal("dnx tune defaults").reason.startswith("faster at c8 (+12 %), c16 (+23 %) but 61 % slower")


def test_issue_table_names_the_trade_offs_and_the_load_that_would_choose_them(issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma], "1:16")
    trade = {t.label: t for t in d.trade_offs}
    assert set(trade) == {"dnx tune defaults", "model analyzer"}
    t = trade["model analyzer"]
    assert [c for c, _ in t.faster] == [16]  # +1.0 % at c8 is not a gain (below 3 %) ...
    assert [c for c, _ in t.slower] == [1, 2, 4]
    assert str(t.load) == "8:16"  # ... but not a loss either: c8 is part of the load that would choose it
    assert t.pick_under_load == "model analyzer"
    assert t.advice() == "with `--concurrency 8:16` tune picks it"
    # dnx's pick is faster at c8 and c16 too, but under that load Model Analyzer's pick wins
    assert trade["dnx tune defaults"].pick_under_load == "model analyzer"
    assert "`model analyzer` instead" in trade["dnx tune defaults"].advice()


def test_issue_table_concurrency_16_picks_the_model_analyzer_config(issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma], Load.parse("16"))
    assert d.changes and d.winner is ma
    assert d.gain == pytest.approx(187.7 / 120.1 - 1)
    assert d.refusal("dnx tune defaults").kind == "not-best"
    assert d.aggregate == "throughput at c16"


def test_issue_table_saturation_picks_the_high_load_config(issue_table):
    current, dnx, ma = issue_table
    d = choose(current, [dnx, ma], "1:16", objective="saturation")
    assert d.winner is ma
    assert d.scores == {"as exported": 132.4, "dnx tune defaults": 148.8, "model analyzer": 187.7}
    assert d.why.startswith("model analyzer: 187.7 infer/s at c16 against 132.4 infer/s at c8 for the current config")
    # the report still learns what the saturation winner costs at low load
    assert "model analyzer" in {t.label for t in d.trade_offs}


# ------------------------------------------------------------------ the load objective's rules


def test_faster_at_the_fill_level_but_slower_at_c1_is_refused():
    current = curve("cur", (100, 150, 200, 220, 220))
    batched = curve("mbs=8", (60, 120, 210, 300, 400))  # far more throughput at c16, far less at c1
    d = choose(current, [batched])
    assert not d.changes
    r = d.refusal("mbs=8")
    assert r.kind == "slower" and "40 % slower than the current config at c1" in r.reason
    assert r.reason.startswith("faster at c4 (+5.0 %), c8 (+36 %), c16 (+82 %)")
    assert geomean([60, 120, 210, 300, 400]) > geomean([100, 150, 200, 220, 220])  # it had the better aggregate


def test_the_geometric_mean_winner():
    current = curve("cur", FLAT)
    peaky = curve("peaky", (100, 100, 100, 100, 260))  # best single level, gm 121
    even = curve("even", (125, 125, 125, 125, 125))  # gm 125
    small = curve("small", (104, 104, 104, 104, 104))
    d = choose(current, [peaky, even, small])
    assert d.winner is even
    assert d.scores["even"] == pytest.approx(125.0)
    assert d.scores["peaky"] == pytest.approx(geomean([100, 100, 100, 100, 260]))
    assert d.gain == pytest.approx(0.25)
    assert {r.label: r.kind for r in d.refused} == {"peaky": "not-best", "small": "not-best"}
    assert d.why.startswith("even: 125.0 infer/s against 100.0 infer/s for the current config (geometric mean over c1, "
                            "c2, c4, c8, c16, +25 %), never more than 3 % slower at any level (worst: c1 +25 %)")
    # arithmetic mean would have preferred `peaky` (132 > 125): the aggregate is the geometric one
    assert sum((100, 100, 100, 100, 260)) / 5 > 125


@pytest.mark.parametrize("c1, chosen", [(97.0, True), (96.9, False)])
def test_slack_boundary(c1, chosen):
    current = curve("cur", FLAT)
    cand = curve("cand", (c1, 130, 130, 130, 130))
    d = choose(current, [cand])
    assert d.changes is chosen
    if not chosen:
        assert d.refusal("cand").kind == "slower"
        assert "3.1 % slower than the current config at c1 (allowed: 3 %)" in d.refusal("cand").reason


def test_slack_is_a_parameter():
    current = curve("cur", FLAT)
    cand = curve("cand", (90, 130, 130, 130, 130))
    assert not choose(current, [cand]).changes
    d = choose(current, [cand], slack=0.10)
    assert d.changes and "never more than 10 % slower" in d.why


@pytest.mark.parametrize("level, gain, chosen", [(103.0, 0.03, True), (102.9, 0.029, False)])
def test_noise_margin_boundary(level, gain, chosen):
    current = curve("cur", FLAT)
    cand = curve("cand", (level,) * 5)
    d = choose(current, [cand])
    assert d.changes is chosen
    assert d.gain == pytest.approx(gain)
    if not chosen:
        assert d.refusal("cand").kind == "no-gain"
        assert "below the 3 % noise margin: the current config stays" in d.why


def test_latency_budget_at_every_level():
    current = curve("cur", FLAT, p99=(10, 20, 40, 80, 160))
    fast_but_late = curve("late", (150,) * 5, p99=(8, 15, 30, 60, 201))  # over budget at c16 only
    on_time = curve("on-time", (120,) * 5, p99=(9, 18, 36, 70, 150))
    d = choose(current, [fast_but_late, on_time], latency_budget_ms=200)
    assert d.winner is on_time
    assert d.refusal("late").kind == "budget"
    assert d.refusal("late").reason == "p99 201.0 ms at c16 is over the 200 ms budget"
    assert "p99 within 200 ms at every level" in d.why
    # exactly on the budget counts as within it
    assert choose(current, [curve("edge", (150,) * 5, p99=(8, 15, 30, 60, 200))], latency_budget_ms=200).changes


def test_current_config_over_the_budget_is_replaced_by_one_that_meets_it():
    current = curve("cur", FLAT, p99=(10, 20, 40, 80, 260))  # breaks a 200 ms budget at c16
    cand = curve("cand", (100, 100, 100, 100, 92), p99=(10, 20, 40, 80, 180))  # 8 % slower there, no gain
    d = choose(current, [cand], latency_budget_ms=200)
    assert d.winner is cand
    assert "the current config breaks the 200 ms budget" in d.why
    d = choose(current, [curve("late", FLAT, p99=(10, 20, 40, 80, 250))], latency_budget_ms=200)
    assert not d.changes and "although it breaks the 200 ms budget" in d.why


def test_failed_and_unmeasured_candidates_are_refused():
    current = curve("cur", FLAT)
    failed = Curve("broken", error="answers differ from the untuned model (cosine 0.2)")
    partial = curve("partial", (130, 130, 130), levels=(1, 2, 4))
    d = choose(current, [failed, partial])
    assert not d.changes
    assert d.refusal("broken").reason == "failed: answers differ from the untuned model (cosine 0.2)"
    assert d.refusal("partial").reason == "not measured at c8, c16"


def test_an_unmeasured_current_config_stays():
    current = curve("cur", (100, 100, 100), levels=(1, 2, 4))
    d = choose(current, [curve("cand", (200,) * 5)])
    assert not d.changes
    assert d.why == "the current config was not measured at c8, c16: nothing can be compared, it stays"
    assert d.refusal("cand").kind == "unmeasured"
    assert not choose(Curve("cur", error="load failed"), [curve("cand", (200,) * 5)]).changes


def test_the_current_config_among_the_candidates_is_skipped_and_labels_are_unique():
    current = curve("cur", FLAT)
    d = choose(current, [current, curve("a", (120,) * 5)])
    assert [c.label for c in d.candidates] == ["a"]
    with pytest.raises(ValueError, match="unique"):
        choose(current, [curve("a", FLAT), curve("a", FLAT)])


def test_ties_keep_the_current_config_and_then_the_lower_p99():
    current = curve("cur", FLAT)
    d = choose(current, [curve("same", FLAT)])
    assert not d.changes
    slow = curve("slow-p99", (120,) * 5, p99=(20, 30, 50, 90, 170))
    quick = curve("quick-p99", (120,) * 5, p99=(9, 18, 35, 70, 140))
    assert choose(current, [slow, quick]).winner is quick


@pytest.mark.parametrize("kw, match", [({"objective": "throughput"}, "--objective"),
                                       ({"latency_budget_ms": 0}, "--latency-budget-ms"),
                                       ({"slack": 1.5}, "slack")])
def test_bad_settings_are_input_errors(kw, match):
    with pytest.raises(InputError, match=match):
        choose(curve("cur", FLAT), [], **kw)


def test_the_winner_is_never_dominated_and_never_slower_than_the_slack():
    rng = random.Random(19)
    for _ in range(300):
        current = curve("cur", [rng.uniform(50, 150) for _ in LEVELS], p99=[rng.uniform(5, 200) for _ in LEVELS])
        cands = [curve(f"c{i}", [rng.uniform(40, 200) for _ in LEVELS], p99=[rng.uniform(5, 200) for _ in LEVELS])
                 for i in range(6)]
        budget = rng.choice([None, 120.0])
        d = choose(current, cands, latency_budget_ms=budget)
        w = d.winner
        dominators = [o for o in cands if o is not w and curve_dominates(o, w, LEVELS)
                      and (budget is None or max(p.p99_ms for p in o.points) <= budget)]
        if not d.changes:  # a current config that stays is dominated by less than the noise margin only
            assert all(d.scores[o.label] < d.scores[w.label] * (1 + MIN_GAIN) for o in dominators)
        else:
            assert not dominators
            assert all(w.throughput(c) >= 0.97 * current.throughput(c) - 1e-9 for c in LEVELS
                       if budget is None or current.at(c).p99_ms <= budget)
            assert budget is None or max(p.p99_ms for p in w.points) <= budget


# ------------------------------------------------------------------ other objectives


def test_saturation_is_todays_best_level_within_the_budget():
    current = curve("cur", (100, 110, 120), p99=(10, 20, 40), levels=(1, 2, 4))
    fill = Curve("mbs=8", (Point(1, 50, 20), Point(2, 90, 22), Point(4, 130, 31), Point(32, 260, 190)))
    d = choose(current, [fill], "1:4", objective="saturation")
    assert d.winner is fill and d.scores["mbs=8"] == 260  # the fill level beyond the load counts
    d = choose(current, [fill], "1:4", objective="saturation", latency_budget_ms=100)
    assert d.winner is fill and d.scores["mbs=8"] == 130
    d = choose(current, [fill], "1:4", objective="saturation", latency_budget_ms=15)
    assert not d.changes
    assert d.refusal("mbs=8").reason == "no measured level meets the 15 ms budget (best: p99 20.0 ms at c1)"


def test_latency_objective_is_the_lowest_p99_at_the_lowest_level():
    current = curve("cur", FLAT, p99=(10, 20, 40, 80, 160))
    quick = curve("quick", (80,) * 5, p99=(8, 30, 60, 120, 240))
    d = choose(current, [quick], objective="latency")
    assert d.winner is quick
    assert d.gain == pytest.approx(10 / 8 - 1)
    assert "p99 8.0 ms against p99 10.0 ms" in d.why


# ------------------------------------------------------------------ early refusal, instability, JSON


def test_early_refusal_stops_a_candidate_that_can_no_longer_win():
    current = curve("cur", AS_EXPORTED)
    load = Load.parse("1:16")
    # measured from the top down: faster at c16 so far, keep measuring
    assert early_refusal(current, curve("ma", MODEL_ANALYZER[4:], levels=(16,)), load) is None
    reason = early_refusal(current, curve("ma", MODEL_ANALYZER[2:], levels=(4, 8, 16)), load)
    assert reason.startswith("faster at c16 (+56 %) but 42 % slower than the current config at c4")
    late = curve("late", (150,), p99=(300,), levels=(16,))
    assert "over the 200 ms budget" in early_refusal(current, late, load, latency_budget_ms=200)
    assert early_refusal(current, late, load, objective="saturation") is None
    assert early_refusal(current, late, "16", latency_budget_ms=200) == "p99 300.0 ms at c16 is over the 200 ms budget"


def test_unstable_figures_are_flagged():
    current = curve("cur", FLAT, repeats=[(100, 101)] * 4 + [(100, 125)])  # other load overlapped c16
    d = choose(current, [curve("a", (120,) * 5)])
    assert d.unstable == {"cur": {16: pytest.approx(0.25)}}
    assert choose(current, [], unstable_spread=0.3).unstable == {}


def test_decision_to_dict_is_json(issue_table):
    current, dnx, ma = issue_table
    doc = json.loads(json.dumps(choose(current, [dnx, ma]).to_dict()))
    assert doc["winner"] == "as exported" and doc["changes"] is False and doc["load"] == "1:16"
    assert [t["load"] for t in doc["trade_offs"]] == ["8:16", "8:16"]
    assert len(doc["curves"]) == 3


def test_percent_words():
    assert (pct(0.27), pct(-0.034), pct(0.0996), share(0.03), share(0.55), share(0.031)) == \
        ("+27 %", "-3.4 %", "+10 %", "3 %", "55 %", "3.1 %")


# ------------------------------------------------------------------ ties within the noise margin


def _knobbed(label, throughputs, **knobs):
    c = curve(label, throughputs)
    base = {"layout": (1, 1), "hint": "LATENCY", "threads": 0, "max_batch": 1, "queue_us": 0}
    return Curve(c.label, c.points, knobs={**base, **knobs})


def test_within_the_noise_margin_the_config_that_changes_less_wins():
    current = _knobbed("exported", FLAT)
    delay = _knobbed("mbs=4 q=5000us", (120, 150, 160, 170, 175), layout=(2, 2), max_batch=4, queue_us=5000)
    plain = _knobbed("mbs=4", (119, 149, 158, 168, 173), layout=(2, 2), max_batch=4)  # 1.1 % below: noise
    d = choose(current, [delay, plain])
    assert d.winner is plain
    assert "chosen over mbs=4 q=5000us" in d.why and "changes fewer settings (2 against 3)" in d.why
    assert "within the 3 % noise margin of mbs=4's" in d.refusal("mbs=4 q=5000us").reason
    # Beyond the margin the faster one stays the winner, whatever it changes.
    far = _knobbed("mbs=4", (112, 140, 148, 158, 160), layout=(2, 2), max_batch=4)  # 6-9 % below
    assert choose(current, [delay, far]).winner is delay
    # Curves without knobs (nothing to compare) keep the highest score, as before.
    assert choose(curve("exported", FLAT), [curve("a", (120, 150, 160, 170, 175)),
                                            curve("b", (119, 149, 158, 168, 173))]).winner.label == "a"


def test_the_simpler_config_must_gain_the_margin_itself():
    current = _knobbed("exported", FLAT)
    best = _knobbed("inst=2", (104.5,) * 5, layout=(2, 2))  # +4.5 %: a winner
    simpler = _knobbed("threads=1", (102.0,) * 5, threads=1)  # within 3 % of it, but only +2 % over the current
    d = choose(current, [best, simpler])
    assert d.winner is best
