"""Query a running Triton server over gRPC or HTTP: top-k labels or raw logits.

Labels come from the *server* through Triton's classification extension (the model's
``label_filename``), not from a local file. Preprocessing is :func:`dnx.preprocess.load_image`,
identical to torchvision's ImageNet transform.

Example::

    from dnx.serving.client import classify
    for r in classify(["cat.jpg", "mug.png"], url="127.0.0.1:8001", top_k=5):
        print(r.path, r.error or r.predictions[0].label)
"""

from __future__ import annotations

import queue

import numpy as np

from dnx._lazy import lazy_import
from dnx.errors import InputError, ServerError
from dnx.preprocess import find_images, load_image
from dnx.serving.answers import ImageResult, Prediction, parse_classification
from dnx.spec import DEFAULT_MODEL, spec_for_model

PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
DEFAULT_MODEL_NAME = DEFAULT_MODEL.model_name("onnxruntime", "fp32")
DEFAULT_ENSEMBLE_NAME = DEFAULT_MODEL.ensemble_name


# Seconds per call. DenseNet-121 takes ~15 ms per image on 2 CPU cores, a batch of 16 well under
# a second; 60 s leaves room for a loaded CPU server and a first request that warms a model up.
DEFAULT_TIMEOUT_S = 60.0
# Batches in flight with async_: memory stays bounded by this many batches, not by the folder.
ASYNC_WINDOW = 4


class TritonClient:
    """A connection to one model on one server; checks that both are up before use.

    Every call gives up after ``timeout`` seconds. Raises :class:`ServerError` (one line) when
    the server is down, does not answer in time, or the model is not ready.
    """

    def __init__(self, url: str | None = None, model: str = DEFAULT_MODEL_NAME, protocol: str = "grpc",
                 concurrency: int = ASYNC_WINDOW, timeout: float = DEFAULT_TIMEOUT_S):
        if protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {protocol!r}; choose grpc or http")
        if timeout <= 0:
            raise InputError(f"--timeout must be more than 0 seconds (got {timeout:g})")
        self.timeout_s = float(timeout)
        self.protocol = protocol
        self.url = (url or DEFAULT_URLS[protocol]).split("://", 1)[-1]
        self.model = model
        self.tc = lazy_import(f"tritonclient.{protocol}")
        self.utils = lazy_import("tritonclient.utils")
        self.error_type = self.utils.InferenceServerException
        try:
            if protocol == "grpc":
                self.client = self.tc.InferenceServerClient(self.url)
            else:
                self.client = self.tc.InferenceServerClient(self.url, concurrency=concurrency,
                                                            connection_timeout=min(10.0, self.timeout_s),
                                                            network_timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - bad URLs raise many types
            raise ServerError(f"cannot connect to Triton at {self.url!r} ({_short(exc)}); pass --url host:port") from None
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _kw(self, **kw) -> dict:
        """Keyword arguments for a call: JSON replies and the timeout (gRPC takes it per call, HTTP per client)."""
        if self.protocol == "grpc":
            kw["client_timeout"] = self.timeout_s
        return kw

    def _call(self, what: str, fn, *args, **kw):
        """``fn(*args, **kw)``; any failure becomes one :class:`ServerError` line naming ``what``."""
        try:
            return fn(*args, **self._kw(**kw))
        except Exception as exc:  # noqa: BLE001 - connection, timeout and protocol errors differ by client
            if _timed_out(exc):
                raise ServerError(f"cannot {what} at {self.url}: no answer within {self.timeout_s:g}s; "
                                  "check the server (and its log), or raise --timeout") from None
            raise ServerError(f"cannot {what} at {self.url} over {self.protocol} ({_short(exc)}); "
                              "start it with `dnx serve` (or `make serve`) or pass --url") from None

    def _check(self) -> None:
        live = self._call("reach Triton", self.client.is_server_live)
        if not live:
            raise ServerError(f"Triton at {self.url} is not live; start it with `dnx serve` (or `make serve`) or pass --url")
        ready = self._call(f"query model {self.model!r}", self.client.is_model_ready, self.model)
        if not ready:
            raise ServerError(
                f"model {self.model!r} is not ready on {self.url} (ready: {', '.join(self.ready_models()) or 'none'}); "
                "pass --model with a ready one or check the server log"
            )
        json_kw = {"as_json": True} if self.protocol == "grpc" else {}
        config = self._call(f"read the config of {self.model!r}", self.client.get_model_config, self.model, **json_kw)
        config = config.get("config", config)
        try:
            self.max_batch_size = int(config.get("max_batch_size", 0))
            self.input_name = config["input"][0]["name"]
            # tritonclient spells the config's TYPE_STRING "BYTES" (the ensemble's encoded images).
            dtype = config["input"][0].get("data_type", "TYPE_FP32").replace("TYPE_", "")
            self.input_dtype = "BYTES" if dtype == "STRING" else dtype
            self.output_name = config["output"][0]["name"]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ServerError(f"the config of {self.model!r} on {self.url} has no usable input/output "
                              f"({exc.__class__.__name__}: {exc}); check its config.pbtxt") from None

    def ready_models(self) -> list[str]:
        """Names of the models the server reports READY."""
        json_kw = {"as_json": True} if self.protocol == "grpc" else {}
        index = self._call("list the models", self.client.get_model_repository_index, **json_kw)
        models = index.get("models", []) if isinstance(index, dict) else index
        return sorted(m["name"] for m in models if m.get("state") == "READY")

    def _request(self, batch: np.ndarray, top_k: int | None):
        inp = self.tc.InferInput(self.input_name, list(batch.shape), self.input_dtype)
        inp.set_data_from_numpy(np.ascontiguousarray(batch, dtype=self.utils.triton_to_np_dtype(self.input_dtype)))
        out = self.tc.InferRequestedOutput(self.output_name, class_count=top_k or 0)
        return [inp], [out]

    def infer(self, batches, top_k: int | None = None, async_: bool = False) -> list:
        """Send each batch; return per batch either the output array or the server's error (an exception)."""
        return list(self.stream(batches, top_k, async_))

    def stream(self, batches, top_k: int | None = None, async_: bool = False, window: int = ASYNC_WINDOW):
        """Send the batches of an iterable one by one, yielding each answer (array or server error) in order.

        Batches are taken from ``batches`` only when they can be sent: synchronously one at a
        time, with ``async_`` at most ``window`` in flight. A request that gets no answer
        within the timeout raises :class:`ServerError`.
        """
        if not async_:
            for batch in batches:
                yield self._infer_one(batch, top_k)
            return
        import collections

        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append(self._send(batch, top_k))
            if len(pending) >= max(1, window):
                yield self._receive(pending.popleft())
        while pending:
            yield self._receive(pending.popleft())

    def _infer_one(self, batch: np.ndarray, top_k: int | None):
        inputs, outputs = self._request(batch, top_k)
        try:
            return self.client.infer(self.model, inputs, outputs=outputs, **self._kw()).as_numpy(self.output_name)
        except self.error_type as exc:
            if _timed_out(exc):
                raise ServerError(f"no answer from Triton at {self.url} within {self.timeout_s:g}s for a batch of "
                                  f"{len(batch)}; check the server (and its log), or raise --timeout") from None
            if _unavailable(exc):
                raise ServerError(f"lost the connection to Triton at {self.url} ({_short(exc)}); check that the "
                                  "server still runs (its log says why it stopped)") from None
            return exc

    def _send(self, batch: np.ndarray, top_k: int | None):
        inputs, outputs = self._request(batch, top_k)
        if self.protocol == "http":
            return self.client.async_infer(self.model, inputs, outputs=outputs)
        box: queue.Queue = queue.Queue(maxsize=1)
        # tritonclient calls back with keyword arguments result= and error=.
        self.client.async_infer(self.model, inputs, callback=lambda result, error: box.put((result, error)),
                                outputs=outputs, client_timeout=self.timeout_s)
        return box

    def _receive(self, handle):
        try:
            if self.protocol == "http":
                try:
                    return handle.get_result(block=True, timeout=self.timeout_s).as_numpy(self.output_name)
                except self.error_type as exc:
                    if _timed_out(exc) or _unavailable(exc):
                        raise
                    return exc
            try:
                result, error = handle.get(timeout=self.timeout_s + 5)
            except queue.Empty:
                raise ServerError(f"no answer from {self.url} within {self.timeout_s:g}s; check the server log "
                                  "or raise --timeout") from None
            if error is not None and (_timed_out(error) or _unavailable(error)):
                raise error
            return error if error is not None else result.as_numpy(self.output_name)
        except self.error_type as exc:
            raise ServerError(f"no usable answer from Triton at {self.url} ({_short(exc)}); check that the server "
                              "still runs, or raise --timeout") from None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _status_text(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    try:
        status = status() if callable(status) else status
    except Exception:  # noqa: BLE001 - only used to classify the error
        status = None
    return f"{status or ''} {exc}".lower()


def _timed_out(exc: BaseException) -> bool:
    text = _status_text(exc)
    return "deadline" in text or "timed out" in text or "timeout" in text


def _unavailable(exc: BaseException) -> bool:
    text = _status_text(exc)
    return "unavailable" in text or "connection refused" in text or "socket closed" in text or "failed to connect" in text


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:200]


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _image_paths(images, top_k: int, batch_size: int) -> list:
    """The image files named by ``images`` (files or folders), after checking the request flags."""
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1 (got {top_k})")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1 (got {batch_size})")
    paths = find_images(images)
    if not paths:
        raise InputError(f"no image files found in {', '.join(map(str, images)) or 'the arguments'}; "
                         "pass JPEG/PNG files or folders with them")
    return paths


def classify(
    images,
    *,
    url: str | None = None,
    model: str = DEFAULT_MODEL_NAME,
    protocol: str = "grpc",
    top_k: int = 5,
    batch_size: int = 8,
    async_: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[ImageResult]:
    """Classify image files (or folders of them) on a Triton server; one :class:`ImageResult` per file.

    ``top_k`` labels per image come from the server's classification extension. Files that
    cannot be read get an ``error`` and the others are still answered; batches larger than the
    model's ``max_batch_size`` are split. Images are decoded batch by batch as they are sent,
    so memory is bounded by the batch (``async_``: by the few batches in flight), not by the
    folder. Every call gives up after ``timeout`` seconds. Raises :class:`ServerError` when
    the server is down, stops answering, or the model is not ready.
    """
    paths = _image_paths(images, top_k, batch_size)
    results = [ImageResult(str(p)) for p in paths]
    spec = spec_for_model(model)  # resnet50_onnx is preprocessed as resnet50's weights expect
    with TritonClient(url, model, protocol, timeout=timeout) as client:
        size = min(batch_size, client.max_batch_size) if client.max_batch_size else 1
        sent: list[list[int]] = []  # indices of the images in each batch, in sending order

        def batches():
            rows, arrays = [], []
            for i, p in enumerate(paths):
                try:
                    arrays.append(load_image(p, spec))
                    rows.append(i)
                except InputError as exc:
                    results[i].error = str(exc)
                if len(rows) == size or (i == len(paths) - 1 and rows):
                    sent.append(rows)
                    yield np.stack(arrays)
                    rows, arrays = [], []

        for k, answer in enumerate(client.stream(batches(), top_k=top_k, async_=async_)):
            for row, i in enumerate(sent[k]):
                if isinstance(answer, Exception):
                    results[i].error = f"{paths[i]}: server error: {_short(answer)}"
                else:
                    results[i].predictions = [parse_classification(e) for e in np.atleast_1d(answer[row])]
    return results


def read_encoded(paths) -> tuple[list[bytes | None], list[str | None]]:
    """File contents for the bytes-in path, with a one-line error per file that cannot be read."""
    data, errors = [], []
    for p in paths:
        try:
            blob = open(p, "rb").read()
            data.append(blob)
            errors.append(None if blob else f"{p}: empty file; pass a JPEG, PNG or WebP image")
        except FileNotFoundError:
            data.append(None)
            errors.append(f"{p}: no such file; check the path")
        except IsADirectoryError:
            data.append(None)
            errors.append(f"{p}: is a folder; pass image files or use a folder argument")
        except OSError as exc:
            data.append(None)
            errors.append(f"{p}: cannot read it ({exc.strerror}); check its permissions")
    return data, errors


def _bytes_batch(blobs: list[bytes]) -> np.ndarray:
    return np.array([[b] for b in blobs], dtype=np.object_)


def classify_bytes(
    images,
    *,
    url: str | None = None,
    model: str = DEFAULT_ENSEMBLE_NAME,
    protocol: str = "grpc",
    top_k: int = 5,
    batch_size: int = 8,
    async_: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[ImageResult]:
    """Classify image files by sending their encoded bytes to an ensemble (``dnx export`` writes ``<model>``).

    The server decodes and preprocesses (``<model>_preprocess``) and answers probabilities, so
    ``Prediction.score`` is a probability in [0, 1]. A batch the server rejects (one undecodable
    image fails its whole request) is resent one image per request, so every image gets its own
    answer or its own error. Raises :class:`ServerError` when the server or model is not there.
    """
    paths = _image_paths(images, top_k, batch_size)
    results = [ImageResult(str(p)) for p in paths]
    blobs, errors = read_encoded(paths)
    good = [i for i, e in enumerate(errors) if e is None]
    for i, e in enumerate(errors):
        results[i].error = e
    if not good:
        return results
    with TritonClient(url, model, protocol, timeout=timeout) as client:
        if client.input_dtype != "BYTES":
            raise InputError(f"model {model!r} takes {client.input_dtype} tensors, not encoded images; pass the ensemble "
                             "(the model's own name, e.g. densenet121) or use --client-preprocess")
        size = min(batch_size, client.max_batch_size) if client.max_batch_size else 1
        slices = _chunks(len(good), size)
        answers = client.infer([_bytes_batch([blobs[i] for i in good[s]]) for s in slices], top_k=top_k, async_=async_)
        for s, answer in zip(slices, answers):
            idx = good[s]
            if isinstance(answer, Exception) and len(idx) > 1:  # find which image failed, answer the others
                singles = client.infer([_bytes_batch([blobs[i]]) for i in idx], top_k=top_k, async_=async_)
                answer = [a if isinstance(a, Exception) else a[0] for a in singles]
            for row, i in enumerate(idx):
                got = answer if isinstance(answer, Exception) else answer[row]
                if isinstance(got, Exception):
                    results[i].error = f"{paths[i]}: server error: {_server_reason(got)}"
                else:
                    results[i].predictions = [parse_classification(e) for e in np.atleast_1d(got)]
    return results


def infer_encoded(
    blobs: list[bytes],
    *,
    url: str | None = None,
    model: str = DEFAULT_ENSEMBLE_NAME,
    protocol: str = "grpc",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """The ensemble's full output (probabilities) for encoded images, split to its ``max_batch_size``.

    For served-parity checks. Raises :class:`ServerError` on any server-side failure.
    """
    with TritonClient(url, model, protocol, timeout=timeout) as client:
        size = client.max_batch_size or 1
        slices = _chunks(len(blobs), size)
        answers = client.infer([_bytes_batch(blobs[s]) for s in slices])
    errors = [a for a in answers if isinstance(a, Exception)]
    if errors:
        raise ServerError(f"model {model!r} at {client.url} failed: {_server_reason(errors[0])}; check the server log")
    return np.concatenate(answers)


def _server_reason(exc: Exception) -> str:
    text = _short(exc)
    # "[StatusCode.INTERNAL] in ensemble 'densenet121', not a decodable image ..." -> the reason only
    return text.split("', ", 1)[1] if text.count("in ensemble '") and "', " in text else text


def infer_logits(
    batch: np.ndarray,
    *,
    url: str | None = None,
    model: str = DEFAULT_MODEL_NAME,
    protocol: str = "grpc",
    batch_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """Raw model outputs for a float32 NCHW ``batch``, split to the model's ``max_batch_size``.

    For served-parity checks against in-process runtimes. Raises :class:`ServerError` on any
    server-side failure.
    """
    batch = np.asarray(batch, dtype=np.float32)
    with TritonClient(url, model, protocol, timeout=timeout) as client:
        size = min(batch_size or client.max_batch_size or 1, client.max_batch_size or 1)
        slices = _chunks(len(batch), size)
        answers = client.infer([batch[s] for s in slices])
    errors = [a for a in answers if isinstance(a, Exception)]
    if errors:
        raise ServerError(f"model {model!r} at {client.url} failed: {_short(errors[0])}; check the input shape and the server log")
    return np.concatenate(answers)


__all__ = ["classify", "classify_bytes", "infer_encoded", "infer_logits", "ImageResult", "Prediction", "TritonClient"]
