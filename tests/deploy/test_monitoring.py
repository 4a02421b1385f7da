"""`dnx deploy kubernetes`'s monitoring files and check Job: contents and offline validation.

The PromQL itself runs against a real Prometheus in tests/ops/test_prometheus.py.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import yaml
from click.testing import CliRunner

from dnx.cli import cli
from dnx.deploy.kubernetes import CLIENT_IMAGE, render, validate_documents
from dnx.errors import DnxError
from dnx.ops.metrics import SERVER_METRICS_FLAGS
from tests.deploy.test_kubernetes import SPEC

PANELS = ["Requests/s", "Failures/s by reason", "End-to-end latency (worst replica)", "Queue time (worst replica)",
          "Batch size achieved"]


def test_deployment_enables_latency_summaries_and_memory_metrics():
    (container,) = yaml.safe_load(render(SPEC)["plain/deployment.yaml"])["spec"]["template"]["spec"]["containers"]
    assert set(SERVER_METRICS_FLAGS) <= set(container["args"])
    assert "--metrics-config=summary_latencies=true" in container["args"]
    assert "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.95:0.005,0.99:0.001" in container["args"]
    assert "--allow-cpu-metrics=true" in container["args"] and "--allow-gpu-metrics=true" in container["args"]


def test_dashboard_has_a_row_per_model_and_a_server_row():
    doc = json.loads(render(SPEC)["monitoring/dashboard.json"])
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == [f"Model {m}" for m in SPEC.models] + ["Server"]
    titles = [p["title"] for p in doc["panels"] if p["type"] != "row"]
    assert titles == PANELS * len(SPEC.models) + ["Replicas up", "CPU utilisation", "CPU memory used"]
    assert doc["uid"] == "dnx-densenet121" and doc["templating"]["list"][0]["type"] == "datasource"
    targets = [t for p in doc["panels"] for t in p.get("targets", [])]
    assert all(t["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for t in targets)
    assert all('job="densenet121"' in t["expr"] for t in targets)
    ids = [p.get("id") for p in doc["panels"]]
    assert len(set(ids)) == len(ids), "panel ids must be unique for Grafana's import"


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_only_a_gpu_deployment_names_gpu_metrics(target):
    files = render(dataclasses.replace(SPEC, target=target))
    text = files["monitoring/dashboard.json"] + "".join(v for k, v in files.items() if "rule" in k)
    assert ("nv_gpu_" in text) == (target == "gpu")
    if target == "gpu":
        titles = [p["title"] for p in json.loads(files["monitoring/dashboard.json"])["panels"]]
        assert titles[-2:] == ["GPU utilisation", "GPU memory used"]


def test_rules_hold_recording_rules_and_the_four_slo_alerts():
    files = render(dataclasses.replace(SPEC, slo_p99_ms=250, replicas=3, max_replicas=6))
    rule = yaml.safe_load(files["monitoring/rules.yaml"])
    plain = yaml.safe_load(files["monitoring/prometheus-rules.yaml"])
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "inference"
    assert rule["spec"]["groups"] == plain["groups"]
    alerts = {r["alert"]: r for g in plain["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == {"DnxLatencyP99AboveSLO", "DnxErrorRatioHigh", "DnxModelNotReady", "DnxReplicasBelowPDBFloor"}
    assert alerts["DnxLatencyP99AboveSLO"]["expr"].endswith("> 250") and alerts["DnxLatencyP99AboveSLO"]["for"] == "10m"
    assert alerts["DnxErrorRatioHigh"]["expr"].endswith("> 0.01")
    assert alerts["DnxReplicasBelowPDBFloor"]["expr"] == "dnx:replicas:up < 2"  # 3 replicas, PDB maxUnavailable 1
    for model in SPEC.models:
        assert f'absent(dnx:model_replicas:count{{model="{model}"}})' in alerts["DnxModelNotReady"]["expr"]
    for a in alerts.values():
        assert a["annotations"]["summary"] and a["annotations"]["runbook"]
    records = [r["record"] for g in plain["groups"] for r in g["rules"] if "record" in r]
    assert "dnx:request_latency_us:max" in records and "dnx:batch_size:avg5m" in records


def test_check_job_runs_dnx_check_against_the_service():
    files = render(dataclasses.replace(SPEC, slo_p99_ms=250, endpoint_url="http://minio.minio:9000"))
    checked = validate_documents(files)
    assert checked["plain/check-job.yaml"] == "Kubernetes 1.30 OpenAPI schema (strict)"
    assert checked["monitoring/rules.yaml"].startswith("dnx's PrometheusRule CRD subset")
    job = yaml.safe_load(files["plain/check-job.yaml"])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == CLIENT_IMAGE and container["command"] == ["dnx", "check"]
    assert container["args"][:3] == ["--url=densenet121:8001", "--protocol=grpc", f"--repository={SPEC.storage_uri}"]
    assert "--p99-ms=250" in container["args"]
    assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio:9000"} in container["env"]
    # The Service and the PDB select the Triton pods only, never the check's pod.
    svc = yaml.safe_load(files["plain/service.yaml"])
    assert not svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["spec"]["groups"][1]["rules"][0].update({"for": "10 minutes"}), "for"),
    (lambda d: d["spec"]["groups"][0]["rules"][0].update(alert="X"), "(top level)|rules"),
    (lambda d: d["spec"].update(group=[]), "group"),
])
def test_broken_prometheus_rule_fails_validation(mutate, where):
    doc = yaml.safe_load(render(SPEC)["monitoring/rules.yaml"])
    mutate(doc)
    with pytest.raises(DnxError, match="monitoring/rules.yaml.*fails validation"):
        validate_documents({"monitoring/rules.yaml": yaml.safe_dump(doc)})


@pytest.mark.s3
def test_deploy_writes_the_monitoring_files(fp32_repository, s3_env, tmp_path):
    from dnx.deploy.publish import publish

    uri = f"s3://{s3_env.bucket}/mon-{uuid.uuid4().hex[:8]}"
    publish(fp32_repository, uri, endpoint_url=s3_env.url, progress=False)
    out = tmp_path / "deploy"
    result = CliRunner().invoke(cli, ["deploy", "kubernetes", "--repository", uri, "--out", str(out),
                                      "--endpoint-url", s3_env.url, "--slo-p99-ms", "300", "--check-image", "reg/dnx-client:1"])
    assert result.exit_code == 0, result.output
    for path in ("monitoring/dashboard.json", "monitoring/rules.yaml", "monitoring/prometheus-rules.yaml",
                 "plain/check-job.yaml"):
        assert (out / path).is_file() and f"wrote    {out / path}" in result.output
    doc = json.loads((out / "monitoring/dashboard.json").read_text())
    assert [p["title"] for p in doc["panels"] if p["type"] == "row"][:-1] == [
        f"Model {m}" for m in ("densenet121", "densenet121_onnx", "densenet121_preprocess", "densenet121_softmax")]
    job = yaml.safe_load((out / "plain/check-job.yaml").read_text())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "reg/dnx-client:1" and "--p99-ms=300" in container["args"]
    assert any(a.startswith(f"--repository={uri}/versions/") for a in container["args"])
