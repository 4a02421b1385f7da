"""The bytes-in path on the real local server: ``densenet121`` ensemble = preprocess -> variant -> softmax.

Every expected value is computed here, in-process, from the same photographs through
``dnx.preprocess`` and ONNX Runtime on the served model file, then softmax.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_server import ENSEMBLE_MODEL, PREPROCESS_MODEL

pytestmark = pytest.mark.server


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def session(serving_repository, served_model):
    import onnxruntime as ort

    return ort.InferenceSession(str(serving_repository / served_model / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])


def local_probabilities(session, blobs: list[bytes]) -> np.ndarray:
    from dnx.preprocess import preprocess_bytes

    batch = np.stack([preprocess_bytes(b) for b in blobs])
    return softmax(session.run(None, {"input": batch})[0])


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def odd_images(photo_paths) -> dict[str, bytes]:
    """Valid images in the modes the issue names, made from a real photograph."""
    with Image.open(photo_paths[1]) as img:
        rgb = img.convert("RGB")
    gray16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    return {
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "gray.png": _encode(rgb.convert("L"), "PNG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "gray16.png": _encode(Image.fromarray(gray16), "PNG"),
        "photo.webp": _encode(rgb, "WEBP", quality=90),
    }


@pytest.fixture(scope="module")
def bad_images(photo_paths) -> dict[str, tuple[bytes, str]]:
    """Undecodable inputs and the reason each must get back from the server."""
    jpeg = photo_paths[3].read_bytes()  # rocket.jpg
    assert jpeg[:2] == b"\xff\xd8"
    corrupt = jpeg[:600] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)) + jpeg[-2:]
    return {
        "empty": (b"", "empty image (0 bytes)"),
        "text": (b"this is a text file, not an image\n", "not a decodable image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "corrupt or truncated image"),
        "corrupt.jpg": (corrupt, "corrupt or truncated image"),
        "strip.png": (_encode(Image.new("RGB", (20000, 30), (200, 10, 10)), "PNG"), "20000x30, more than 100:1"),
    }


def _infer(client_mod, url: str, blobs: list[bytes], top_k: int = 0):
    client = client_mod.InferenceServerClient(url)
    try:
        inp = client_mod.InferInput("image", [len(blobs), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b] for b in blobs], dtype=np.object_))
        out = client_mod.InferRequestedOutput("probabilities", class_count=top_k)
        return client.infer(ENSEMBLE_MODEL, [inp], outputs=[out]).as_numpy("probabilities")
    finally:
        client.close()


def test_ensemble_config_loads_on_the_local_server(triton_server, served_model):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        assert client.is_model_ready(ENSEMBLE_MODEL) and client.is_model_ready(PREPROCESS_MODEL)
        cfg = client.get_model_config(ENSEMBLE_MODEL, as_json=True)["config"]
    finally:
        client.close()
    assert cfg["platform"] == "ensemble" and cfg["input"][0]["data_type"] == "TYPE_STRING"
    assert cfg["output"][0]["name"] == "probabilities" and cfg["output"][0]["label_filename"] == "labels.txt"
    steps = [s["model_name"] for s in cfg["ensemble_scheduling"]["step"]]
    assert steps == [PREPROCESS_MODEL, served_model, "densenet121_softmax"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bytes_in_probabilities_equal_local_reference(triton_server, session, photo_paths, reference_logits, protocol):
    import importlib

    mod = importlib.import_module(f"tritonclient.{protocol}")
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    blobs = [p.read_bytes() for p in photo_paths[:4]]
    got = _infer(mod, url, blobs)
    assert got.shape == (4, 1000) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    # The server decodes with dnx.preprocess, so it equals the client-side preprocessing reference...
    assert np.abs(got - softmax(reference_logits[:4])).max() <= 1e-4
    assert np.abs(got - local_probabilities(session, blobs)).max() <= 1e-4
    # ...and the classification extension labels the probabilities.
    top = _infer(mod, url, blobs[:1], top_k=3)[0]
    entries = [(e.decode() if isinstance(e, bytes) else e).split(":", 2) for e in top]
    best = np.argsort(got[0])[::-1][:3]
    assert [int(i) for _, i, _ in entries] == best.tolist()
    np.testing.assert_allclose([float(v) for v, _, _ in entries], got[0][best], rtol=1e-4, atol=1e-6)


def test_valid_odd_formats_are_answered_correctly(triton_server, session, odd_images):
    import tritonclient.grpc as grpcclient

    for name, blob in odd_images.items():
        got = _infer(grpcclient, triton_server.grpc_url, [blob])
        assert np.abs(got - local_probabilities(session, [blob])).max() <= 1e-4, name
    # 16-bit grayscale is scaled to 8 bits, not clipped to white: it matches the 8-bit grayscale image.
    from dnx.preprocess import preprocess_bytes

    a, b = preprocess_bytes(odd_images["gray16.png"]), preprocess_bytes(odd_images["gray.png"])
    assert np.abs(a - b).max() < 0.05 and a.std() > 0.1


def test_each_bad_image_gets_its_own_error(triton_server, bad_images, photo_paths, reference_logits):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    for name, (blob, reason) in bad_images.items():
        with pytest.raises(InferenceServerException, match=".") as exc:
            _infer(grpcclient, triton_server.grpc_url, [blob])
        assert reason in str(exc.value), (name, str(exc.value))
    # The server is still serving.
    got = _infer(grpcclient, triton_server.grpc_url, [photo_paths[0].read_bytes()])
    assert np.abs(got - softmax(reference_logits[:1])).max() <= 1e-4


def test_bad_images_mixed_with_good_ones_in_one_batch(triton_server, bad_images, odd_images, photo_paths, session):
    """Concurrent requests meet in one preprocess batch: each bad one fails alone, the rest are answered."""
    import tritonclient.grpc as grpcclient

    stats_before = _preprocess_stats(triton_server.grpc_url)
    good = {p.name: p.read_bytes() for p in photo_paths[:4]} | odd_images
    requests = [(n, b, None) for n, b in good.items()] + [(n, b, r) for n, (b, r) in bad_images.items()]
    answers: dict[str, object] = {}
    barrier = threading.Barrier(len(requests))

    def send(name, blob):
        barrier.wait(timeout=60)
        try:
            answers[name] = _infer(grpcclient, triton_server.grpc_url, [blob])
        except Exception as exc:  # noqa: BLE001 - checked below
            answers[name] = exc

    threads = [threading.Thread(target=send, args=(n, b)) for n, b, _ in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for name, blob, reason in requests:
        got = answers[name]
        if reason is None:
            assert isinstance(got, np.ndarray), (name, got)
            assert np.abs(got - local_probabilities(session, [blob])).max() <= 1e-4, name
        else:
            assert isinstance(got, Exception) and reason in str(got), (name, got)
    count, executions = (a - b for a, b in zip(_preprocess_stats(triton_server.grpc_url), stats_before))
    assert count == len(requests) and executions < count, "the requests were never batched together"


def _preprocess_stats(url: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        s = client.get_inference_statistics(PREPROCESS_MODEL, as_json=True)["model_stats"][0]
    finally:
        client.close()
    ok_fail = s["inference_stats"]
    requests = int(ok_fail["success"].get("count", 0)) + int(ok_fail["fail"].get("count", 0))
    return requests, int(s.get("execution_count", 0))


def test_one_request_with_a_bad_image_names_it(triton_server, bad_images, photo_paths):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match=r"image 1 of 2: not a decodable image"):
        _infer(grpcclient, triton_server.grpc_url, [photo_paths[0].read_bytes(), bad_images["text"][0]])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_images_are_client_errors_naming_every_bad_index(triton_server, bad_images, photo_paths, protocol):
    """HTTP 400 and gRPC INVALID_ARGUMENT (not 500 / INTERNAL), with every bad image of the request named."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    mod, url = (httpclient, triton_server.http_url) if protocol == "http" else (grpcclient, triton_server.grpc_url)
    good = photo_paths[0].read_bytes()
    blobs = [bad_images["empty"][0], good, bad_images["truncated.jpg"][0], bad_images["text"][0], good]
    with pytest.raises(InferenceServerException) as exc:
        _infer(mod, url, blobs)
    status = str(exc.value.status())
    assert status == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"), (status, str(exc.value))
    message = str(exc.value)
    for i, key in ((0, "empty"), (2, "truncated.jpg"), (3, "text")):
        assert f"image {i} of 5: {bad_images[key][1]}" in message, message
    assert "image 1 of 5" not in message and "image 4 of 5" not in message
    # A single bad image is the client's error too.
    with pytest.raises(InferenceServerException) as one:
        _infer(mod, url, [bad_images["strip.png"][0]])
    assert str(one.value.status()) == status and bad_images["strip.png"][1] in str(one.value)
