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
    r = CliRunner().invoke(cli, ["perf", "--url", burn_server.grpc_url, "--metrics-url", burn_server.metrics_url,
                                 "--models", BURN_MODEL, "--concurrency", "1:2",
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
    probe = CpuProbe.for_url("192.0.2.10:8001", "192.0.2.10:8002")  # TEST-NET-1: never contacted, not on this machine
    assert probe.server_pid is None and probe.notes == [REMOTE] and probe.sources == []
    assert probe.start(None) is None
    assert probe.finish(None) == dict.fromkeys(FIELDS)


def test_a_stub_replaced_within_a_level_neither_subtracts_nor_double_counts(monkeypatch):
    """A reload (dnx tune) ends one stub and starts another inside a level: per-process deltas."""
    from types import SimpleNamespace

    from dnx.ops.metrics import ProcessMemory
    from dnx.perf.sweep import cost

    # Only /proc and Triton's counters are replaced here: the situation is a timing one that a
    # real server shows only now and then (the suite's tune test met it).
    procs = {"before": [ProcessMemory(1, "tritonserver", None, 0), ProcessMemory(2, "python-stub", "m", 0)],
             "after": [ProcessMemory(1, "tritonserver", None, 0), ProcessMemory(3, "python-stub", "m", 0)]}
    cpu = {"before": {1: 10.0, 2: 50.0}, "after": {1: 10.5, 3: 2.0}}
    counts = {"before": (100, 100), "after": (200, 200)}
    state = {"now": "before"}
    monkeypatch.setattr(cost, "process_memory", lambda pid: procs[state["now"]])
    monkeypatch.setattr(cost, "cpu_seconds", lambda pid: cpu[state["now"]].get(pid))
    monkeypatch.setattr(cost, "triton_counts", lambda metrics_url, model: counts[state["now"]])
    probe = CpuProbe("127.0.0.1:8002", server_pid=1)
    mark = probe.start(SimpleNamespace(name="m", ensemble_steps=[]))
    state["now"] = "after"
    fields = probe.finish(mark)
    # tritonserver +0.5 s, the new stub 2.0 s, the gone stub nothing: 2.5 s over 100 inferences.
    assert fields["server_cpu_ms_per_inference"] == pytest.approx(25.0)


def test_a_local_servers_metrics_endpoint_is_read_off_its_command_line(burn_server):
    from dnx.perf.sweep.cost import own_metrics_url

    assert f"http://{own_metrics_url(burn_server.pid)}" == burn_server.metrics_url
    # --url alone finds it: the metrics port given (or the default 8002) is only the fallback.
    assert CpuProbe.for_url(burn_server.grpc_url, "127.0.0.1:1/metrics").metrics_url == burn_server.metrics_url
