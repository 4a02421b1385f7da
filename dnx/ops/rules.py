"""Prometheus recording rules and SLO alerts for a Triton Deployment, as data.

One set of groups, written twice by ``dnx deploy kubernetes``: inside a PrometheusRule
(prometheus-operator) and as a plain Prometheus rules file (``promtool check rules`` reads it).
Every expression selects ``job="<name>"``: the job prometheus-operator gives the Service the
ServiceMonitor scrapes (a plain Prometheus must name its scrape job the same).

Latency comes from Triton's summaries (``nv_inference_request_summary_us``, quantiles enabled by
:data:`dnx.ops.metrics.SERVER_METRICS_FLAGS`); a summary's quantiles cannot be averaged across
replicas, so the worst replica is recorded (an SLO is broken as soon as one replica breaks it).
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR_RATIO = 0.01


@dataclass(frozen=True)
class MonitoringSpec:
    """What the rules and the dashboard depend on."""

    job: str  # the Service / scrape job name
    models: tuple[str, ...]
    slo_p99_ms: float = 500.0
    pdb_floor: int = 1  # replicas that must stay up (the PodDisruptionBudget's floor)
    namespace: str | None = None
    gpu: bool = False  # a GPU deployment: GPU panels too (a CPU server exports no nv_gpu_* series)


def _sel(spec: MonitoringSpec, **extra: str) -> str:
    labels = {"job": spec.job, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def recording_rules(spec: MonitoringSpec) -> list[dict]:
    """``dnx:*`` series the alerts and the dashboard build on (per model, all replicas)."""
    s = _sel(spec)
    return [
        {"record": "dnx:requests:rate5m", "expr": f"sum by (model) (rate(nv_inference_request_success{s}[5m]))"},
        {"record": "dnx:request_failures:rate5m",
         "expr": f"sum by (model) (rate(nv_inference_request_failure{s}[5m]))"},
        {"record": "dnx:request_errors:ratio_rate5m",
         "expr": "dnx:request_failures:rate5m / (dnx:requests:rate5m + dnx:request_failures:rate5m)"},
        {"record": "dnx:request_latency_us:max",
         "expr": f"max by (model, quantile) (nv_inference_request_summary_us{s})"},
        {"record": "dnx:queue_latency_us:max",
         "expr": f"max by (model, quantile) (nv_inference_queue_summary_us{s})"},
        {"record": "dnx:batch_size:avg5m",
         "expr": f"sum by (model) (rate(nv_inference_count{s}[5m])) / sum by (model) (rate(nv_inference_exec_count{s}[5m]))"},
        {"record": "dnx:model_replicas:count", "expr": f"count by (model) (nv_inference_count{s})"},
        {"record": "dnx:replicas:up", "expr": f"sum(up{s}) or vector(0)"},
    ]


def alert_rules(spec: MonitoringSpec) -> list[dict]:
    """The SLO alerts, each with a summary and a runbook line (the README's "Operating it" has more)."""
    absent = " or ".join(f'absent(dnx:model_replicas:count{{model="{m}"}})' for m in spec.models)
    return [
        {"alert": "DnxLatencyP99AboveSLO",
         "expr": f'dnx:request_latency_us:max{{quantile="0.99"}} / 1000 > {spec.slo_p99_ms:g}', "for": "10m",
         "labels": {"severity": "page"},
         "annotations": {
             "summary": f'{{{{ $labels.model }}}} p99 latency {{{{ printf "%.0f" $value }}}} ms is above the '
                        f"{spec.slo_p99_ms:g} ms SLO",
             "runbook": "Check queue time (dnx:queue_latency_us:max): if it dominates, add replicas or raise the "
                        "HPA ceiling; if compute dominates, run `dnx tune` and roll out the tuned repository."}},
        {"alert": "DnxErrorRatioHigh",
         "expr": f"dnx:request_errors:ratio_rate5m > {ERROR_RATIO:g}", "for": "5m",
         "labels": {"severity": "page"},
         "annotations": {
             "summary": "{{ $labels.model }} fails {{ $value | humanizePercentage }} of its requests (over 1 %)",
             "runbook": "Client errors count too: Triton counts an undecodable image (answered HTTP 400 / gRPC "
                        "INVALID_ARGUMENT) as a failure of the preprocessing model and the ensemble (reason BACKEND, "
                        "like a server fault), so on those two a high ratio can be bad clients (the server log names "
                        "each image); the variants and the softmax fail only on server faults. Read the failure "
                        "reasons (nv_inference_request_failure by reason) and the server log; run "
                        "`dnx check --url <service>:8001 --repository <published>` to see which model misanswers."}},
        {"alert": "DnxModelNotReady",
         "expr": f"(dnx:model_replicas:count < scalar(dnx:replicas:up)) or {absent}", "for": "5m",
         "labels": {"severity": "page"},
         "annotations": {
             "summary": "{{ $labels.model }} is not ready on every replica",
             "runbook": "kubectl logs the tritonserver pods for the model's load error (S3 credentials, a missing "
                        "backend, a plan for another GPU); `dnx check` names the replica."}},
        {"alert": "DnxReplicasBelowPDBFloor",
         "expr": f"dnx:replicas:up < {spec.pdb_floor}", "for": "5m",
         "labels": {"severity": "page"},
         "annotations": {
             "summary": f"only {{{{ $value }}}} Triton replicas of {spec.job} are up; the PodDisruptionBudget "
                        f"keeps at least {spec.pdb_floor}",
             "runbook": "kubectl describe the Deployment and its pods (Pending: capacity or GPU quota; "
                        "CrashLoopBackOff: the model repository); do not drain more nodes until it recovers."}},
    ]


def rule_groups(spec: MonitoringSpec) -> list[dict]:
    """The groups both rule files hold."""
    return [
        {"name": f"dnx-{spec.job}.rules", "interval": "30s", "rules": recording_rules(spec)},
        {"name": f"dnx-{spec.job}.alerts", "rules": alert_rules(spec)},
    ]


def plain_rules_yaml(spec: MonitoringSpec) -> str:
    """A plain Prometheus rules file (``rule_files:``), readable by ``promtool check rules``."""
    import yaml

    head = f"# Written by `dnx deploy kubernetes`: recording rules and SLO alerts for {spec.job}.\n"
    return head + yaml.safe_dump({"groups": rule_groups(spec)}, sort_keys=False, width=120)


def prometheus_rule_yaml(spec: MonitoringSpec, labels: dict[str, str]) -> str:
    """The same groups in a prometheus-operator PrometheusRule."""
    import yaml

    meta = {"name": spec.job, **({"namespace": spec.namespace} if spec.namespace else {}), "labels": labels}
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": meta,
           "spec": {"groups": rule_groups(spec)}}
    head = f"# Written by `dnx deploy kubernetes`: recording rules and SLO alerts for {spec.job}.\n"
    return head + yaml.safe_dump(doc, sort_keys=False, width=120)
