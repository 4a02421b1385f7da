"""The Python-based `onnxruntime` backend inside a real tritonserver: parity, batching, bad requests."""

import numpy as np
import pytest

from tests.fixtures_server import TINY_MODEL, concurrent_infer, mixed_width_requests, settled


TOL = 1e-4  # same ONNX Runtime, same file: differences come only from thread scheduling


def _infer(module, url, model, array, dtype="FP32", output="logits", class_count=0):
    client = module.InferenceServerClient(url)
    try:
        inp = module.InferInput("input" if model != TINY_MODEL else "x", list(array.shape), dtype)
        inp.set_data_from_numpy(array)
        out = module.InferRequestedOutput(output, class_count=class_count)
        return client.infer(model, [inp], outputs=[out]).as_numpy(output)
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_outputs_equal_in_process_onnxruntime(triton_server, served_model, photo_inputs, reference_logits, protocol):
    import importlib

    module = importlib.import_module(f"tritonclient.{protocol}")
    url = triton_server.urls[protocol]
    served = np.concatenate([_infer(module, url, served_model, photo_inputs[i : i + 4]) for i in range(0, len(photo_inputs), 4)])
    assert served.shape == reference_logits.shape == (len(photo_inputs), 1000)
    err = np.abs(served - reference_logits).max()
    print(f"{protocol}: max abs error served vs in-process ORT = {err:.3g}")
    assert err <= TOL


def test_classification_extension_returns_server_labels(triton_server, served_model, photo_inputs, reference_logits, served_labels):
    import tritonclient.grpc as grpcclient

    reply = _infer(grpcclient, triton_server.grpc_url, served_model, photo_inputs[:3], class_count=5)
    assert reply.shape == (3, 5) and reply.dtype == object
    for row, ref in zip(reply, reference_logits[:3]):
        entries = [e.decode().split(":", 2) for e in row]
        scores = [float(v) for v, _, _ in entries]
        assert scores == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores, np.sort(ref)[::-1][:5], atol=TOL)
        for value, index, label in entries:
            assert abs(ref[int(index)] - float(value)) <= TOL
            assert label == served_labels[int(index)] and label


@pytest.mark.slow
def test_concurrent_clients_are_batched(triton_server, served_model, photo_inputs, reference_logits):
    import tritonclient.grpc as grpcclient

    def stats():
        s = grpcclient.InferenceServerClient(triton_server.grpc_url).get_inference_statistics(served_model, as_json=True)
        m = s["model_stats"][0]
        return int(m.get("inference_count", 0)), int(m.get("execution_count", 0))

    threads_n, per_thread = 8, 20
    before = settled(stats)
    errors, worst = concurrent_infer(triton_server.grpc_url, served_model, photo_inputs, reference_logits,
                                     threads_n, per_thread)
    assert not errors, errors[:3]
    inferences, executions = (a - b for a, b in zip(settled(stats), before))
    print(f"{inferences} inferences in {executions} executions; worst abs error {worst:.3g}")
    assert inferences == threads_n * per_thread
    assert executions < inferences, "the dynamic batcher never formed a batch > 1"
    assert worst <= TOL


def test_bad_requests_get_errors_and_server_keeps_serving(triton_server, serving_repository, served_model, photo_inputs, reference_logits):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from dnx.model_repository.render import parse_config

    too_many = parse_config((serving_repository / served_model / "config.pbtxt").read_text()).max_batch_size + 1
    url = triton_server.grpc_url
    cases = {
        "shape": (np.zeros((1, 3, 200, 224), np.float32), "FP32", served_model, "unexpected shape"),
        "dtype": (np.zeros((1, 3, 224, 224), np.float64), "FP64", served_model, "FP64"),
        "batch": (np.zeros((too_many, 3, 224, 224), np.float32), "FP32", served_model, "batch-size must be <="),
        "model": (photo_inputs[:1], "FP32", "no_such_model", "no_such_model"),
    }
    for array, dtype, model, needle in cases.values():
        with pytest.raises(InferenceServerException, match=needle):
            _infer(grpcclient, url, model, array, dtype=dtype)
    with pytest.raises(InferenceServerException, match="unexpected shape"):
        _infer(httpclient, triton_server.http_url, served_model, np.zeros((1, 3, 224, 200), np.float32))
    good = _infer(grpcclient, url, served_model, photo_inputs[:2])
    assert np.abs(good - reference_logits[:2]).max() <= TOL


def test_backend_error_answers_only_the_bad_request(triton_server):
    """dnx_test_tiny accepts any width in its config but the graph needs 4: ONNX Runtime rejects it."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url = triton_server.grpc_url
    with pytest.raises(InferenceServerException, match=f"{TINY_MODEL}: ONNX Runtime failed"):
        _infer(grpcclient, url, TINY_MODEL, np.ones((1, 5), np.float32), output="y")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(_infer(grpcclient, url, TINY_MODEL, x, output="y"), 2 * x)

    results, failures = mixed_width_requests(url, TINY_MODEL)
    assert sorted(failures) == [0, 3, 6, 9]
    assert all(np.array_equal(results[i], np.full((1, 4), 2 * i, np.float32)) for i in results)
