"""The Python-based `openvino` backend inside a real tritonserver: parity, labels, batching, errors.

The repository holds the OpenVINO variants exactly as dnx writes them (IR + config.pbtxt with
``backend: "openvino"``) plus two tiny test models for the backend's own error paths.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dnx.exporter import openvino as ovx
from dnx.runtimes import openvino as ov_rt
from tests.exporter.test_openvino import cosine_and_max_abs, quantize_qdq
from tests.fixtures_server import _tiny_onnx, concurrent_infer, mixed_width_requests, settled

pytestmark = [pytest.mark.server, pytest.mark.slow]

TOL = 1e-5  # same OpenVINO, same IR, same fixed batch: only thread scheduling differs
TINY_NOPAD = "dnx_test_ov_nopad"  # y = 2x, [N, 4]; max_batch_size 2 without ENABLE_BATCH_PADDING
TINY_ANY = "dnx_test_ov_any"  # same graph, config accepts any width: OpenVINO rejects width != 4


def _tiny_model(repo, name, *, dims, parameters):
    from google.protobuf import text_format

    from dnx.model_repository.render import TritonConfig, parse_config, render_config

    onnx_path = repo / f".{name}.onnx"
    _tiny_onnx(onnx_path)
    ovx.IrFromOnnx(onnx_path)(repo / name / "1")
    onnx_path.unlink()
    cfg = TritonConfig(name=name, max_batch_size=2, input_name="x", output_name="y", input_dims=dims,
                       output_dims=dims, backend="openvino", label_filename=None, warmup_batch_sizes=[],
                       parameters=parameters)
    msg = parse_config(render_config(cfg))
    msg.input[0].ClearField("format")  # FORMAT_NCHW needs 3 dims; this input has 1
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(msg))


@pytest.fixture(scope="module")
def ov_repository(onnx_fp32_path, photo_array, tmp_path_factory):
    """fp32, bf16 (if the CPU has it) and int8 OpenVINO variants, laid out as dnx writes them."""
    from dnx.exporter.torch_export import imagenet_labels
    from dnx.model_repository.render import render_config
    from dnx.pipeline import openvino_entry, triton_config
    from dnx.spec import DEFAULT_MODEL

    repo = tmp_path_factory.mktemp("ovserve") / "model_repository"
    int8_onnx = quantize_qdq(onnx_fp32_path, repo.parent / "int8.onnx", np.concatenate([photo_array, photo_array[:, :, :, ::-1]]))
    labels = "\n".join(imagenet_labels()) + "\n"
    variants = {}
    for precision in ["fp32", "int8"] + (["bf16"] if ov_rt.cpu_supports_bf16() else []):
        # fp32/bf16 keep the tuned defaults (max_batch_size 1); int8 gets batches of 2 with padding
        # so the dynamic batcher and the padding path are exercised too.
        overrides = {"max_batch_size": 2} if precision == "int8" else {}
        v = ovx.openvino_variant(int8_onnx if precision == "int8" else onnx_fp32_path, precision,
                                 repo.parent / "build" / precision, **overrides)
        name = v.model_name()
        (repo / name / "1").mkdir(parents=True)
        for fname, path in v.files.items():
            shutil.move(path, repo / name / "1" / fname)
        v.files = {f: repo / name / "1" / f for f in v.files}
        (repo / name / "config.pbtxt").write_text(render_config(triton_config(openvino_entry(v, DEFAULT_MODEL), DEFAULT_MODEL)))
        (repo / name / "labels.txt").write_text(labels)
        variants[name] = v
    _tiny_model(repo, TINY_NOPAD, dims=(4,), parameters={"INFERENCE_NUM_THREADS": "1"})
    _tiny_model(repo, TINY_ANY, dims=(-1,), parameters={"INFERENCE_NUM_THREADS": "1", "ENABLE_BATCH_PADDING": "YES"})
    return repo, variants


@pytest.fixture(scope="module")
def ov_server(triton_server_factory, ov_repository, tmp_path_factory):
    repo, _ = ov_repository
    return triton_server_factory(repo, log_file=tmp_path_factory.mktemp("ovtriton") / "tritonserver.log")


def _infer(module, url, model, array, *, dtype="FP32", name="input", output="logits", class_count=0):
    client = module.InferenceServerClient(url)
    try:
        inp = module.InferInput(name, list(array.shape), dtype)
        inp.set_data_from_numpy(array)
        return client.infer(model, [inp], outputs=[module.InferRequestedOutput(output, class_count=class_count)]).as_numpy(output)
    finally:
        client.close()


def _local(v):
    """The variant run in-process as served (dnx.runtimes.openvino)."""
    return ov_rt.OpenVinoModel(v.files["model.xml"], v.parameters, v.serving.max_batch_size)


def _served(module, url, model, batch, step):
    return np.concatenate([_infer(module, url, model, batch[i:i + step]) for i in range(0, len(batch), step)])


def test_all_variants_load_with_their_configs(ov_server, ov_repository):
    import tritonclient.grpc as grpcclient

    _, variants = ov_repository
    assert set(variants) <= set(ov_server.loaded) and not ov_server.skipped
    assert {"densenet121_openvino", "densenet121_openvino_int8"} <= set(variants)
    client = grpcclient.InferenceServerClient(ov_server.grpc_url)
    for name, variant in variants.items():
        cfg = client.get_model_config(name).config
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert cfg.backend == "openvino" and cfg.max_batch_size == variant.serving.max_batch_size
        assert params == variant.parameters
        assert ("ENABLE_BATCH_PADDING" in params) == (cfg.max_batch_size > 1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_outputs_match_local_openvino_and_pass_gates(ov_server, ov_repository, photo_array, torch_reference, protocol):
    import importlib

    from dnx.spec import DEFAULT_MODEL

    module = importlib.import_module(f"tritonclient.{protocol}")
    for name, variant in ov_repository[1].items():
        served = _served(module, ov_server.urls[protocol], name, photo_array, step=1)
        local = _local(variant)(photo_array)
        assert served.shape == local.shape == (len(photo_array), 1000)
        assert np.abs(served - local).max() <= TOL, name
        cos, max_abs = cosine_and_max_abs(torch_reference, served)
        print(f"{protocol} {name}: served vs PyTorch min cosine {cos:.6f}, max abs {max_abs:.3g}")
        gate = DEFAULT_MODEL.gates[variant.precision]
        assert cos >= gate.min_cosine, name
        assert gate.max_abs is None or max_abs <= gate.max_abs, name


def test_classification_labels_come_from_the_server(ov_server, ov_repository, photo_array):
    import tritonclient.grpc as grpcclient

    from dnx.exporter.torch_export import imagenet_labels

    labels = imagenet_labels()
    name, variant = next(iter(ov_repository[1].items()))
    reply = np.concatenate([_infer(grpcclient, ov_server.grpc_url, name, photo_array[i:i + 1], class_count=5) for i in range(2)])
    local = _local(variant)(photo_array[:2])
    assert reply.shape == (2, 5)
    for row, ref in zip(reply, local):
        entries = [e.decode().split(":", 2) for e in row]
        assert [int(i) for _, i, _ in entries] == list(np.argsort(-ref)[:5])
        assert all(label == labels[int(i)] and abs(float(v) - ref[int(i)]) <= TOL for v, i, label in entries)


def _stats(url, model):
    import tritonclient.grpc as grpcclient

    m = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)["model_stats"][0]
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in m.get("batch_stats", [])}
    return int(m.get("inference_count", 0)), int(m.get("execution_count", 0)), sizes


def test_concurrent_clients_are_batched(ov_server, ov_repository, photo_array):
    name, variant = next((n, v) for n, v in ov_repository[1].items() if v.precision == "int8")
    local = _local(variant)(photo_array)
    before = settled(lambda: _stats(ov_server.grpc_url, name))
    threads_n, per_thread = 6, 8
    errors, worst = concurrent_infer(ov_server.grpc_url, name, photo_array, local, threads_n, per_thread)
    assert not errors, errors[:3]
    after = settled(lambda: _stats(ov_server.grpc_url, name))
    inferences, executions = after[0] - before[0], after[1] - before[1]
    batched = after[2].get(2, 0) - before[2].get(2, 0)
    print(f"{inferences} inferences in {executions} executions, {batched} of batch 2; worst abs error {worst:.3g}")
    assert inferences == threads_n * per_thread
    assert batched > 0 and executions < inferences, "the dynamic batcher never formed a batch of 2"
    assert worst <= TOL


def test_bad_requests_get_errors_and_model_keeps_serving(ov_server, ov_repository, photo_array):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    name, variant = next(iter(ov_repository[1].items()))
    url = ov_server.grpc_url
    too_many = variant.serving.max_batch_size + 1
    cases = {
        "shape": (np.zeros((1, 3, 200, 224), np.float32), "FP32", "unexpected shape"),
        "dtype": (np.zeros((1, 3, 224, 224), np.float64), "FP64", "FP64"),
        "batch": (np.zeros((too_many, 3, 224, 224), np.float32), "FP32", "batch-size must be <="),
    }
    for array, dtype, needle in cases.values():
        with pytest.raises(InferenceServerException, match=needle):
            _infer(grpcclient, url, name, array, dtype=dtype)
    good = _infer(grpcclient, url, name, photo_array[:1])
    assert np.abs(good - _local(variant)(photo_array[:1])).max() <= TOL


def test_without_batch_padding_only_full_batches_run(ov_server):
    """The C++ backend's documented rule: batches smaller than max_batch_size need ENABLE_BATCH_PADDING."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url = ov_server.grpc_url
    with pytest.raises(InferenceServerException, match="ENABLE_BATCH_PADDING"):
        _infer(grpcclient, url, TINY_NOPAD, np.ones((1, 4), np.float32), name="x", output="y")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(_infer(grpcclient, url, TINY_NOPAD, x, name="x", output="y"), 2 * x)


def test_backend_error_answers_only_the_bad_request(ov_server):
    """dnx_test_ov_any accepts any width in its config but the graph needs 4: OpenVINO rejects width 5."""
    results, failures = mixed_width_requests(ov_server.grpc_url, TINY_ANY)
    assert sorted(failures) == [0, 3, 6, 9] and all(TINY_ANY in f for f in failures.values())
    assert all(np.array_equal(results[i], np.full((1, 4), 2 * i, np.float32)) for i in results)


def test_reused_padded_batches_answer_each_request_with_its_own_outputs(ov_server):
    """One instance joins and pads every batch in buffers it reuses: a smaller batch after a full one,
    and concurrent single rows the batcher joins, must each get exactly 2x their own input."""
    import threading

    import tritonclient.grpc as grpcclient

    url = ov_server.grpc_url
    for rows, value in [(2, 100.0), (1, 7.0), (2, -3.0), (1, 0.5)]:
        x = value + np.arange(4 * rows, dtype=np.float32).reshape(rows, 4)
        np.testing.assert_array_equal(_infer(grpcclient, url, TINY_ANY, x, name="x", output="y"), 2 * x)
    replies, errors = {}, []

    def send(i):
        try:
            x = np.full((1, 4), float(i), np.float32)
            for _ in range(5):
                replies.setdefault(i, []).append(_infer(grpcclient, url, TINY_ANY, x, name="x", output="y"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(len(replies[i]) == 5 and all(np.array_equal(r, np.full((1, 4), 2.0 * i)) for r in replies[i]) for i in range(8))
