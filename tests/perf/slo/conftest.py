"""A Python-backend model with a fixed service time, served by a real tritonserver.

``dnx_test_sleep`` sleeps ``SERVICE_MS`` per request and answers ``y = x``: one instance, no
batching (max_batch_size 0, no dynamic batcher), so the server is an M/D/1 queue: Poisson
arrivals (LoadGen), one server, a deterministic service time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SLEEP_MODEL = "dnx_test_sleep"
SERVICE_MS = 20.0

MODEL_PY = '''
import time

import numpy as np
import triton_python_backend_utils as pb_utils

SERVICE_S = {service_s}


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            start = time.perf_counter()
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            # Busy-wait the last millisecond: time.sleep alone overshoots by the scheduler's slack.
            remaining = SERVICE_S - (time.perf_counter() - start)
            if remaining > 0.002:
                time.sleep(remaining - 0.001)
            while time.perf_counter() - start < SERVICE_S:
                pass
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x.astype(np.float32))]))
        return out
'''


def write_sleep_model(repo: Path, name: str = SLEEP_MODEL, service_ms: float = SERVICE_MS) -> None:
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "1" / "model.py").write_text(MODEL_PY.format(service_s=service_ms / 1000.0))
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )


@pytest.fixture(scope="session")
def sleep_repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("slo") / "model_repository"
    write_sleep_model(repo)
    return repo


@pytest.fixture(scope="session")
def sleep_server(triton_server_factory, sleep_repository, tmp_path_factory):
    return triton_server_factory(sleep_repository, log_file=tmp_path_factory.mktemp("slo-triton") / "tritonserver.log")
