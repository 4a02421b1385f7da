"""Paired rounds, the bootstrap interval and the verdicts (dnx.perf.bench.paired), on synthetic samples."""

import numpy as np
import pytest

from dnx.perf.bench.paired import MIN_ROUNDS, bootstrap_interval, paired_rounds, verdict


def _ratios(centre: float, spread: float, n: int, seed: int = 1) -> list[float]:
    return list(centre * np.exp(np.random.default_rng(seed).normal(0, spread, n)))


def test_the_interval_is_seeded_and_brackets_the_geometric_mean():
    r = _ratios(1.02, 0.03, 12)
    a, b = bootstrap_interval(r), bootstrap_interval(r)
    assert a == b  # same rounds, same interval
    assert a.low < a.point < a.high and a.point == pytest.approx(float(np.exp(np.mean(np.log(r)))))
    assert bootstrap_interval(r, seed=5) != a
    # B/A and A/B: mirror intervals.
    inv = bootstrap_interval([1 / x for x in r])
    assert inv.point == pytest.approx(1 / a.point) and inv.low == pytest.approx(1 / a.high, rel=1e-9)
    with pytest.raises(ValueError):
        bootstrap_interval([1.0, 0.0])


@pytest.mark.parametrize("centre,spread,n,expected", [
    (1.00, 0.02, 12, "met"),        # served costs the same as in-process: well under 1.10x
    (1.30, 0.02, 12, "missed"),     # 30 % dearer: the whole interval above the bar
    (1.10, 0.15, 4, "undecided"),   # few noisy rounds straddling the bar
])
def test_verdicts_at_or_below_a_bar(centre, spread, n, expected):
    interval = bootstrap_interval(_ratios(centre, spread, n))
    assert verdict(interval, 1.10, higher_is_better=False) == expected


def test_verdicts_at_or_above_a_bar():
    assert verdict(bootstrap_interval(_ratios(0.95, 0.01, 10)), 0.90, higher_is_better=True) == "met"
    assert verdict(bootstrap_interval(_ratios(0.70, 0.01, 10)), 0.90, higher_is_better=True) == "missed"


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rounds_alternate_and_stop_once_the_interval_is_narrow():
    clock, calls = _Clock(), []
    noise = iter(np.random.default_rng(3).normal(0, 0.01, 200))

    def side(name, value):
        def measure():
            calls.append(name)
            clock.t += 1.0
            return {"cpu_ms": value * (1 + next(noise))}
        return measure

    out = paired_rounds(side("a", 10.0), side("b", 10.5), ("cpu_ms",), margin=0.02, budget_s=1000, clock=clock)
    assert calls[:6] == ["a", "b", "b", "a", "a", "b"]
    assert out.stopped == "narrow enough" and len(out.a) >= MIN_ROUNDS
    assert out.interval("cpu_ms").half_width <= 0.02
    assert out.interval("cpu_ms").low < 1.05 < out.interval("cpu_ms").high


def test_rounds_stop_at_the_time_budget_with_the_interval_they_reached():
    clock = _Clock()
    values = iter(_ratios(1.0, 0.3, 400, seed=9))

    def noisy():
        clock.t += 5.0
        return {"cpu_ms": next(values)}

    out = paired_rounds(noisy, noisy, ("cpu_ms",), margin=0.01, budget_s=60, clock=clock)
    assert out.stopped == "time budget" and len(out.a) == 6  # 10 s a round: the 7th would end past 60 s
    assert out.interval("cpu_ms").half_width > 0.01


@pytest.mark.server
@pytest.mark.slow
def test_paired_bench_against_a_real_server_gives_intervals_and_verdicts(fp32_repository, tmp_path):
    import json

    from click.testing import CliRunner

    from dnx.cli import cli

    r = CliRunner().invoke(cli, ["bench", "--paired", "--repository", str(fp32_repository), "--models", "densenet121_onnx",
                                 "--budget-minutes", "1.2", "--window", "0.6", "--results", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "b" / "paired.json").read_text())
    assert [(p["model"], p["batch"]) for p in doc["pairs"]] == [("densenet121_onnx", 1), ("densenet121_onnx", 8)]
    for p in doc["pairs"]:
        assert p["rounds"] >= 2 and len(p["in_process"]) == len(p["served"]) == p["rounds"]
        assert p["verdict"] in ("met", "missed", "undecided") and p["cpu_target"] == "<= 1.1x"
        cpu = p["cpu_ratio"]
        assert cpu["low"] <= cpu["point"] <= cpu["high"]
        # The same model, the same parameters: the served cost is of the in-process cost's order.
        assert 0.5 < cpu["point"] < 3.0, cpu
        served = p["served"][0]
        assert served["cpu_ms"] > 0 and served["server_compute_infer_ms"] > 0 and served["client_cpu_ms"] > 0
        assert set(p["breakdown_ms"]) == {"server_queue_ms", "server_compute_input_ms", "server_compute_infer_ms",
                                          "server_compute_output_ms"}
    assert doc["cpu"]["model"] and "densenet121_onnx" in r.output and "CPU served/in-process" in r.output
    assert "## Served / in-process, paired rounds" in (tmp_path / "b" / "paired.md").read_text()
