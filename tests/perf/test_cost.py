"""CPU cost per served inference (dnx.perf.sweep.cost) against a real tritonserver and a model of known cost."""

import csv
import json

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.perf.sweep.cost import FIELDS, REMOTE, CpuProbe

BURN_MS = 30.0
BURN_MODEL = "dnx_test_burn"
MODEL_PY = f'''
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            start = time.thread_time()  # CPU time of this thread: the same cost however busy the machine is
            while time.thread_time() - start < {BURN_MS / 1000!r}:
                pass
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2)]))
        return responses
'''


@pytest.fixture(scope="module")
def burn_server(triton_server_factory, tmp_path_factory):
    """A server whose one model burns exactly 30 ms of CPU per request (no batching, one instance)."""
    repo = tmp_path_factory.mktemp("burn") / "repo"
    (repo / BURN_MODEL / "1").mkdir(parents=True)
    (repo / BURN_MODEL / "1" / "model.py").write_text(MODEL_PY)
    (repo / BURN_MODEL / "config.pbtxt").write_text(
        f'name: "{BURN_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n")
    return triton_server_factory(repo, log_file=tmp_path_factory.mktemp("burnlog") / "tritonserver.log")


@pytest.mark.server
def test_server_cpu_per_inference_is_the_models_known_cost(burn_server, tmp_path):
    out = tmp_path / "perf"
    r = CliRunner().invoke(cli, ["perf", "--url", burn_server.grpc_url, "--models", BURN_MODEL, "--concurrency", "1:2",
                                 "--measurement-mode", "time_windows", "--measurement-interval", "1500",
                                 "--stability-percentage", "100", "--core-hour-cost", "0.05", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [int(row["concurrency"]) for row in rows] == [1, 2]
    for row in rows:
        server, client = float(row["server_cpu_ms_per_inference"]), float(row["client_cpu_ms_per_request"])
        # The model's 30 ms plus what Triton and the stub add per request: within 10 %.
        assert BURN_MS <= server <= 1.1 * BURN_MS, row
        assert 0 < client < server / 3 and row["client_bound"] == "False", row  # the client's share, apart
        assert float(row["cores_per_1000_infer_s"]) == pytest.approx(server, rel=1e-3)
        assert float(row["usd_per_million"]) == pytest.approx(server / 1000 * 1e6 / 3600 * 0.05, rel=1e-2)
        # One instance burning: at most one core busy, and busy most of the time.
        assert 0.5 < float(row["server_cores_busy"]) <= 1.1, row
    report = json.loads((out / "report.json").read_text())
    assert report["cpu"]["sources"] and not report["cpu"]["notes"]
    assert "plots/cpu_ms_per_inference.png" in report["plots"].values()
    assert f"{BURN_MODEL}" in r.output and "ms/inference" in r.output and "per million inferences" in r.output


def test_a_remote_server_gets_no_cpu_figures_rather_than_made_up_ones():
    probe = CpuProbe.for_url("192.0.2.10:8001")  # TEST-NET-1: never contacted, not on this machine
    assert probe.server_pid is None and probe.notes == [REMOTE] and probe.sources == []
    assert probe.start(None) is None
    assert probe.finish(None) == dict.fromkeys(FIELDS)
