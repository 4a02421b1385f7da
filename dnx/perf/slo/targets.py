"""What LoadGen drives in ``dnx perf --scenario``: a served model over gRPC, asynchronously.

:class:`GrpcTarget` sends each sample with tritonclient.grpc's ``async_infer`` and completes it
in the response callback, so LoadGen's issue thread never waits for the server. The samples (the
query sample library) are built once, before the test: preprocessed photographs for a tensor
model of DenseNet-121's input shape, encoded photographs (JPEG) for a bytes-in ensemble, seeded
random tensors for any other fixed-shape input.
"""

from __future__ import annotations

from typing import Callable

from dnx._lazy import lazy_import
from dnx.errors import InputError, one_line
from dnx.perf.served import ServedModel
from dnx.photos import photo_mix
from dnx.preprocess import photo_batch

IMAGE_DIMS = (3, 224, 224)


def sample_inputs(model: ServedModel, count: int = 8, photos: str | None = None, seed: int = 0) -> list[dict]:
    """``count`` or fewer samples for ``model``: each ``{input name: numpy array with batch 1}``."""
    np = lazy_import("numpy")
    utils = lazy_import("tritonclient.utils")
    batched = model.max_batch_size > 0
    rng = np.random.default_rng(seed)
    per_input: dict[str, list] = {}
    for spec in model.config.get("input", []):
        name, dtype = spec.get("name", "?"), spec.get("data_type", "TYPE_FP32").removeprefix("TYPE_")
        dims = tuple(max(1, int(d)) for d in spec.get("dims", []))
        shape = ((1,) if batched else ()) + dims
        if dtype == "STRING":
            blobs = [b for _, b in photo_mix(photos, phone=False)][:count]
            per_input[name] = [np.array([b], dtype=object).reshape(shape) for b in blobs]
        elif dims == IMAGE_DIMS and dtype == "FP32":
            per_input[name] = [x[None] if batched else x for x in photo_batch(limit=count)]
        else:
            np_dtype = utils.triton_to_np_dtype(dtype)
            if np_dtype is None:
                raise InputError(f"{model.name}: input {name} has type {dtype}, which dnx cannot generate; "
                                 "measure it with perf_analyzer --input-data")
            per_input[name] = [rng.standard_normal(shape).astype(np_dtype) for _ in range(count)]
    n = min((len(v) for v in per_input.values()), default=0)
    return [{k: v[i] for k, v in per_input.items()} for i in range(n)]


class GrpcTarget:
    """A served model as LoadGen's system under test: ``async_infer`` with a completion callback."""

    def __init__(self, url: str, model: ServedModel, samples: list[dict], timeout_s: float = 60.0):
        grpc = lazy_import("tritonclient.grpc")
        utils = lazy_import("tritonclient.utils")
        if not samples:
            raise InputError(f"{model.name}: no input to send")
        self.model, self.url, self.timeout_s = model.name, url, timeout_s
        self.client = grpc.InferenceServerClient(url=url)
        self.sample_count = len(samples)
        self.inputs = []
        for sample in samples:
            prepared = []
            for name, array in sample.items():
                inp = grpc.InferInput(name, list(array.shape), utils.np_to_triton_dtype(array.dtype))
                inp.set_data_from_numpy(array)
                prepared.append(inp)
            self.inputs.append(prepared)

    def send(self, index: int, done: Callable[[str | None], None]) -> None:
        def callback(result, error) -> None:
            done(None if error is None else one_line(error))

        self.client.async_infer(self.model, self.inputs[index % self.sample_count], callback,
                                client_timeout=self.timeout_s)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a client whose server is gone
            pass
