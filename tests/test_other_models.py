"""Other torchvision classifiers through the whole pipeline: ResNet-50 export, serve, infer, validate.

Random weights, ONNX Runtime fp32 + int8 with 4 calibration photographs: the smallest run
that still exercises every stage a different architecture could break.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnx.cli import cli

CALIB = Path(__file__).parent / "fixtures" / "calib"


def test_unknown_model_is_one_line_listing_the_known_ones(tmp_path):
    r = CliRunner().invoke(cli, ["export", "--model", "vgg16", "--weights", "random", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Traceback" not in r.output
    for name in ("densenet121", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"):
        assert name in r.output
    assert not (tmp_path / "r").exists()


def test_serve_variant_not_built_fails_before_any_work(tmp_path):
    r = CliRunner().invoke(cli, ["export", "--model", "resnet50", "--weights", "random", "--target", "cpu",
                                 "--runtime", "onnxruntime", "--precision", "fp32",
                                 "--serve-variant", "resnet50_openvino_int8", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "--serve-variant 'resnet50_openvino_int8' is not built by this run" in r.output
    assert "resnet50_onnx" in r.output and r.output.count("\n") == 1


@pytest.fixture(scope="module")
def resnet_repository(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resnet") / "model_repository"
    r = CliRunner().invoke(cli, ["export", "--model", "resnet50", "--weights", "random", "--target", "cpu",
                                 "--runtime", "onnxruntime", "--precision", "fp32", "--precision", "int8",
                                 "--calib-dir", str(CALIB), "--calib-samples", "4", "--max-batch", "4",
                                 "--serve-variant", "resnet50_onnx", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "Ensemble resnet50: image bytes -> resnet50_preprocess -> resnet50_onnx" in r.output
    return out


def test_resnet50_repository_names_and_manifest(resnet_repository):
    names = sorted(p.name for p in resnet_repository.iterdir() if p.is_dir())
    assert names == ["resnet50", "resnet50_onnx", "resnet50_onnx_int8", "resnet50_preprocess", "resnet50_softmax"]
    manifest = json.loads((resnet_repository / "dnx-manifest.json").read_text())
    assert manifest["model"] == "resnet50" and manifest["preprocessing"]["resize"] == 256
    assert manifest["ensemble"]["variant"] == "resnet50_onnx" and manifest["ensemble"]["why"] == "--serve-variant"
    assert set(manifest["models"]) == {"resnet50_onnx", "resnet50_onnx_int8"}


@pytest.mark.server
@pytest.mark.slow
def test_resnet50_serve_infer_validate(resnet_repository, triton_server_factory, tmp_path):
    import onnxruntime as ort

    from dnx.preprocess import load_image, sample_photographs
    from dnx.spec import get_spec

    server = triton_server_factory(resnet_repository, log_file=tmp_path / "tritonserver.log")
    assert {"resnet50", "resnet50_onnx", "resnet50_onnx_int8"} <= set(server.loaded)
    photos = sample_photographs()[:2]
    sess = ort.InferenceSession(str(resnet_repository / "resnet50_onnx" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": np.stack([load_image(p, get_spec("resnet50")) for p in photos])})[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = (resnet_repository / "resnet50" / "labels.txt").read_text().splitlines()

    r = CliRunner().invoke(cli, ["infer", *map(str, photos), "--model", "resnet50", "--url", server.grpc_url,
                                 "--json", "-k", "3"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["scores"] == "probabilities"
    for entry, p in zip(data["results"], probs):
        top = np.argsort(p)[::-1][:3]
        assert [x["index"] for x in entry["predictions"]] == top.tolist()
        assert [x["label"] for x in entry["predictions"]] == [labels[i] for i in top]
        np.testing.assert_allclose([x["score"] for x in entry["predictions"]], p[top], atol=1e-4)

    r = CliRunner().invoke(cli, ["infer", str(photos[0]), "--client-preprocess", "--model", "resnet50_onnx",
                                 "--url", server.grpc_url, "--json", "-k", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["predictions"][0]["index"] == int(np.argmax(logits[0]))

    r = CliRunner().invoke(cli, ["validate", "--repository", str(resnet_repository), "--served", "--url",
                                 server.grpc_url, "--random-inputs", "1", "--json"])
    assert r.exit_code == 0, r.output
    served = {v["variant"]: v for v in json.loads(r.stdout)["served"]["variants"]}
    assert served["resnet50 (ensemble, bytes in)"]["passed"] and served["resnet50_onnx (served)"]["passed"]
    assert served["resnet50_onnx_int8 (served)"]["passed"]
    server.stop()
