"""``dnx deploy kubernetes``: manifests for Triton replicas reading a published repository from S3.

Written from Jinja2 templates (``templates/kubernetes``), parsed back and validated offline
before anything is written: core objects against the Kubernetes OpenAPI schemas of a stated
version (``kubernetes-validate``, strict: unknown fields fail), the InferenceService and the
ServiceMonitor against dnx's own authored subsets of their CRD schemas (``schemas/``).

Output (``--out``, default ``deploy/``)::

    plain/       Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, ServiceMonitor,
                 check-job.yaml (a Job running `dnx check` against the Service after a rollout)
    kserve/      ServiceAccount, InferenceService (Triton serving runtime)
    prometheus-adapter/values.yaml   the custom-metrics rules the HPA reads (Helm values, not applied)
    monitoring/  dashboard.json (Grafana), rules.yaml (PrometheusRule: recording rules and SLO alerts),
                 prometheus-rules.yaml (the same groups as a plain Prometheus rules file)
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dnx import __version__
from dnx.errors import DnxError, InputError, MissingDependencyError
from dnx.manifest import load_manifest
from dnx.model_repository.layout import atomic_write_text
from dnx.serving import docker as docker_mode
from dnx.serving.servable import TENSORRT, choose_models
from dnx.storage.remote import open_remote
from dnx.storage.s3 import is_s3_uri, parse_s3_uri, resolve_endpoint, triton_uri
from dnx.ops.metrics import SERVER_METRICS_FLAGS
from dnx.ops.dashboard import dashboard_json
from dnx.ops.rules import MonitoringSpec, plain_rules_yaml, prometheus_rule_yaml

TEMPLATES = Path(__file__).parent / "templates"
SCHEMAS = Path(__file__).parent / "schemas"
KUBE_VERSION = "1.30"
SECRET_NAME = "dnx-s3-credentials"
TARGETS = ("cpu", "gpu")
# target -> (cpu request, memory request, memory limit) per replica
RESOURCES = {"cpu": ("2", "4Gi", "8Gi"), "gpu": ("4", "16Gi", "32Gi")}
CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.serving.kserve.io-v1beta1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.monitoring.coreos.com-v1.json",
}
FILES = {
    "plain/deployment.yaml": "kubernetes/deployment.yaml.j2",
    "plain/service.yaml": "kubernetes/service.yaml.j2",
    "plain/hpa.yaml": "kubernetes/hpa.yaml.j2",
    "plain/pdb.yaml": "kubernetes/pdb.yaml.j2",
    "plain/servicemonitor.yaml": "kubernetes/servicemonitor.yaml.j2",
    "plain/check-job.yaml": "kubernetes/check-job.yaml.j2",
    "kserve/serviceaccount.yaml": "kubernetes/serviceaccount.yaml.j2",
    "kserve/inferenceservice.yaml": "kubernetes/inferenceservice.yaml.j2",
    "prometheus-adapter/values.yaml": "prometheus-adapter/values.yaml.j2",
}
# Written from Python (dnx.ops), not from templates.
GENERATED = ("monitoring/dashboard.json", "monitoring/rules.yaml", "monitoring/prometheus-rules.yaml")
NOT_MANIFESTS = ("prometheus-adapter/", "monitoring/dashboard.json", "monitoring/prometheus-rules.yaml")
CLIENT_IMAGE = f"dnx-client:{__version__}"  # docker/Dockerfile.client
DEFAULT_SLO_P99_MS = 500.0


@dataclass(frozen=True)
class ScaleMetric:
    """A Triton metric the HPA scales on, as prometheus-adapter names it."""

    name: str
    description: str
    default_target: int


SCALE_METRICS = {
    "queue-time": ScaleMetric("triton_queue_time_us", "average time a request waits in Triton's queue, microseconds per pod", 20000),
    "inference-rate": ScaleMetric("triton_inferences_per_second", "inferences per second per pod", 50),
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class DeploySpec:
    """Everything the templates need; a pure value, so renderings are reproducible (golden test)."""

    name: str
    storage_uri: str  # s3://BUCKET/PREFIX/versions/<id>: KServe's storageUri
    triton_repository: str  # the same, in Triton's spelling (custom endpoint inside the URL)
    version: str
    models: tuple[str, ...]
    image: str
    replicas: int = 1
    max_replicas: int = 4
    target: str = "cpu"
    region: str = "us-east-1"
    namespace: str | None = None
    scale_metric: str = "queue-time"
    scale_target: int | None = None
    secret: str = SECRET_NAME
    skipped: dict[str, str] = field(default_factory=dict)  # models left out, with the reason
    # KServe runs its own Triton runtime image (NGC, no Pillow): the models it loads, when not
    # all of ``models``, and the NGC release (YY.MM) of that image.
    kserve_models: tuple[str, ...] | None = None
    triton_tag: str | None = None
    slo_p99_ms: float = DEFAULT_SLO_P99_MS  # the p99 latency alert and the check Job's budget
    check_image: str = CLIENT_IMAGE  # runs `dnx check` in plain/check-job.yaml
    endpoint_url: str | None = None  # the S3 endpoint as pods reach it (None: AWS S3)

    @property
    def pdb_floor(self) -> int:
        """Replicas the PodDisruptionBudget keeps (``maxUnavailable: 1``), at least one."""
        return max(1, self.replicas - 1)

    @property
    def runtime_version(self) -> str:
        """KServe's runtimeVersion: the NGC image tag (``26.03-py3``)."""
        if self.triton_tag:
            return f"{self.triton_tag}-py3"
        return self.image.rsplit(":", 1)[1] if ":" in self.image.rsplit("/", 1)[-1] else "latest"


@dataclass
class DeployResult:
    """The files written and how each was validated."""

    spec: DeploySpec
    out: Path
    files: dict[str, str]  # relative path -> what validated it
    kube_version: str

    def to_dict(self) -> dict:
        return {"out": str(self.out), "kube_version": self.kube_version, "files": self.files,
                "spec": {**asdict(self.spec), "models": list(self.spec.models)}}


# --------------------------------------------------------------------------- rendering


def check_spec(spec: DeploySpec) -> None:
    """Raise :class:`InputError` for values Kubernetes would refuse, naming the flag to fix."""
    if not _DNS_LABEL.match(spec.name) or len(spec.name) > 50:
        raise InputError(f"--name {spec.name!r} must be a DNS label: lowercase letters, digits and '-', at most 50 characters")
    if spec.namespace is not None and not _DNS_LABEL.match(spec.namespace):
        raise InputError(f"--namespace {spec.namespace!r} must be a DNS label (lowercase letters, digits, '-')")
    if spec.target not in TARGETS:
        raise InputError(f"--target {spec.target!r}: choose one of {', '.join(TARGETS)}")
    if spec.replicas < 1 or spec.max_replicas < spec.replicas:
        raise InputError(f"--replicas {spec.replicas} / --max-replicas {spec.max_replicas}: need 1 <= replicas <= max replicas")
    if spec.scale_metric not in SCALE_METRICS:
        raise InputError(f"--scale-metric {spec.scale_metric!r}: choose one of {', '.join(SCALE_METRICS)}")
    if not spec.models:
        raise InputError("no model to load; the repository holds nothing this target can serve")
    if not spec.slo_p99_ms > 0:
        raise InputError(f"--slo-p99-ms must be above 0 (got {spec.slo_p99_ms:g})")


def render(spec: DeploySpec) -> dict[str, str]:
    """The text of every output file (relative path -> YAML), from the templates."""
    import jinja2

    check_spec(spec)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["tojson"] = lambda v: json.dumps(v)  # JSON strings are valid YAML scalars, quoted safely
    labels = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "tritonserver",
              "app.kubernetes.io/part-of": "dnx", "app.kubernetes.io/managed-by": "dnx"}
    selector = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "tritonserver"}
    cpu, memory, memory_limit = RESOURCES[spec.target]
    metric = SCALE_METRICS[spec.scale_metric]
    context = {
        **asdict(spec), "models": list(spec.models), "dnx_version": __version__, "gpu": spec.target == "gpu",
        "repository": spec.storage_uri, "runtime_version": spec.runtime_version,
        "kserve_models": list(spec.models if spec.kserve_models is None else spec.kserve_models),
        "labels": "\n".join(f"{k}: {json.dumps(v)}" for k, v in labels.items()),
        "selector": "\n".join(f"{k}: {json.dumps(v)}" for k, v in selector.items()),
        "cpu": cpu, "memory": memory, "memory_limit": memory_limit, "metrics_flags": list(SERVER_METRICS_FLAGS),
        "check_labels": "\n".join(f"{k}: {json.dumps(v)}" for k, v in {**labels, "app.kubernetes.io/component": "check"}.items()),
        "slo_p99_ms": f"{spec.slo_p99_ms:g}",
        "metric": {"name": metric.name, "description": metric.description,
                   "target": spec.scale_target if spec.scale_target is not None else metric.default_target},
    }
    files = {path: env.get_template(template).render(**context) for path, template in FILES.items()}
    return {**files, **render_monitoring(spec, labels)}


def monitoring_spec(spec: DeploySpec) -> MonitoringSpec:
    """What the dashboard and the rules of ``spec`` depend on."""
    return MonitoringSpec(job=spec.name, models=tuple(spec.models), slo_p99_ms=spec.slo_p99_ms,
                          pdb_floor=spec.pdb_floor, namespace=spec.namespace, gpu=spec.target == "gpu")


def render_monitoring(spec: DeploySpec, labels: dict[str, str]) -> dict[str, str]:
    """``monitoring/``: the Grafana dashboard and the rules, built in Python (:mod:`dnx.ops`)."""

    mon = monitoring_spec(spec)
    return {"monitoring/dashboard.json": dashboard_json(mon),
            "monitoring/rules.yaml": prometheus_rule_yaml(mon, labels),
            "monitoring/prometheus-rules.yaml": plain_rules_yaml(mon)}


# --------------------------------------------------------------------------- validation


def _crd_validator(schema_file: str):
    import jsonschema

    schema = json.loads((SCHEMAS / schema_file).read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_documents(files: dict[str, str], kube_version: str = KUBE_VERSION) -> dict[str, str]:
    """Validate every manifest in ``files``; return path -> what validated it. Raises :class:`DnxError`."""
    import yaml

    try:
        import jsonschema
        import kubernetes_validate
    except ImportError as exc:
        raise MissingDependencyError(
            f"offline manifest validation needs kubernetes-validate ({exc}); `pip install kubernetes-validate` "
            "or pass --no-validate"
        ) from None
    done = {}
    for path, text in files.items():
        if path.endswith(".json"):
            doc = json.loads(text)
            if not (isinstance(doc, dict) and doc.get("panels") and doc.get("title")):
                raise DnxError(f"{path} is not a Grafana dashboard (no title or panels); this is a dnx bug: report it")
            done[path] = "JSON (Grafana dashboard, grafana-foundation-sdk)"
            continue
        if path.startswith(NOT_MANIFESTS):
            doc = yaml.safe_load(text)  # at least well-formed YAML
            if path.endswith("prometheus-rules.yaml"):
                if not (isinstance(doc, dict) and doc.get("groups")):
                    raise DnxError(f"{path} holds no rule groups; this is a dnx bug: report it")
                done[path] = "YAML (plain Prometheus rules file; `promtool check rules` reads it)"
            else:
                done[path] = "YAML (Helm values, not a Kubernetes object)"
            continue
        for doc in yaml.safe_load_all(text):
            key = (doc.get("apiVersion"), doc.get("kind"))
            where = f"{path} ({key[1]})"
            try:
                if key in CRD_SCHEMAS:
                    error = jsonschema.exceptions.best_match(_crd_validator(CRD_SCHEMAS[key]).iter_errors(doc))
                    if error is not None:
                        raise error
                    done[path] = f"dnx's {key[1]} CRD subset ({CRD_SCHEMAS[key]})"
                else:
                    version = kubernetes_validate.validate(doc, kube_version, strict=True)
                    done[path] = f"Kubernetes {version} OpenAPI schema (strict)"
            except jsonschema.ValidationError as exc:
                at = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
                raise DnxError(f"{where} fails validation at {at}: {exc.message}; this is a dnx template bug "
                               "unless a flag value caused it: report it, or pass --no-validate") from None
            except (kubernetes_validate.utils.SchemaNotFoundError, kubernetes_validate.utils.VersionNotSupportedError) as exc:
                raise InputError(f"{where}: {exc.message}; pass a --kube-version that kubernetes-validate knows") from None
            except IndexError:  # kubernetes-validate's answer to a version older than all its schemas
                raise InputError(f"{where}: Kubernetes {kube_version} is older than every schema kubernetes-validate "
                                 "ships; pass a --kube-version that kubernetes-validate knows") from None
    return done


# --------------------------------------------------------------------------- from S3 to files


def plan_deployment(
    uri: str,
    *,
    endpoint_url: str | None = None,
    cluster_endpoint_url: str | None = None,
    target: str = "cpu",
    replicas: int = 1,
    max_replicas: int | None = None,
    image: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    scale_metric: str = "queue-time",
    scale_target: int | None = None,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    check_image: str | None = None,
    view_dir: str | Path,
) -> DeploySpec:
    """Resolve the published version of ``uri`` and decide models, image and names for ``target``."""
    if not is_s3_uri(uri):
        raise InputError(f"--repository {uri!r} must be s3://BUCKET/PREFIX; publish the folder first with `dnx publish`")
    parse_s3_uri(uri)
    remote = open_remote(uri, view_dir, endpoint_url=endpoint_url)
    choices = choose_models(remote.view, mode="docker", gpu=target == "gpu")
    models = tuple(c.name for c in choices if c.load)
    if not models:
        detail = "; ".join(f"{c.name}: {c.reason}" for c in choices) or "no model folders"
        raise InputError(f"nothing in {remote.uri} can be served on the {target} target ({detail}); "
                         "choose another --target or export for it")
    manifest = load_manifest(remote.view, required=False)
    plans = [c.name for c in choices if c.load and c.backend in TENSORRT]
    tag = docker_mode.select_image_tag(manifest, plans)
    # Python-backend models (the ensemble's preprocessing) need Pillow, which the NGC image lacks.
    # Plain manifests: the same rule as `dnx serve --mode docker`, the image built from
    # docker/Dockerfile.serve (push it where the cluster pulls from). KServe runs its own NGC
    # Triton runtime, so it serves the tensor models only.
    bytes_path = {c.name for c in choices if c.load and c.backend in ("python", "ensemble")}
    if image is None:
        image = docker_mode.image_for_tag(tag, bool(bytes_path))
    skipped = {c.name: c.reason for c in choices if not c.load}
    skipped.update({f"{m} (KServe)": "needs Pillow, not in KServe's Triton runtime image; the plain manifests serve it"
                    for m in sorted(bytes_path)})
    cluster_endpoint = resolve_endpoint(cluster_endpoint_url) if cluster_endpoint_url else remote.endpoint_url
    model = (manifest.model if manifest is not None else None) or "densenet121"
    default_name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    return DeploySpec(
        name=name or default_name or "dnx-model", storage_uri=remote.uri,
        triton_repository=triton_uri(remote.published.version_location, cluster_endpoint),
        version=remote.published.version, models=models, image=image, replicas=replicas,
        max_replicas=max_replicas if max_replicas is not None else max(replicas, 4 * replicas),
        target=target, region=remote.env.get("AWS_DEFAULT_REGION", "us-east-1"), namespace=namespace,
        scale_metric=scale_metric, scale_target=scale_target, skipped=skipped, triton_tag=tag,
        kserve_models=tuple(m for m in models if m not in bytes_path),
        slo_p99_ms=slo_p99_ms, check_image=check_image or CLIENT_IMAGE, endpoint_url=cluster_endpoint,
    )


def deploy_kubernetes(uri: str, out: str | Path = "deploy", *, validate: bool = True, kube_version: str = KUBE_VERSION,
                      **options) -> DeployResult:
    """Plan (see :func:`plan_deployment`), render, validate, then write every file atomically under ``out``."""
    view = Path(tempfile.mkdtemp(prefix="dnx-deploy-"))
    try:
        spec = plan_deployment(uri, view_dir=view, **options)
    finally:
        shutil.rmtree(view, ignore_errors=True)
    files = render(spec)
    checked = validate_documents(files, kube_version) if validate else {p: "not validated (--no-validate)" for p in files}
    out = Path(out)
    for path, text in files.items():
        atomic_write_text(out / path, text)
    return DeployResult(spec, out, checked, kube_version)
