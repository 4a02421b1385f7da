"""Pytest plugin: real tritonserver instances for the test session (local mode, free ports).

Fixtures
--------
``triton_server_factory``  (session) ``factory(repository, **TritonServer kwargs) -> TritonServer``:
    starts a local server on free 127.0.0.1 ports, once per (repository, kwargs); every server
    it started is stopped at the end of the session.
``serving_repository``  (session) a copy of ``fp32_repository`` (model files hard-linked; it holds
    the ``densenet121`` ensemble, ``densenet121_preprocess`` (20 ms queue delay here, so
    concurrent image requests share a batch) and ``densenet121_softmax`` too) plus test-only extras:
    ``densenet121_onnx`` gets a 5 ms ``max_queue_delay`` so the dynamic
    batcher forms batches under concurrent load, ``dnx_test_tiny`` (a 4-wide ONNX model with a
    variable-size config, for errors raised inside the backend) and ``dnx_test_plan``
    (a TensorRT plan that local mode must skip).
``triton_server``  (session) the server on ``serving_repository``.
``served_model``  the name of the DenseNet-121 ONNX model it serves.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SERVED_MODEL = "densenet121_onnx"
ENSEMBLE_MODEL = "densenet121"
PREPROCESS_MODEL = "densenet121_preprocess"
SOFTMAX_MODEL = "densenet121_softmax"
TINY_MODEL = "dnx_test_tiny"
PLAN_MODEL = "dnx_test_plan"


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst``, hard-linking large model files (small files are edited in place)."""

    def link(s, d):
        if os.path.getsize(s) < (1 << 20):
            return shutil.copy2(s, d)
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def _tiny_onnx(path: Path) -> None:
    """y = 2 * x for x of shape [N, 4]."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "tiny", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_test_models(repo: Path) -> None:
    """Add the tiny ONNX model and a (fake) TensorRT plan to ``repo``."""
    from dnx.model_repository.render import TritonConfig, render_config

    _tiny_onnx(repo / TINY_MODEL / "1" / "model.onnx")
    # Written by hand: dnx's template is for image models (FORMAT_NCHW), this one is not.
    (repo / TINY_MODEL / "config.pbtxt").write_text(
        f'name: "{TINY_MODEL}"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        'parameters: { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    plan = TritonConfig(
        name=PLAN_MODEL, max_batch_size=8, input_name="input", output_name="logits", input_dims=(3, 224, 224),
        output_dims=(1000,), platform="tensorrt_plan", instance_kind="KIND_GPU", warmup_batch_sizes=[],
    )
    (repo / PLAN_MODEL / "1").mkdir(parents=True)
    (repo / PLAN_MODEL / "1" / "model.plan").write_bytes(b"not a real engine: TensorRT cannot run here")
    (repo / PLAN_MODEL / "config.pbtxt").write_text(render_config(plan))


def set_queue_delay(config_path: Path, microseconds: int) -> None:
    """Rewrite one config's ``dynamic_batching.max_queue_delay_microseconds``."""
    from google.protobuf import text_format

    from dnx.model_repository.render import parse_config

    msg = parse_config(config_path.read_text())
    msg.dynamic_batching.max_queue_delay_microseconds = microseconds
    config_path.write_text(text_format.MessageToString(msg))


@pytest.fixture(scope="session")
def triton_server_factory():
    from dnx.serving.server import TritonServer

    started: dict = {}

    def factory(repository, **kwargs) -> TritonServer:
        key = (str(repository), tuple(sorted(kwargs.items())))
        if key not in started or not started[key].running:
            kwargs = {"grpc_port": 0, "http_port": 0, "metrics_port": 0, "ready_timeout": 300, **kwargs}
            started[key] = TritonServer(repository, mode="local", **kwargs).start()
        return started[key]

    yield factory
    # All at once: each waits seconds for its models' stubs to stop, and they share nothing.
    with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
        list(pool.map(lambda server: server.stop(), started.values()))


@pytest.fixture(scope="session")
def serving_repository(fp32_repository, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("serving") / "model_repository"
    _link_tree(fp32_repository, repo)
    set_queue_delay(repo / SERVED_MODEL / "config.pbtxt", 5000)
    # Concurrent image requests then meet in one execute() of the preprocess model, so the
    # bad-image tests show that one undecodable image fails only its own request.
    set_queue_delay(repo / PREPROCESS_MODEL / "config.pbtxt", 20000)
    add_test_models(repo)
    return repo


@pytest.fixture(scope="session")
def triton_server(triton_server_factory, serving_repository, tmp_path_factory):
    return triton_server_factory(serving_repository, log_file=tmp_path_factory.mktemp("triton") / "tritonserver.log")


@pytest.fixture(scope="session")
def served_model() -> str:
    return SERVED_MODEL


def settled(read, interval_s: float = 0.2, tries: int = 25):
    """``read()`` (a server's statistics) once two reads ``interval_s`` apart agree.

    Triton counts a request just after its response is sent, so a read right after a test's last
    reply may miss it, or (the read before the next test) count it late: seen as 163 inferences
    for 160 requests, the previous test's 3 landing in the window.
    """
    import time

    prev = read()
    for _ in range(tries):
        time.sleep(interval_s)
        now = read()
        if now == prev:
            return now
        prev = now
    return prev


def concurrent_infer(url: str, model: str, inputs, expected, threads: int, per_thread: int) -> tuple[list[str], float]:
    """``threads`` gRPC clients each send ``per_thread`` batch-1 requests of ``inputs`` (cycled).

    Returns the errors seen and the worst absolute difference of any reply from ``expected``
    (the logits of the same rows of ``inputs``), so callers can assert contents, not just status.
    """
    import threading

    import numpy as np
    import tritonclient.grpc as grpcclient

    errors, worst = [], [0.0]

    def worker(t):
        client = grpcclient.InferenceServerClient(url)
        try:
            for k in range(per_thread):
                i = (t + k) % len(inputs)
                inp = grpcclient.InferInput("input", [1, *inputs.shape[1:]], "FP32")
                inp.set_data_from_numpy(np.ascontiguousarray(inputs[i : i + 1]))
                out = client.infer(model, [inp]).as_numpy("logits")
                worst[0] = max(worst[0], float(np.abs(out[0] - expected[i]).max()))
        except Exception as exc:  # noqa: BLE001 - collected and reported by the caller
            errors.append(repr(exc))
        finally:
            client.close()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    return errors, worst[0]


def mixed_width_requests(url: str, model: str, requests: int = 12) -> tuple[dict, dict]:
    """Concurrent gRPC requests to a tiny ``x`` -> ``y`` (= 2x) model whose graph needs width 4.

    Every third request (i = 0, 3, 6, ...) has width 5 and must fail alone. Returns
    ``(results, failures)``: request index -> output array / error text.
    """
    import threading

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    results, failures = {}, {}

    def send(i, width):
        client = grpcclient.InferenceServerClient(url)
        try:
            inp = grpcclient.InferInput("x", [1, width], "FP32")
            inp.set_data_from_numpy(np.full((1, width), i, np.float32))
            results[i] = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("y")]).as_numpy("y")
        except InferenceServerException as exc:
            failures[i] = str(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i, 5 if i % 3 == 0 else 4)) for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, failures
