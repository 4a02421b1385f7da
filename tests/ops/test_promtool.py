"""The generated rules under promtool: `check rules`, and `test rules` with synthetic series for
every alert (fires when it should, after its `for`; silent when it should not)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from dnx.ops.rules import MonitoringSpec, alert_rules, plain_rules_yaml, prometheus_rule_yaml
from tests.ops.conftest import PROMTOOL, need_prometheus

JOB = "densenet121"
SPEC = MonitoringSpec(job=JOB, models=("m_ok", "m_bad"), slo_p99_ms=500, pdb_floor=2)
ALERTS = [a["alert"] for a in alert_rules(SPEC)]
RUNBOOK = {a["alert"]: a["annotations"]["runbook"] for a in alert_rules(SPEC)}


def _series(metric: str, values: str, **labels) -> dict:
    sel = ",".join(f'{k}="{v}"' for k, v in {"job": JOB, **labels}.items())
    return {"series": f"{metric}{{{sel}}}", "values": values}


def healthy(minutes: int = 20, bad: dict | None = None, down: bool = False) -> list[dict]:
    """Two replicas (a, b) serving both models: 100 ms p99, 10 requests/s, no failure; ``bad`` overrides."""
    n = minutes * 2  # 30 s steps
    bad = bad or {}
    out = [_series("up", "1x%d" % n, instance="a"), _series("up", ("0x%d" if down else "1x%d") % n, instance="b")]
    for model in SPEC.models:
        for inst in ("a", "b"):
            lab = {"instance": inst, "model": model, "version": "1"}
            p99 = bad.get("p99_us", 100000) if model == "m_bad" and inst == "a" else 100000
            fail = bad.get("fail_per_step", 0) if model == "m_bad" else 0
            out += [
                _series("nv_inference_request_summary_us", f"{p99}x{n}", quantile="0.99", **lab),
                _series("nv_inference_request_success", f"0+300x{n}", **lab),
                _series("nv_inference_request_failure", f"0+{fail}x{n}", reason="BACKEND", **lab),
                _series("nv_inference_exec_count", f"0+100x{n}", **lab),
            ]
            if not (bad.get("gone") and model == "m_bad" and inst == "b"):
                out.append(_series("nv_inference_count", f"0+300x{n}", **lab))
    return out


def _expect(alert: str, summary: str, **labels) -> dict:
    return {"exp_labels": {"severity": "page", **labels},
            "exp_annotations": {"summary": summary, "runbook": RUNBOOK[alert]}}


CASES = {
    "healthy": (healthy(), [(15 * 60, a, []) for a in ALERTS]),
    "p99 above the SLO for 10 minutes": (healthy(bad={"p99_us": 900000}), [
        (9 * 60, "DnxLatencyP99AboveSLO", []),  # above, but not yet for 10 minutes
        (12 * 60, "DnxLatencyP99AboveSLO", [_expect(
            "DnxLatencyP99AboveSLO", "m_bad p99 latency 900 ms is above the 500 ms SLO", model="m_bad", quantile="0.99")]),
        (12 * 60, "DnxErrorRatioHigh", []),
    ]),
    "error ratio above 1 %": (healthy(bad={"fail_per_step": 12}), [
        (3 * 60, "DnxErrorRatioHigh", []),
        (12 * 60, "DnxErrorRatioHigh", [_expect(
            "DnxErrorRatioHigh", "m_bad fails 3.846% of its requests (over 1 %)", model="m_bad")]),
        (12 * 60, "DnxLatencyP99AboveSLO", []),
    ]),
    "model not ready on one replica": (healthy(bad={"gone": True}), [
        (3 * 60, "DnxModelNotReady", []),
        (10 * 60, "DnxModelNotReady", [_expect("DnxModelNotReady", "m_bad is not ready on every replica", model="m_bad")]),
        (10 * 60, "DnxReplicasBelowPDBFloor", []),
    ]),
    "replicas below the PDB floor": (healthy(down=True), [
        (3 * 60, "DnxReplicasBelowPDBFloor", []),
        (10 * 60, "DnxReplicasBelowPDBFloor", [_expect(
            "DnxReplicasBelowPDBFloor", f"only 1 Triton replicas of {JOB} are up; the PodDisruptionBudget keeps at least 2")]),
    ]),
}


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    need_prometheus()
    path = tmp_path_factory.mktemp("rules") / "prometheus-rules.yaml"
    path.write_text(plain_rules_yaml(SPEC))
    return path


def test_promtool_check_rules_passes_on_both_files(rules_file, tmp_path):
    out = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout
    # The PrometheusRule's spec is the same groups.
    groups = yaml.safe_load(prometheus_rule_yaml(SPEC, {"app": "x"}))["spec"]
    (tmp_path / "from-crd.yaml").write_text(yaml.safe_dump(groups))
    out = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "from-crd.yaml")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_promtool_unit_tests_every_alert(rules_file, tmp_path, case):
    series, checks = CASES[case]
    doc = {"rule_files": [str(rules_file)], "evaluation_interval": "30s", "tests": [{
        "interval": "30s", "input_series": series,
        "alert_rule_test": [{"eval_time": f"{t}s", "alertname": a, "exp_alerts": exp} for t, a, exp in checks]}]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_a_wrong_expectation_makes_promtool_fail(rules_file, tmp_path):
    """The unit tests can fail: a healthy pair of replicas does not page for the PDB floor."""
    doc = {"rule_files": [str(rules_file)], "evaluation_interval": "30s", "tests": [{
        "interval": "30s", "input_series": healthy(),
        "alert_rule_test": [{"eval_time": "10m", "alertname": "DnxReplicasBelowPDBFloor",
                             "exp_alerts": [{"exp_labels": {"severity": "page"}}]}]}]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr
