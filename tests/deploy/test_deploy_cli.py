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
        result = publish(repo, uri, endpoint_url=s3_server.url, progress=False)
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
    assert PLAN_MODEL in data["spec"]["models"] and data["spec"]["image"] == "dnx-tritonserver:26.02"  # TensorRT 10.13; Pillow for the preprocessing
    dep = yaml.safe_load((tmp_path / "d" / "plain" / "deployment.yaml").read_text())
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["args"][0].startswith("--model-repository=s3://http://minio.minio:9000/")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    isvc = yaml.safe_load((tmp_path / "d" / "kserve" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["runtimeVersion"] == "26.02-py3"

