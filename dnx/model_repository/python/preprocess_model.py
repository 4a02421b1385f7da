"""Triton Python-backend model ``<model>_preprocess``: encoded images in, the model's input tensor out.

``dnx export`` copies this file as ``<repo>/<model>_preprocess/1/model.py`` and dnx's
``dnx/preprocess.py`` beside it as ``dnx_preprocess.py``: the server decodes and transforms
images with the same code the dnx client, calibration and parity checks use. The transform's
parameters (resize, crop, interpolation, mean, std) come from this model's ``config.pbtxt``.

Input ``image``: TYPE_STRING, dims [1] (one encoded JPEG/PNG/WebP per batch item).
Output: FP32 [3, crop, crop], written in place into one preallocated array per request. Every
request is answered on its own: an undecodable image fails its request with a one-line reason
(unsupported format, decompression bomb, > 50 MP, corrupt, ...) naming every bad image of the
request, the other requests of the batch are answered. Bad input is the client's error:
``TritonError.INVALID_ARG``, which Triton answers with HTTP 400 and gRPC INVALID_ARGUMENT (and
the ensemble passes on); anything else is the server's (INTERNAL, HTTP 500).

Needs numpy and Pillow in the Python environment of Triton's Python stub (the NGC image has
numpy; docker/Dockerfile.serve adds Pillow).
"""

import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnx_preprocess  # noqa: E402 - dnx/preprocess.py, copied here by `dnx export`


class BadImages(ValueError):
    """Images of one request that cannot be decoded or preprocessed: the client's error."""


def _error(exc: Exception):
    """The response error: INVALID_ARG for bad images, INTERNAL for the rest.

    Looked up per call: the stub adds ``TritonError`` to pb_utils only after importing this file,
    and older Python backends have no error codes (their errors are all INTERNAL).
    """
    invalid_arg = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    if isinstance(exc, BadImages) and invalid_arg is not None:
        return pb_utils.TritonError(str(exc), invalid_arg)
    return pb_utils.TritonError(str(exc))


def _params(config: dict) -> dict:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = _params(config)
        self.spec = SimpleNamespace(
            resize=int(p["resize"]), crop=int(p["crop"]), interpolation=p.get("interpolation", "bilinear"),
            mean=tuple(float(x) for x in p["mean"].split(",")), std=tuple(float(x) for x in p["std"].split(",")),
        )
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.shape = tuple(int(d) for d in config["output"][0]["dims"])

    def _one(self, request):
        items = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
        out = np.empty((len(items), *self.shape), dtype=np.float32)
        bad = []
        for i, item in enumerate(items):
            try:
                dnx_preprocess.preprocess_bytes(bytes(item), self.spec, out=out[i])
            except dnx_preprocess.InputError as exc:
                bad.append(f"image {i} of {len(items)}: {exc}" if len(items) > 1 else str(exc))
        if bad:  # every bad image named, so the client fixes them all at once
            raise BadImages("; ".join(bad))
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out)])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # noqa: BLE001 - any failure is this request's alone
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(exc)))
        return responses
