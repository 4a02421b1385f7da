"""`dnx validate`: local parity of a repository and parity through a real running server."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from dnx.cli import cli


def test_local_validation_passes_and_prints_the_table(fp32_repository):
    r = CliRunner().invoke(cli, ["validate", "--repository", str(fp32_repository), "--random-inputs", "2"])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if line.startswith("densenet121_onnx "))
    assert row.rstrip().endswith("PASS")
    max_abs = float(row.split()[3])
    assert 0 <= max_abs < 1e-3


def test_tampered_model_fails_its_gate(fp32_repository, tmp_path):
    import onnx
    from onnx import numpy_helper

    repo = tmp_path / "repo"
    shutil.copytree(fp32_repository, repo)
    path = repo / "densenet121_onnx" / "1" / "model.onnx"
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if len(i.dims) == 4)  # first conv weight
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(w + np.float32(0.05) * np.sign(w), init.name))
    onnx.save(model, str(path))
    r = CliRunner().invoke(cli, ["validate", "--repository", str(repo), "--random-inputs", "0", "--json"])
    assert r.exit_code == 1
    assert "Error: parity gate failed for densenet121_onnx" in r.output
    report = json.loads(r.output[: r.output.index("Error:")])
    row = report["local"]["variants"][0]
    assert row["passed"] is False and row["max_abs"] > 1e-3


def test_missing_repository_and_unknown_model(tmp_path, fp32_repository):
    r = CliRunner().invoke(cli, ["validate", "--repository", str(tmp_path / "nope")])
    assert r.exit_code == 1 and r.output.startswith("Error:") and "dnx export" in r.output
    r = CliRunner().invoke(cli, ["validate", "--repository", str(fp32_repository), "--models", "resnet50"])
    assert r.exit_code == 1 and "'resnet50' is not in" in r.output


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_parity(triton_server, serving_repository, protocol):
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    r = CliRunner().invoke(cli, ["validate", "--repository", str(serving_repository), "--served", "--url", url,
                                 "--protocol", protocol, "--random-inputs", "2", "--json"])
    assert r.exit_code == 0, r.output
    served = json.loads(r.output)["served"]["variants"]
    names = [v["variant"] for v in served]
    assert names == ["densenet121_onnx (served)", "densenet121_onnx (served vs local)", "densenet121 (ensemble, bytes in)"]
    vs_torch, vs_local, ensemble = served
    assert vs_torch["passed"] and vs_torch["max_abs"] < 1e-3
    assert vs_local["max_abs"] < 1e-5 and vs_local["cos_min"] > 0.999999  # the server adds no error
    # Photographs sent as file bytes, decoded on the server: softmax of the local fp32 logits.
    assert ensemble["passed"] and ensemble["max_abs"] <= 1e-4 and ensemble["cos_min"] > 0.99999


@pytest.mark.server
def test_served_ensemble_gate_fails_when_the_server_preprocesses_differently(triton_server_factory, serving_repository,
                                                                            tmp_path):
    """A preprocess model whose transform drifted (resize 288 instead of 256) must fail the ensemble gate."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(serving_repository, repo)
    for extra in ("dnx_test_tiny", "dnx_test_plan"):
        shutil.rmtree(repo / extra)
    cfg = repo / "densenet121_preprocess" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('string_value: "256"', 'string_value: "288"'))
    server = triton_server_factory(repo, log_file=tmp_path / "t.log")
    r = CliRunner().invoke(cli, ["validate", "--repository", str(repo), "--served", "--url", server.grpc_url,
                                 "--models", "densenet121", "--random-inputs", "0", "--json"])
    assert r.exit_code == 1
    rows = json.loads(r.stdout)["served"]["variants"]
    assert [v["variant"] for v in rows] == ["densenet121 (ensemble, bytes in)"]
    assert rows[0]["passed"] is False and rows[0]["max_abs"] > 1e-4
    assert "parity gate failed for densenet121 (ensemble, bytes in)" in r.stderr
    server.stop()


@pytest.mark.server
def test_served_validation_with_the_server_down(fp32_repository):
    from dnx.serving.server import free_port

    r = CliRunner().invoke(cli, ["validate", "--repository", str(fp32_repository), "--served",
                                 "--url", f"127.0.0.1:{free_port()}", "--random-inputs", "0"])
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output
