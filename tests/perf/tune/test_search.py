"""Unit tests of dnx tune's search space, pruning, objective and config round trip (pure, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnx.errors import InputError
from dnx.model_repository.config_edit import ORIG_SUFFIX, config_from_text, config_json, read_config, write_config
from dnx.model_repository.render import TritonConfig, parse_config, render_config
from dnx.perf.levels import fill_level, levels_for
from dnx.perf.tune import space as t
from dnx.perf.tune.curves import Curve, Load
from dnx.perf.tune.decision import Candidate, choices, decide, search_score
from dnx.perf.tune.options import TuneOptions, candidate_estimate_s, confirm_estimate_s

GOLDEN = Path(__file__).parents[2] / "fixtures" / "golden"


def _cfg(**kw) -> TritonConfig:
    args = dict(name="m", max_batch_size=16, input_name="input", output_name="logits", input_dims=(3, 224, 224),
                output_dims=(1000,), backend="onnxruntime",
                parameters={"intra_op_thread_count": "2", "inter_op_thread_count": "1"})
    args.update(kw)
    return TritonConfig(**args)


def _ov(**kw) -> TritonConfig:
    return _cfg(backend="openvino", max_batch_size=1, name="ov",
                parameters={"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}, **kw)


def _pre(**kw) -> TritonConfig:
    """The ensemble's preprocess model as `dnx export` writes it, read back."""
    from dnx.model_repository.ensemble import render_preprocess
    from dnx.spec import get_spec

    return config_from_text(render_preprocess(get_spec("resnet50"), 16, **kw))


def _trt(**kw) -> TritonConfig:
    return _cfg(backend=None, platform="tensorrt_plan", instance_kind="KIND_GPU", name="trt", parameters={},
                preferred_batch_sizes=[8, 16], max_queue_delay_us=100, **kw)


# ------------------------------------------------------------------ config round trip


GOLDENS = sorted(p.name for p in GOLDEN.glob("*.pbtxt"))


def test_the_golden_configs_are_there():
    assert GOLDENS, f"no *.pbtxt in {GOLDEN}: the round-trip test below would test nothing"


@pytest.mark.parametrize("golden", GOLDENS)
def test_golden_configs_round_trip_exactly(golden):
    text = (GOLDEN / golden).read_text()
    assert render_config(config_from_text(text)) == text


def test_config_edit_refuses_what_the_template_cannot_write():
    text = render_config(_cfg()) + 'response_cache { enable: true }\n'
    with pytest.raises(InputError, match="not written by dnx's template"):
        config_from_text(text)
    with pytest.raises(InputError, match="does not parse"):
        config_from_text("name: 'x' bogus_field: 3")


def test_write_config_keeps_the_first_previous_config_once(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    first = render_config(_cfg())
    (d / "config.pbtxt").write_text(first)
    write_config(d, t.apply_knobs(_cfg(), {"layout": (2, 1), "inter": 1, "preferred": 0, "queue_us": 0}))
    write_config(d, t.apply_knobs(_cfg(), {"layout": (1, 2), "inter": 2, "preferred": 4, "queue_us": 1000}))
    assert (d / ("config.pbtxt" + ORIG_SUFFIX)).read_text() == first
    now = read_config(d)
    assert (now.parameters["inter_op_thread_count"], now.preferred_batch_sizes, now.max_queue_delay_us) == ("2", [4], 1000)
    assert not list(d.glob(".*tmp"))


def test_config_json_is_the_rendered_config():
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    cfg = t.apply_knobs(_ov(), {"layout": (2, 2), "hint": "THROUGHPUT", "threads": 1, "max_batch": 4, "queue_us": 1000})
    msg = json_format.Parse(config_json(cfg), model_config_pb2.ModelConfig())
    assert msg == parse_config(render_config(cfg))
    assert msg.instance_group[0].count == 2 and msg.max_batch_size == 4


# ------------------------------------------------------------------ search spaces


def test_search_spaces_fit_the_cores():
    ort = {d.name: d for d in t.search_space("onnxruntime", cores=4)}
    assert ort["layout"].values == ((1, 4), (2, 2), (3, 1), (4, 1))
    assert all(i * n <= 4 or n == 1 for i, n in ort["layout"].values)
    ov = {d.name: d for d in t.search_space("openvino", cores=2)}
    assert ov["layout"].values == ((1, 1), (2, 2)) and ov["max_batch"].values == (1, 2, 4, 8)
    assert set(ov["hint"].values) == {"LATENCY", "THROUGHPUT"}
    trt = {d.name for d in t.search_space("tensorrt_plan", cores=2)}
    assert trt == {"instances", "dynamic_batching", "queue_us", "cuda_graphs"}
    pre = {d.name: d for d in t.search_space("python", cores=2)}
    assert pre["instances"].values == (1, 2, 3) and pre["queue_us"].values == (0, 1000)
    with pytest.raises(InputError):
        t.search_space("pytorch_libtorch")


def test_the_preprocess_model_is_rewritten_as_export_writes_it():
    """tune writes the preprocess config through the common template: byte for byte what export would write."""
    from dnx.model_repository.ensemble import render_preprocess
    from dnx.spec import get_spec

    cfg = _pre()
    assert t.is_preprocess(cfg) and t.knobs_of(cfg) == {"instances": 2, "queue_us": 0}
    tuned = t.apply_knobs(cfg, {"instances": 3, "queue_us": 1000})
    assert render_config(tuned) == render_preprocess(get_spec("resnet50"), 16, instances=3, max_queue_delay_us=1000)
    assert tuned.parameters == cfg.parameters and tuned.max_batch_size == 16


def test_onnxruntime_batches_stay_within_the_exported_max_batch():
    dims = {d.name: d for d in t.space_for(_cfg(max_batch_size=4), cores=2)}
    assert dims["preferred"].values == (0, 2, 4)


def test_batching_cannot_win_with_one_request_in_flight():
    assert {d.name for d in t.space_for(_ov(), cores=2, max_concurrency=1)} == {"layout", "hint", "threads"}
    assert "max_batch" in {d.name for d in t.space_for(_ov(), cores=2, max_concurrency=2)}


@pytest.mark.parametrize("cfg", [_cfg(), _ov(), _trt(), _pre()], ids=["onnxruntime", "openvino", "tensorrt_plan", "python"])
def test_every_point_of_the_space_renders_a_valid_config(cfg):
    """Each value of each dimension, applied alone, gives a config Triton parses and the knobs read back."""
    start = t.knobs_of(cfg)
    for dim in t.space_for(cfg, cores=4):
        for v in dim.values:
            knobs = {**start, dim.name: v}
            new = t.apply_knobs(cfg, knobs)
            msg = parse_config(render_config(new))
            assert msg.name == cfg.name
            back = t.knobs_of(config_from_text(render_config(new)))
            assert back[dim.name] == v or not dim.applies(knobs)
            if cfg.backend == "openvino":
                padded = new.parameters.get("ENABLE_BATCH_PADDING") == "YES"
                assert padded == (new.max_batch_size > 1), "C++ openvino backend needs padding for max_batch_size > 1"
                assert new.parameters["INFERENCE_PRECISION_HINT"] == "f32"  # not owned by tune: kept
            assert all(1 <= b <= new.max_batch_size for b in new.preferred_batch_sizes)


def test_parameters_keep_their_order_through_a_rewrite():
    cfg = _ov()
    text = render_config(t.apply_knobs(config_from_text(render_config(cfg)), {**t.knobs_of(cfg), "threads": 1}))
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith("parameters:")]
    assert keys == ["PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS"]


def test_knobs_of_an_unchanged_config_reproduce_it():
    for cfg in (_ov(), _trt(cuda_graphs=True)):
        assert render_config(t.apply_knobs(cfg, t.knobs_of(cfg))) == render_config(cfg)


def test_unknown_backend_is_refused():
    """A Python model other than the ensemble's preprocess (tensors in) is not dnx's to tune."""
    with pytest.raises(InputError, match="python"):
        t.backend_of(_cfg(backend="python"))
    assert t.backend_of(_pre()) == "python"


# ------------------------------------------------------------------ objective


def _pts(*rows):
    return [{"concurrency": c, "throughput": thr, "p99_ms": p99} for c, thr, p99 in rows]


def test_the_search_score_is_the_objectives_aggregate_and_none_when_a_rule_refuses():
    load = Load.parse("1:4")
    cur = Curve.from_dicts("cur", _pts((1, 50.0, 20.0), (2, 80.0, 40.0), (4, 90.0, 90.0)))
    assert search_score(None, cur, "load", load, None) == pytest.approx((50 * 80 * 90) ** (1 / 3))
    assert search_score(None, cur, "saturation", load, None) == 90.0
    assert search_score(None, cur, "saturation", load, 50) == 80.0
    assert search_score(None, cur, "latency", load, None) == pytest.approx(1000 / 20)
    # Faster at c4 but 10 % slower at c1: refused under load, fine under saturation.
    fast_high = Curve.from_dicts("x", _pts((1, 45.0, 20.0), (2, 90.0, 40.0), (4, 140.0, 60.0)))
    assert search_score(cur, fast_high, "load", load, None) is None
    assert search_score(cur, fast_high, "saturation", load, None) == 140.0
    # Not measured at every level (stopped early): no score under load.
    assert search_score(cur, Curve.from_dicts("y", _pts((4, 100.0, 60.0))), "load", load, None) is None


def test_the_budget_estimate_counts_every_level_and_the_confirm_step():
    load, sat = TuneOptions(), TuneOptions(objective="saturation")
    assert load.levels == (1, 2, 4, 8, 16) and TuneOptions(objective="latency").levels == (1,)
    # saturation adds a fill level per candidate; the load objective does not.
    assert candidate_estimate_s(sat) - candidate_estimate_s(load) == pytest.approx(3 * 1.5 + 2.0)
    # The confirm step: current, winner, winner, current at each of the 5 levels, 2 loads per level.
    assert confirm_estimate_s(load, level_s=6.0, load_s=4.0) == 5 * (4 * 6.0 + 2 * 4.0)
    # One level: three rounds, so the gain's interval has three paired runs (and up to 3 runners-up).
    one = TuneOptions(concurrency=(16,))
    assert confirm_estimate_s(one, level_s=6.0, load_s=4.0) == 1 * (5 * 3 * 6.0 + 5 * 4.0)
    # 14 minutes (first guesses) hold the baselines of 5 models, the confirm steps of the 2 models
    # tuned, and still 5 full candidates (refused ones stop early and cost less).
    left = 14 * 60 - 5 * candidate_estimate_s(load) - 2 * confirm_estimate_s(load)
    assert left > 5 * candidate_estimate_s(load)


def test_throughput_is_the_saturation_objectives_old_name():
    o = TuneOptions(objective="throughput", repository=GOLDEN)
    o.check()
    assert o.objective == "saturation"
    with pytest.raises(InputError, match="load, saturation, latency"):
        TuneOptions(objective="fastest", repository=GOLDEN).check()


# ------------------------------------------------------------------ search and pruning


def _space():
    return [t.Dimension("inst", (1, 2, 3, 4)), t.Dimension("hint", ("A", "B"), ordered=False),
            t.Dimension("mbs", (1, 2, 4, 8)), t.Dimension("queue", (0, 100), applies=lambda k: k["mbs"] > 1)]


def test_search_stops_raising_once_the_objective_drops():
    table = {1: 10.0, 2: 12.0, 3: 11.0, 4: 50.0}  # 4 would win, but 3 already dropped: pruned
    seen = []

    def ev(k):
        seen.append(dict(k))
        return table[k["inst"]] + (1 if k["hint"] == "B" else 0) - (k["mbs"] - 1) + (0.5 if k["queue"] else 0)

    history = t.coordinate_search(_space(), {"inst": 1, "hint": "A", "mbs": 1, "queue": 0}, ev)
    assert [k["inst"] for k in seen[:3]] == [1, 2, 3]
    assert all(k["inst"] != 4 for k in seen)
    assert [k["mbs"] for k in seen if k["mbs"] != 1] == [2]  # mbs 2 dropped: 4 and 8 pruned
    assert not any(k["queue"] for k in seen)  # queue only applies with batching, which lost
    best, s = _best(history)
    assert best == {"inst": 2, "hint": "B", "mbs": 1, "queue": 0} and s == 13.0
    assert len({tuple(sorted(k.items())) for k in seen}) == len(seen)  # nothing measured twice


def test_search_walks_down_only_when_going_up_did_not_help():
    seen = []

    def ev(k):
        seen.append(k["mbs"])
        return {1: 5.0, 2: 6.0, 4: 9.0, 8: 7.0}[k["mbs"]]

    t.coordinate_search([t.Dimension("mbs", (1, 2, 4, 8))], {"mbs": 4}, ev)
    assert seen == [4, 8, 2]  # up: 8 dropped; down: 2 dropped, 1 pruned
    seen.clear()
    t.coordinate_search([t.Dimension("mbs", (1, 2, 4, 8))], {"mbs": 2}, ev)
    assert seen == [2, 4, 8]  # going up helped: never walks down to 1


def test_batch_sizes_get_one_more_try_after_a_dip():
    """One dip does not end a batch-size walk (the figures: OpenVINO int8 at c16, mbs 1 and 2 as dnx tune
    measured them, 4 and 8 as Model Analyzer did, in one run of perf/model_analyzer_compare.sh)."""
    seen = []

    def ev(k):
        seen.append(k["mbs"])
        return {1: 127.7, 2: 116.5, 4: 154.4, 8: 122.4}[k["mbs"]]

    history = t.coordinate_search([t.Dimension("mbs", (1, 2, 4, 8), patience=1)], {"mbs": 1}, ev)
    assert seen == [1, 2, 4, 8] and _best(history) == ({"mbs": 4}, 154.4)
    seen.clear()
    t.coordinate_search([t.Dimension("mbs", (1, 2, 4, 8, 16), patience=1)], {"mbs": 1},
                        lambda k: seen.append(k["mbs"]) or {1: 10.0, 2: 9.0, 4: 8.0, 8: 50.0, 16: 1.0}[k["mbs"]])
    assert seen == [1, 2, 4]  # two values in a row below the best: pruned
    batch_dims = {d.name: d.patience for d in t.search_space("openvino", cores=2) + t.search_space("onnxruntime", cores=2)}
    assert batch_dims["max_batch"] == batch_dims["preferred"] == 1 and batch_dims["layout"] == 0


def test_a_start_measured_already_is_not_measured_again():
    seen = []

    def ev(k):
        seen.append(k["mbs"])
        return {1: 5.0, 2: 6.0, 4: 9.0, 8: 7.0}[k["mbs"]]

    history = t.coordinate_search([t.Dimension("mbs", (1, 2, 4, 8))], {"mbs": 4}, ev, start_score=9.0)
    assert seen == [8, 2] and history[0] == ({"mbs": 4}, 9.0)


def test_failed_candidates_are_kept_and_the_search_goes_on():
    def ev(k):
        return None if k["inst"] == 2 else 10.0 + (k["hint"] == "B")

    history = t.coordinate_search(_space()[:2], {"inst": 1, "hint": "A"}, ev)
    assert ({"inst": 2, "hint": "A"}, None) in history
    assert all(k["inst"] != 3 for k, _ in history)  # a failure ends that walk
    assert _best(history) == ({"inst": 1, "hint": "B"}, 11.0)


def test_budget_exhaustion_ends_the_search_with_what_was_measured():
    calls = []

    def ev(k):
        if len(calls) == 3:
            raise t.BudgetExhausted()
        calls.append(k)
        return float(k["inst"])

    history = t.coordinate_search(_space(), {"inst": 1, "hint": "A", "mbs": 1, "queue": 0}, ev)
    assert len(history) == 3 and _best(history)[1] == 3.0


# ------------------------------------------------------------------ where a candidate is measured


def test_candidates_are_measured_where_their_batches_fill():
    levels = (1, 2, 4)
    # One instance, batch 1: c1..c4 already keep it busy.
    assert levels_for(_ov(), levels, 16) == ((1, 2, 4), None)
    # Two padded instances of batch 4: 2 x 2 x 4 = 16 requests in flight fill them.
    big = t.apply_knobs(_ov(), {"layout": (2, 2), "hint": "LATENCY", "threads": 0, "max_batch": 4, "queue_us": 0})
    assert levels_for(big, levels, 16) == ((1, 2, 4, 16), 16)
    assert levels_for(big, levels, 8) == ((1, 2, 4, 8), 8)  # --max-concurrency caps it
    assert levels_for(big, (1,), 16) == ((1,), None)  # the latency objective: c1 only
    # ONNX Runtime: its preferred batch, not the exported max_batch_size, is what fills.
    ort = t.apply_knobs(_cfg(), {"layout": (1, 2), "inter": 1, "preferred": 2, "queue_us": 0})
    assert fill_level(ort, 16) == 4 and levels_for(ort, levels, 16) == ((1, 2, 4), None)
    assert fill_level(_cfg(dynamic_batching=False), 16) == 2


def test_served_models_fill_level_reads_the_servers_config():
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.served import ServedModel
    from dnx.perf.sweep import SweepOptions, SweepResult

    m = ServedModel("ov", "1", {"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [4]},
                                "instance_group": [{"count": 2, "kind": "KIND_CPU"}]})
    assert m.instances == 2 and fill_level(m.triton) == 16 and fill_level(m.triton, cap=6) == 6
    assert fill_level(ServedModel("o", "1", {"max_batch_size": 16}).triton) == 2  # no batcher: batch 1
    res = SweepResult(Path("."), [m], SweepOptions(url="x", concurrency=ConcurrencyRange(1, 4, 1)))
    assert res.planned() == 4
    res.measurements[("ov", 1)] = [_point(c) for c in (1, 2, 3, 4, 16)]
    assert res.planned() == 5 and res.points() == 5  # the fill level counts as planned once measured


def _point(c):
    import dataclasses

    from dnx.perf.analyzer import Measurement

    required = {f.name: 0.0 for f in dataclasses.fields(Measurement) if f.default is dataclasses.MISSING}
    return Measurement(**{**required, "concurrency": c})


def _best(history):
    """The highest-scoring evaluated candidate (the earliest one on ties), or None if all failed."""
    ok = [(k, s) for k, s in history if s is not None]
    return max(ok, key=lambda ks: ks[1]) if ok else None


def test_a_failed_previous_config_is_kept_with_a_reason():
    pts = [{"concurrency": 1, "throughput": 40.0, "p50_ms": 10.0, "p99_ms": 12.0, "stable": True}]
    cands = [Candidate("m", 0, {"a": 1}, "a=1", status="failed", error="perf_analyzer failed", baseline=True),
             Candidate("m", 1, {"a": 2}, "a=2", points=pts, score=40.0)]
    d = decide(cands, choices(cands, "load", Load.parse("1"), None))["m"]
    assert not d.write and d.gain is None and "nothing can be compared" in d.reason
    assert d.previous_figure == "-" and cands[0].winner


def test_a_winner_without_a_confirmation_is_not_written():
    cands = [Candidate("m", 0, {"a": 1}, "a=1", points=_pts((1, 40.0, 12.0)), baseline=True),
             Candidate("m", 1, {"a": 2}, "a=2", points=_pts((1, 60.0, 10.0)))]
    ch = choices(cands, "load", Load.parse("1"), None)
    assert ch["m"].changes
    d = decide(cands, ch)["m"]
    assert not d.write and "not confirmed" in d.reason and d.best_found == "a=2" and cands[0].winner


def test_a_runner_up_that_wins_the_final_round_is_what_gets_written():
    from dnx.perf.tune.curves import Point, combine
    from dnx.perf.tune.confirm import confirm, runners_up

    cands = [Candidate("m", 0, {"mbs": 1}, "mbs=1", points=_pts((16, 80.0, 200.0)), baseline=True),
             Candidate("m", 1, {"mbs": 2}, "mbs=2", points=_pts((16, 155.0, 130.0))),
             Candidate("m", 2, {"mbs": 4}, "mbs=4", points=_pts((16, 113.0, 220.0)))]
    ch = choices(cands, "load", Load.parse("16"), None)
    assert ch["m"].winner.label == "mbs=2"
    runners = runners_up(ch["m"])
    assert [r.label for r in runners] == ["mbs=4"]
    again = lambda label, t: combine(label, [Point(16, t, 150.0), Point(16, t + 2, 150.0)])  # noqa: E731
    conf = confirm(again("mbs=1", 72.0), again("mbs=2", 134.0), ch["m"], runners=(again("mbs=4", 156.0),))
    d = decide(cands, ch, {"m": conf})["m"]
    assert d.write and d.winner == "mbs=4" and d.knobs == {"mbs": 4} and d.best_found == "mbs=4"
    assert cands[2].winner and not cands[1].winner
    assert d.figure == "157.0 infer/s" and d.point["throughput_median"] == 157.0  # the final round's median
    # Recorded: the low end of its runs' interval, what an independent run on this machine meets.
    assert d.point["throughput"] == pytest.approx(156.0) and d.point["throughput_interval"][1] == pytest.approx(158.0)


def test_saturation_picks_the_config_faster_at_the_fill_level_that_the_load_objective_keeps_out():
    cands = [Candidate("m", 0, {"a": 1}, "a=1", points=_pts((1, 100.0, 10.0), (2, 110.0, 18.0), (4, 115.0, 35.0)),
                       baseline=True),
             Candidate("m", 1, {"a": 2}, "a=2", points=_pts((1, 60.0, 17.0), (2, 100.0, 20.0), (4, 150.0, 27.0),
                                                            (16, 200.0, 80.0)))]
    load = Load.parse("1:4")
    kept = choices(cands, "load", load, None)["m"]
    assert not kept.changes and kept.refusal("a=2").kind == "slower"
    assert [t.label for t in kept.trade_offs] == ["a=2"] and str(kept.trade_offs[0].load) == "4"
    picked = choices(cands, "saturation", load, None)["m"]
    assert picked.changes and picked.winner.label == "a=2" and picked.scores["a=2"] == 200.0  # the fill level c16


def test_a_top_model_the_budget_left_unsearched_says_so_not_that_it_was_outside_the_top():
    from types import SimpleNamespace

    from dnx.perf.tune.decision import unsearched_why

    cands = [Candidate("a", 0, {"x": 1}, "x=1", points=_pts((1, 60.0, 12.0)), baseline=True),
             Candidate("a", 1, {"x": 2}, "x=2", points=_pts((1, 61.0, 12.0))),
             Candidate("b", 0, {"x": 1}, "x=1", points=_pts((1, 40.0, 12.0)), baseline=True),
             Candidate("c", 0, {"x": 1}, "x=1", points=_pts((1, 30.0, 12.0)), baseline=True)]
    why = unsearched_why(SimpleNamespace(interrupted=False))
    d = decide(cands, choices(cands, "load", Load.parse("1"), None), searched=("a", "b"), unsearched_why=why)
    assert d["b"].reason == "not searched: the budget ended the search before its turn; pass a larger --budget-minutes"
    assert d["c"].reason == "not searched (only the --top best variants are tuned)"
    assert unsearched_why(SimpleNamespace(interrupted=True)) == "the run was interrupted before its turn"
