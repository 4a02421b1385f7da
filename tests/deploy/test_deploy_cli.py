"""`dnx deploy kubernetes` on a repository published to a real S3-compatible server (moto).

No Kubernetes cluster can run here: the manifests are checked offline (schemas) and by content.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import yaml
from click.testing import CliRunner

from dnx.cli import cli
from dnx.deploy.publish import publish
from dnx.hashing import sha256_file
from tests.fixtures_server import PLAN_MODEL, TINY_MODEL, add_test_models

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def published_with_plan(fp32_repository, s3_server, tmp_path_factory):
    """fp32_repository plus a TensorRT plan (built with TensorRT 10.13, says its manifest entry), published."""
    import os

    repo = tmp_path_factory.mktemp("deploy") / "model_repository"
    shutil.copytree(fp32_repository, repo)
    add_test_models(repo)
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    manifest["models"][PLAN_MODEL] = {"runtime": "tensorrt", "precision": "fp16", "tensorrt": {"version": "10.13.3.9"},
                                      "files": {"1/model.plan": sha256_file(repo / PLAN_MODEL / "1" / "model.plan")}}
    (repo / "dnx-manifest.json").write_text(json.dumps(manifest, indent=2))
    uri = f"s3://{s3_server.bucket}/deploy-{uuid.uuid4().hex[:8]}"
    saved = dict(os.environ)
    os.environ.update(s3_server.env())
    try:
        # The test models are added by hand, not by `dnx export`: published as extra files.
        result = publish(repo, uri, endpoint_url=s3_server.url, progress=False, allow_extra=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return uri, result.uri, result.plan.version


def _deploy(uri, out, endpoint, *extra):
    return CliRunner().invoke(cli, ["deploy", "kubernetes", "--repository", uri, "--out", str(out),
                                    "--endpoint-url", endpoint, *extra])


def test_cpu_target_skips_the_plan_and_pins_the_version(published_with_plan, s3_env, tmp_path):
    uri, version_uri, version = published_with_plan
    result = _deploy(uri, tmp_path / "deploy", s3_env.url, "--replicas", "2")
    assert result.exit_code == 0, result.output
    assert f"skipped  {PLAN_MODEL}: TensorRT plan needs an NVIDIA GPU" in result.output
    assert "[Kubernetes 1.30 OpenAPI schema (strict)]" in result.output
    dep = yaml.safe_load((tmp_path / "deploy" / "plain" / "deployment.yaml").read_text())
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    endpoint = s3_env.url
    assert container["args"][0] == f"--model-repository=s3://{endpoint}/{version_uri[len('s3://'):]}"
    assert version in container["args"][0]
    served = ["densenet121", "densenet121_onnx", "densenet121_preprocess", "densenet121_softmax", TINY_MODEL]
    assert sorted(a for a in container["args"] if a.startswith("--load-model=")) == [f"--load-model={m}" for m in served]
    # No plan served: the default tag; the preprocessing model needs the image with Pillow (Dockerfile.serve).
    assert container["image"] == "dnx-tritonserver:26.03"
    assert dep["spec"]["replicas"] == 2 and dep["metadata"]["name"] == "densenet121"
    isvc = yaml.safe_load((tmp_path / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == version_uri and model["runtimeVersion"] == "26.03-py3"
    # KServe's own Triton runtime image has no Pillow: it serves the tensor models, and says so.
    assert sorted(a for a in model["args"] if a.startswith("--load-model=")) == [
        f"--load-model={m}" for m in ("densenet121_onnx", "densenet121_softmax", TINY_MODEL)]
    assert "skipped  densenet121_preprocess (KServe): needs Pillow" in result.output


def test_gpu_target_serves_the_plan_on_the_image_of_its_tensorrt(published_with_plan, s3_env, tmp_path):
    uri, _, _ = published_with_plan
    result = _deploy(uri, tmp_path / "d", s3_env.url, "--target", "gpu", "--json",
                     "--cluster-endpoint-url", "http://minio.minio:9000")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # TensorRT 10.13; Pillow for the preprocessing
    assert PLAN_MODEL in data["spec"]["models"] and data["spec"]["image"] == "dnx-tritonserver:26.02"
    dep = yaml.safe_load((tmp_path / "d" / "plain" / "deployment.yaml").read_text())
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["args"][0].startswith("--model-repository=s3://http://minio.minio:9000/")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    isvc = yaml.safe_load((tmp_path / "d" / "kserve" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["runtimeVersion"] == "26.02-py3"



# ------------------------------------------------------------------ a failed validation writes nothing

# The kinds the issue names; the loop below covers whatever else the templates generate too.
REQUIRED_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "InferenceService",
                  "ServiceMonitor"}


@pytest.fixture(scope="module")
def small_published(s3_server, tmp_path_factory):
    """A published repository with only the tiny ONNX model (and the plan CPU targets skip): quick to deploy."""
    import os

    repo = tmp_path_factory.mktemp("deploy-small") / "model_repository"
    add_test_models(repo)
    (repo / "dnx-manifest.json").write_text(json.dumps({"model": "densenet121", "models": {}}))
    uri = f"s3://{s3_server.bucket}/deploy-small-{uuid.uuid4().hex[:8]}"
    saved = dict(os.environ)
    os.environ.update(s3_server.env())
    try:
        publish(repo, uri, endpoint_url=s3_server.url, progress=False, allow_extra=True)  # hand-made test models
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return uri


def _generated_kinds() -> dict[str, str]:
    """kind -> the file that holds it, for every Kubernetes object `dnx deploy kubernetes` renders."""
    from dnx.deploy import kubernetes as k

    from tests.deploy.test_kubernetes import SPEC

    kinds = {}
    for path, text in k.render(SPEC).items():
        if path.startswith(k.NOT_MANIFESTS):
            continue
        for doc in yaml.safe_load_all(text):
            kinds[doc["kind"]] = path
    assert kinds and REQUIRED_KINDS <= set(kinds), kinds
    return kinds


def _break(kind: str):
    """A render() that adds a field no schema knows to the one object of ``kind`` (strict validation refuses it)."""
    from dnx.deploy import kubernetes as k

    real = k.render

    def render(spec):
        files = real(spec)
        for path, text in files.items():
            if path.startswith(k.NOT_MANIFESTS):
                continue
            docs = list(yaml.safe_load_all(text))
            if any(d["kind"] == kind for d in docs):
                for d in docs:
                    if d["kind"] == kind:
                        d["dnxNotAField"] = True
                files[path] = yaml.safe_dump_all(docs, sort_keys=False)
        return files

    return render


@pytest.mark.parametrize("kind", sorted(_generated_kinds()))
def test_an_invalid_manifest_of_any_kind_writes_nothing(kind, small_published, s3_env, tmp_path, monkeypatch):
    from dnx.deploy import kubernetes as k

    monkeypatch.setattr(k, "render", _break(kind))
    out = tmp_path / "deploy"
    result = _deploy(small_published, out, s3_env.url)
    assert result.exit_code == 1, result.output
    path = _generated_kinds()[kind]
    assert result.stderr.startswith(f"Error: {path} ({kind}) fails validation") and "--no-validate" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_no_validate_writes_even_an_invalid_manifest(small_published, s3_env, tmp_path, monkeypatch):
    from dnx.deploy import kubernetes as k

    monkeypatch.setattr(k, "render", _break("Deployment"))
    out = tmp_path / "deploy"
    result = _deploy(small_published, out, s3_env.url, "--no-validate")
    assert result.exit_code == 0, result.output
    assert "not validated (--no-validate)" in result.output
    assert yaml.safe_load((out / "plain" / "deployment.yaml").read_text())["dnxNotAField"] is True
    assert {str(p.relative_to(out)) for p in out.rglob("*.yaml")} == set(k.FILES) | {g for g in k.GENERATED if g.endswith(".yaml")}


@pytest.mark.parametrize("version", ["0.1", "9.99"])
def test_unknown_kube_version_is_one_line_and_writes_nothing(version, small_published, s3_env, tmp_path):
    out = tmp_path / "deploy"
    result = _deploy(small_published, out, s3_env.url, "--kube-version", version)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and "pass a --kube-version that kubernetes-validate knows" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()
