"""The bytes-in models dnx export writes: configs, the copied preprocessing code, the variant choice."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from dnx.errors import InputError
from dnx.manifest import ModelRecord
from dnx.model_repository.ensemble import (
    PREPROCESS_LIBRARY, choose_variant, render_ensemble, render_preprocess,
)
from dnx.model_repository.render import parse_config
from dnx.spec import MODELS, get_spec


def test_ensemble_config_parses_and_chains_the_steps():
    spec = get_spec("resnet50")
    cfg = parse_config(render_ensemble(spec, "resnet50_openvino_int8", 1))
    assert cfg.name == "resnet50" and cfg.platform == "ensemble" and cfg.max_batch_size == 1
    assert cfg.input[0].name == "image" and cfg.input[0].data_type == 13  # TYPE_STRING
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [
        "resnet50_preprocess", "resnet50_openvino_int8", "resnet50_softmax"]
    first, middle, last = cfg.ensemble_scheduling.step
    assert dict(first.output_map) == {"input": "preprocessed"} and dict(middle.input_map) == {"input": "preprocessed"}
    assert dict(middle.output_map) == {"logits": "logits"} and dict(last.output_map) == {"probabilities": "probabilities"}
    assert cfg.output[0].label_filename == "labels.txt" and list(cfg.output[0].dims) == [1000]


def test_preprocess_config_carries_the_spec_transform():
    spec = get_spec("convnext_tiny")
    cfg = parse_config(render_preprocess(spec, 16, instances=2))
    assert cfg.backend == "python" and list(cfg.output[0].dims) == [3, 224, 224] and list(cfg.input[0].dims) == [1]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params == {"resize": "236", "crop": "224", "interpolation": "bilinear",
                      "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
    assert cfg.instance_group[0].count == 2


def test_export_places_the_one_preprocessing_file_beside_model_py(fp32_repository):
    pre = fp32_repository / "densenet121_preprocess" / "1"
    assert (pre / "model.py").is_file()
    copied = (pre / "dnx_preprocess.py").read_bytes()
    assert hashlib.sha256(copied).digest() == hashlib.sha256(PREPROCESS_LIBRARY.read_bytes()).digest()
    assert (fp32_repository / "densenet121" / "1").is_dir()
    assert parse_config((fp32_repository / "densenet121_softmax" / "config.pbtxt").read_text()).backend == "onnxruntime"


def test_copied_preprocessing_runs_without_dnx(fp32_repository, photos):
    """The Python backend has no dnx: the copy must import and give the same array on its own."""
    from dnx.preprocess import load_image

    code = (
        "import sys, types, numpy as np\n"
        "sys.modules['dnx'] = None  # any `import dnx...` now fails, as in the NGC image\n"
        f"sys.path.insert(0, {str(fp32_repository / 'densenet121_preprocess' / '1')!r})\n"
        "import dnx_preprocess as p\n"
        "spec = types.SimpleNamespace(resize=256, crop=224, interpolation='bilinear',"
        " mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))\n"
        f"np.save(sys.argv[1], p.preprocess_bytes(open({str(photos[0])!r}, 'rb').read(), spec))\n"
        "try:\n    p.preprocess_bytes(b'', spec)\nexcept p.InputError as e:\n    print('ERR', e)\n"
    )
    out = fp32_repository.parent / "copied.npy"
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERR empty image (0 bytes)" in r.stdout
    assert np.array_equal(np.load(out), load_image(photos[0]))
    out.unlink()


def _entry(name, runtime, precision, passed=True):
    return ModelRecord(name, runtime=runtime, precision=precision, parity={"passed": passed})


def test_choose_variant():
    models = {n: _entry(n, r, p) for n, r, p in [("m_onnx", "onnxruntime", "fp32"), ("m_openvino_int8", "openvino", "int8"),
                                                ("m_openvino_bf16", "openvino", "bf16"), ("m_openvino", "openvino", "fp32")]}
    assert choose_variant(models, None) == ("m_onnx", "most accurate variant that passed its gate")
    assert choose_variant(models, "m_openvino_int8")[0] == "m_openvino_int8"
    models["m_onnx"].parity["passed"] = False
    assert choose_variant(models, None)[0] == "m_openvino"
    with pytest.raises(InputError, match="--serve-variant 'nope' was not built; choose one of: m_onnx"):
        choose_variant(models, "nope")


def test_choose_variant_takes_the_fastest_timed_on_this_cpu_among_those_that_passed():
    here = {"model": "AMD EPYC", "isa": ["avx2"]}
    models = {n: _entry(n, r, p) for n, r, p in [("m_onnx", "onnxruntime", "fp32"), ("m_openvino_int8", "openvino", "int8"),
                                                ("m_openvino_bf16", "openvino", "bf16")]}
    for name, best in (("m_onnx", 66.0), ("m_openvino_int8", 180.0), ("m_openvino_bf16", 250.0)):
        models[name].extra["speed"] = {"best": best, "cpu": here}
    models["m_openvino_bf16"].parity["passed"] = False  # fastest, but failed its gate
    assert choose_variant(models) == ("m_openvino_int8", "fastest on AMD EPYC: 180.0 img/s in-process")
    assert choose_variant(models, "m_onnx") == ("m_onnx", "--serve-variant")
    # Figures from `dnx tune` / `dnx bench` (possibly on another CPU) are not this export's timing.
    for m in models.values():
        m.extra = {"tune": {"throughput": 999.0}}
    assert choose_variant(models)[0] == "m_onnx"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_spec_names_its_bytes_path(name):
    spec = get_spec(name)
    assert (spec.ensemble_name, spec.preprocess_name, spec.softmax_name) == (name, f"{name}_preprocess", f"{name}_softmax")


def test_preprocess_config_renders_instances_and_queue_delay():
    from dnx.model_repository.ensemble import PREPROCESS_INSTANCES

    cfg = parse_config(render_preprocess(get_spec("densenet121"), 8))
    assert cfg.instance_group[0].count == PREPROCESS_INSTANCES and cfg.dynamic_batching.max_queue_delay_microseconds == 0
    cfg = parse_config(render_preprocess(get_spec("densenet121"), 8, instances=1, max_queue_delay_us=500))
    assert cfg.instance_group[0].count == 1 and cfg.dynamic_batching.max_queue_delay_microseconds == 500
    with pytest.raises(InputError, match="instances must be >= 1"):
        render_preprocess(get_spec("densenet121"), 8, instances=0)


# --------------------------------------------------------------------------- on the real server
# Issue 20's inputs through the served ensemble (tests/fixtures_server.py: the preprocess model
# waits 20 ms for company, so concurrent requests meet in one execute()).


def _grpc_infer(url: str, model: str, blobs: list[bytes], output: str):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inp = grpcclient.InferInput("image", [len(blobs), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b] for b in blobs], dtype=np.object_))
        return client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(output)], timeout=300).as_numpy(output)
    finally:
        client.close()


def _stats(url: str, model: str) -> tuple[int, int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    inf = s["inference_stats"]
    return int(inf["success"].get("count", 0)), int(inf["fail"].get("count", 0)), int(s.get("execution_count", 0))


@pytest.fixture(scope="module")
def new_bad():
    from tests.preprocess.bad_inputs import new_bad_inputs

    return new_bad_inputs()


@pytest.fixture(scope="module")
def phone_photos(photos) -> dict[str, bytes]:
    """12 MP JPEGs: three upright landscape, and one portrait stored on its side with EXIF orientation 6."""
    from dnx.photos import synthesize

    out = {f"12mp_{p.stem}.jpg": synthesize((4032, 3024), p, seed=i) for i, p in enumerate(photos[:3])}
    out["12mp_portrait_tagged.jpg"] = synthesize((3024, 4032), photos[4], orientation=6)
    return out


def test_new_bad_inputs_are_refused_one_by_one(triton_server, new_bad, photos):
    from tritonclient.utils import InferenceServerException

    url = triton_server.grpc_url
    for name, (blob, reason) in new_bad.items():
        with pytest.raises(InferenceServerException) as exc:
            _grpc_infer(url, "densenet121", [blob], "probabilities")
        assert reason in str(exc.value), (name, str(exc.value))
    # One bad image in a multi-image request names itself; the server still answers.
    with pytest.raises(InferenceServerException, match=r"image 1 of 3: unsupported format \(HEIC\)"):
        _grpc_infer(url, "densenet121", [photos[0].read_bytes(), new_bad["photo.heic"][0], photos[1].read_bytes()],
                    "probabilities")
    assert _grpc_infer(url, "densenet121", [photos[0].read_bytes()], "probabilities").shape == (1, 1000)


def test_new_bad_inputs_mixed_with_good_ones_in_one_batch(triton_server, new_bad, phone_photos, photos):
    """Concurrent requests share preprocess batches: each bad one fails alone, every good one is answered."""
    import threading

    url = triton_server.grpc_url
    good = {p.name: p.read_bytes() for p in photos[:3]} | {"12mp.jpg": next(iter(phone_photos.values()))}
    requests = [(n, b, None) for n, b in good.items()] + [(n, b, r) for n, (b, r) in new_bad.items()]
    answers: dict = {}
    barrier = threading.Barrier(len(requests))

    def send(name, blob):
        barrier.wait(timeout=120)
        try:
            answers[name] = _grpc_infer(url, "densenet121_preprocess", [blob], "input")
        except Exception as exc:  # noqa: BLE001 - checked below
            answers[name] = exc

    before = _stats(url, "densenet121_preprocess")
    threads = [threading.Thread(target=send, args=(n, b)) for n, b, _ in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    from dnx.preprocess import preprocess_bytes

    for name, blob, reason in requests:
        got = answers[name]
        if reason is None:
            assert isinstance(got, np.ndarray), (name, got)
            assert np.abs(got[0] - preprocess_bytes(blob)).max() <= 1e-6, name
        else:
            assert isinstance(got, Exception) and reason in str(got), (name, got)
    # (Triton counts a Python-backend response that carries an error as a success.)
    ok, failed, executions = (a - b for a, b in zip(_stats(url, "densenet121_preprocess"), before))
    assert ok + failed == len(requests)
    assert executions < len(requests), "the requests never shared a batch"


def test_12_mp_photos_through_the_server_equal_the_reference_within_tolerance(triton_server, phone_photos, serving_repository):
    """The served preprocess model's tensor vs torchvision on the full decode; the ensemble's answer vs local."""
    import onnxruntime as ort

    from dnx.spec import DEFAULT_MODEL
    from tests.preprocess.reference import assert_within_tolerance, centred_cosines, reference

    url = triton_server.grpc_url
    names = list(phone_photos)
    served = np.concatenate([_grpc_infer(url, "densenet121_preprocess", [phone_photos[n]], "input") for n in names])
    refs = np.stack([reference(phone_photos[n], DEFAULT_MODEL) for n in names])
    for name, got, ref in zip(names, served, refs):
        assert_within_tolerance(got, ref, name)
    probs = np.concatenate([_grpc_infer(url, "densenet121", [phone_photos[n]], "probabilities") for n in names])
    sess = ort.InferenceSession(str(serving_repository / "densenet121_onnx" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": refs})[0]
    local = np.exp(logits - logits.max(axis=1, keepdims=True))
    local /= local.sum(axis=1, keepdims=True)
    # Log-probabilities are logits less a constant per image: centred, they compare like logits.
    log_served, log_local = np.log(probs.astype(np.float64)), np.log(local.astype(np.float64))
    log_served -= log_served.mean(axis=1, keepdims=True)
    log_local -= log_local.mean(axis=1, keepdims=True)
    cos = centred_cosines(log_served, log_local)
    assert cos.min() >= 0.9999, dict(zip(names, cos))
    # The tagged portrait is classified as the upright photograph, not as the picture on its side.
    side = sess.run(None, {"input": reference(phone_photos[names[-1]], DEFAULT_MODEL, orient=False)[None]})[0][0]
    mean = log_local.mean(axis=0)

    def cosine(a, b):
        a, b = a - mean, b - mean
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(log_served[-1], log_local[-1]) >= 0.9999 and cosine(side - side.mean(), log_local[-1]) < 0.99
