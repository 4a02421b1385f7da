"""``dnx tune --objective slo``: the open-loop verdict (pure), its bad input, and a real run on a tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.model_repository.config_edit import read_config
from dnx.perf.tune import space as t
from dnx.perf.tune.decision import Candidate
from dnx.perf.tune.options import TuneOptions, TuneResult, slo_estimate_s
from dnx.perf.tune.slo import CURRENT, WINNER, SloRound, Trial, ab_plan, ab_rate, apply_rounds, verdict
from dnx.perf.tune.write_back import decisions_of
from tests.perf.sweep.test_perf_cli import one_line_error
from tests.perf.tune.test_tune_cli import TINY, repo_copy, slow_tiny_repo  # noqa: F401 - fixtures


def _ab(current_valid: list[bool], winner_valid: list[bool], rate: float = 30.0) -> list[dict]:
    runs = iter([("valid" if v else "over") for v in current_valid]), iter([("valid" if v else "over") for v in winner_valid])
    out = []
    for role, seed in ab_plan():
        out.append({"role": role, "seed": seed, "rate": rate,
                    "verdict": next(runs[0] if role == CURRENT else runs[1]), "p99_ms": 1.0})
    return out


def test_ab_plan_interleaves_current_and_winner_with_fresh_schedules():
    plan = ab_plan()
    assert [r for r, _ in plan] == [CURRENT, WINNER, WINNER, CURRENT]
    assert len({s for _, s in plan}) == 2 and not {s for _, s in plan} & {0, 1}  # the search used seeds 0 and 1


def test_the_winner_is_written_only_when_it_holds_where_the_current_config_fails():
    cur, win = Trial("a", CURRENT, rate=20.0, upper=22.0), Trial("b", WINNER, rate=30.0, upper=33.0)
    holds, reason, gain = verdict(cur, win, _ab([False, False], [True, True]))
    assert holds and gain == pytest.approx(0.5) and "2 of 2" in reason
    # The current config also held once at the A/B rate: within the noise, it stays.
    holds, reason, gain = verdict(cur, win, _ab([True, False], [True, True]))
    assert not holds and gain is None and "not distinguishable" in reason and "1 of 2" in reason
    # The winner missed once: it stays too.
    holds, reason, _ = verdict(cur, win, _ab([False, False], [True, False]))
    assert not holds and "not distinguishable" in reason


def test_no_ab_round_means_no_write():
    cur, win = Trial("a", CURRENT, rate=20.0, upper=22.0), Trial("b", WINNER, rate=30.0, upper=33.0)
    assert verdict(cur, win, [])[0] is False
    assert "not above" in verdict(cur, Trial("b", WINNER, rate=19.0, upper=21.0), [])[1]
    assert "VALID at no offered rate" in verdict(cur, Trial("b", WINNER), [])[1]
    assert "kept the current config" in verdict(cur, None, [])[1]
    assert "failed" in verdict(cur, Trial("b", WINNER, error="server gone"), [])[1]


def test_a_current_config_valid_nowhere_loses_to_a_winner_that_holds():
    cur = Trial("a", CURRENT, single_stream_p99_ms=210.0, upper=4.9)  # single-stream over the bound
    win = Trial("b", WINNER, rate=300.0, upper=330.0)
    assert ab_rate(cur, win) == pytest.approx((4.9 * 300.0) ** 0.5)
    holds, _, gain = verdict(cur, win, _ab([False, False], [True, True], rate=ab_rate(cur, win)))
    assert holds and gain is None  # no rate of the current config to compare with


def test_the_ab_rate_lies_between_the_brackets():
    cur, win = Trial("a", CURRENT, rate=20.0, upper=25.0), Trial("b", WINNER, rate=36.0, upper=40.0)
    assert 25.0 < ab_rate(cur, win) < 36.0
    # Overlapping brackets (the current config failed nowhere below the winner's rate): the winner's rate.
    assert ab_rate(Trial("a", CURRENT, rate=20.0, upper=50.0), win) == 36.0


def _result(tmp_path, holds: bool) -> TuneResult:
    opts = TuneOptions(repository=tmp_path, objective="slo", p99_ms=50.0, concurrency=(2,))
    res = TuneResult(tmp_path, opts, searched=(TINY,))
    base = Candidate(TINY, 0, {"instances": 1}, "i=1", baseline=True,
                     points=[{"concurrency": 2, "throughput": 20.0, "p99_ms": 40.0}])
    other = Candidate(TINY, 1, {"instances": 2}, "i=2", points=[{"concurrency": 2, "throughput": 40.0, "p99_ms": 30.0}])
    res.candidates = [base, other]
    cur, win = Trial("i=1", CURRENT, rate=15.0, upper=17.0), Trial("i=2", WINNER, rate=31.0, upper=34.0)
    ab = _ab([False, False], [True, holds])
    res.slo[TINY] = SloRound(50.0, cur, win, ab, *verdict(cur, win, ab))
    return res


def test_decisions_follow_the_open_loop_round(tmp_path):
    res = _result(tmp_path, holds=True)
    d = decisions_of(res)[TINY]
    assert d.write and d.winner == "i=2" and d.knobs == {"instances": 2} and d.confirmed
    assert d.figure == "31.0 infer/s at p99 <= 50 ms (open loop)" and d.previous_figure.startswith("15.0 infer/s")
    assert d.point["slo_rate"] == 31.0 and d.point["slo_interval"] == [31.0, 34.0] and d.gain == pytest.approx(31 / 15 - 1)
    assert [c.winner for c in res.candidates] == [False, True]
    assert d.manifest_record()["slo"]["holds"] is True
    res = _result(tmp_path, holds=False)
    d = decisions_of(res)[TINY]
    assert not d.write and d.winner == "i=1" and not d.confirmed and "not distinguishable" in d.reason
    assert d.point["slo_rate"] == 15.0 and d.best_found == "i=2" and [c.winner for c in res.candidates] == [True, False]
    # Interrupted: the round is not used, nothing is written.
    res = _result(tmp_path, holds=True)
    d = decisions_of(res, confirmed=False)[TINY]
    assert not d.write and d.slo is None and "not confirmed" in d.reason
    assert apply_rounds(res, decisions_of(res, confirmed=False), {})[TINY].slo is None and TINY in res.slo


def test_the_reserve_grows_with_the_queries_a_slow_model_needs():
    opts = TuneOptions(objective="slo", p99_ms=50.0, loadgen_min_duration_ms=1000, max_rate_runs=4)
    assert slo_estimate_s(opts, 20.0) > slo_estimate_s(opts, 2000.0) >= slo_estimate_s(opts, None)


# ------------------------------------------------------------------ bad input


def test_slo_needs_its_bound(repo_copy):  # noqa: F811
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--objective", "slo"])
    one_line_error(r, "--objective slo needs --p99-ms")


def test_the_bound_belongs_to_the_slo_objective(repo_copy):  # noqa: F811
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--p99-ms", "50"])
    one_line_error(r, "--p99-ms bounds the open-loop rate of --objective slo")
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--objective", "slo", "--p99-ms", "0"])
    one_line_error(r, "--p99-ms 0 must be > 0")


# ------------------------------------------------------------------ a real run


@pytest.mark.server
@pytest.mark.slow
def test_real_slo_tune_writes_the_config_that_holds_the_bound(slow_tiny_repo, tmp_path):  # noqa: F811
    """The current config waits up to 200 ms to fill a batch of 4: with one query at a time its p99 is over a
    100 ms bound, so no offered rate is VALID; a config without that wait holds it. The open-loop round
    measures both with LoadGen, the A/B round confirms it, and the written config is the one without the wait."""
    repo, out = slow_tiny_repo, tmp_path / "tune"
    orig = (repo / TINY / "config.pbtxt").read_text()
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo), "--models", TINY, "--objective", "slo",
                                 "--p99-ms", "100", "--budget-minutes", "6", "--out", str(out), "--concurrency", "2",
                                 "--max-concurrency", "2", "--measurement-interval", "300", "--stability-percentage",
                                 "100", "--max-trials", "3", "--loadgen-min-duration-ms", "1000", "--max-rate-runs", "4",
                                 "-q"])
    assert r.exit_code == 0, r.output
    assert "wrote config.pbtxt" in r.output and "at p99 <= 100 ms (open loop)" in r.output, r.output
    report = json.loads((out / "report.json").read_text())
    d = report["decisions"][TINY]
    slo = d["slo"]
    assert d["write"] and slo["holds"] and slo["p99_bound_ms"] == 100
    assert slo["current"]["slo_rate"] is None and slo["current"]["single_stream_p99_ms"] > 100
    assert slo["winner"]["slo_rate"] > 0 and slo["winner"]["single_stream_p99_ms"] < 100
    assert [a["role"] for a in slo["ab"]] == ["current", "winner", "winner", "current"]
    assert [a["verdict"] == "valid" for a in slo["ab"]] == [False, True, True, False]
    # LoadGen's own logs are kept beside the report.
    assert list(out.glob(f"loadgen/{TINY}-winner/server_*/mlperf_log_summary.txt"))
    assert list(out.glob(f"loadgen/{TINY}-current/ab_*/mlperf_log_summary.txt"))
    # Written: the winner's settings, the previous config kept, the manifest's record is the SLO rate.
    assert (repo / TINY / "config.pbtxt.orig").read_text() == orig
    assert read_config(repo / TINY).max_queue_delay_us < 200_000
    assert t.describe(t.knobs_of(read_config(repo / TINY))).split(" q=")[0] in d["winner"]
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    rec = manifest["models"][TINY]["tune"]
    assert rec["objective"] == "slo" and rec["slo_rate"] == slo["winner"]["slo_rate"] and rec["p99_bound_ms"] == 100
    assert manifest["tuning"]["p99_ms"] == 100 and manifest["tuning"]["models"][TINY]["confirmed"]
    md = (out / "report.md").read_text()
    assert "## Open loop" in md and "A/B at" in md and "objective **slo**" in md


def test_the_search_refuses_a_config_over_the_bound_at_its_lowest_level():
    """A batching delay shows at c1 only: the closed loop at c2 fills the batch at once. Saturation's rule takes
    the c2 point; the slo ranking does not, since Poisson arrivals also come one at a time."""
    from dnx.perf.tune.curves import Curve, Load
    from dnx.perf.tune.rules import score_of

    waits = Curve.from_dicts("q=200ms", [{"concurrency": 1, "throughput": 5.0, "p99_ms": 205.0},
                                         {"concurrency": 2, "throughput": 700.0, "p99_ms": 4.0}])
    prompt = Curve.from_dicts("q=0", [{"concurrency": 1, "throughput": 300.0, "p99_ms": 6.0},
                                      {"concurrency": 2, "throughput": 450.0, "p99_ms": 9.0}])
    load = Load((1, 2))
    assert score_of(waits, "saturation", load, 100.0) == 700.0
    assert score_of(waits, "slo", load, 100.0) is None and score_of(prompt, "slo", load, 100.0) == 450.0
    assert TuneOptions(objective="slo", p99_ms=100.0, concurrency=(2,)).levels == (1, 2)
