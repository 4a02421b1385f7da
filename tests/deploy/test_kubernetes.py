"""Rendering and offline validation of the Kubernetes manifests (pure: no S3, no cluster).

Regenerate the golden files after an intended template change with
``DNX_UPDATE_GOLDEN=1 pytest tests/deploy/test_kubernetes.py`` (see ``tests/golden.py``: never on CI).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dnx.cli import cli
from dnx.deploy.kubernetes import FILES, GENERATED, DeploySpec, render, validate_documents
from dnx.errors import DnxError, InputError
from tests.golden import check_golden

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "deploy"

SPEC = DeploySpec(
    name="densenet121",
    storage_uri="s3://models/densenet121/versions/0123456789abcdef",
    triton_repository="s3://http://minio.minio:9000/models/densenet121/versions/0123456789abcdef",
    version="0123456789abcdef",
    models=("densenet121_onnx", "densenet121_openvino_int8"),
    image="nvcr.io/nvidia/tritonserver:26.03-py3",
    replicas=2, max_replicas=6, target="cpu", namespace="inference",
)


@pytest.mark.parametrize("path", ["plain/deployment.yaml", "kserve/inferenceservice.yaml"])
def test_golden(path):
    check_golden(GOLDEN / path.replace("/", "_"), render(SPEC)[path])


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_every_manifest_passes_validation(target):
    files = render(dataclasses.replace(SPEC, target=target, namespace=None))
    assert set(files) == set(FILES) | set(GENERATED)
    checked = validate_documents(files, "1.30")
    assert checked["plain/deployment.yaml"] == "Kubernetes 1.30 OpenAPI schema (strict)"
    assert checked["plain/hpa.yaml"] == checked["plain/pdb.yaml"] == checked["plain/service.yaml"]
    assert checked["kserve/inferenceservice.yaml"].startswith("dnx's InferenceService CRD subset")
    assert checked["plain/servicemonitor.yaml"].startswith("dnx's ServiceMonitor CRD subset")


def test_rendered_contents():
    files = {p: yaml.safe_load(t) for p, t in render(dataclasses.replace(SPEC, target="gpu")).items()}
    dep = files["plain/deployment.yaml"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:4] == [f"--model-repository={SPEC.triton_repository}", "--model-control-mode=explicit",
                                     "--load-model=densenet121_onnx", "--load-model=densenet121_openvino_int8"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert all("hostPort" not in p for p in container["ports"]) and "hostNetwork" not in pod
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {"AWS_ACCESS_KEY_ID": "dnx-s3-credentials", "AWS_SECRET_ACCESS_KEY": "dnx-s3-credentials"}
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = files["plain/service.yaml"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    hpa = files["plain/hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_us"
    adapter = files["prometheus-adapter/values.yaml"]["rules"]["custom"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] in [r["name"]["as"] for r in adapter]
    assert files["plain/servicemonitor.yaml"]["spec"]["endpoints"][0]["port"] == "metrics"
    isvc = files["kserve/inferenceservice.yaml"]["spec"]["predictor"]
    assert isvc["model"]["storageUri"] == SPEC.storage_uri and isvc["model"]["modelFormat"] == {"name": "triton"}
    assert isvc["model"]["runtimeVersion"] == "26.03-py3" and isvc["serviceAccountName"] == "densenet121-s3"
    assert files["kserve/serviceaccount.yaml"]["secrets"] == [{"name": "dnx-s3-credentials"}]


@pytest.mark.parametrize("path, mutate, where", [
    ("plain/deployment.yaml", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(hostPorts=[1]), "hostPorts"),
    ("plain/deployment.yaml", lambda d: d["spec"].update(replicas="two"), "spec.replicas"),
    ("kserve/inferenceservice.yaml", lambda d: d["spec"]["predictor"]["model"].update(storageUri="models/x"), "storageUri"),
    ("kserve/inferenceservice.yaml", lambda d: d["spec"]["predictor"].update(minReplica=1), "minReplica"),
    ("kserve/inferenceservice.yaml", lambda d: d["spec"]["predictor"]["model"].update(protocolVersion="v3"), "protocolVersion"),
    ("plain/servicemonitor.yaml", lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"), "interval"),
])
def test_validation_rejects_broken_manifests(path, mutate, where):
    files = render(SPEC)
    doc = yaml.safe_load(files[path])
    mutate(doc)
    with pytest.raises(DnxError, match=f"{path}.*fails validation") as err:
        validate_documents({path: yaml.safe_dump(doc)})
    assert where.split(".")[-1] in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"name": "DenseNet_121"}, "--name 'DenseNet_121' must be a DNS label"),
    ({"replicas": 3, "max_replicas": 2}, "need 1 <= replicas <= max replicas"),
    ({"models": ()}, "no model to load"),
])
def test_bad_values_are_refused_before_rendering(change, message):
    with pytest.raises(InputError, match=message):
        render(dataclasses.replace(SPEC, **change))


def test_local_folder_is_refused(tmp_path):
    (tmp_path / "model_repository").mkdir()
    out = tmp_path / "deploy"
    result = CliRunner().invoke(cli, ["deploy", "kubernetes", "--repository", str(tmp_path / "model_repository"), "--out", str(out)])
    assert result.exit_code == 1
    assert "must be s3://BUCKET/PREFIX; publish the folder first with `dnx publish`" in result.stderr
    assert not out.exists()
