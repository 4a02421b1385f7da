"""A Python-based Triton backend named ``openvino``: OpenVINO on the CPU.

Triton loads ``<backend-dir>/openvino/model.py`` for any model whose ``config.pbtxt`` says
``backend: "openvino"`` when no ``libtriton_openvino.so`` is there. So the *unchanged*
repository that the NGC container serves with the real C++ openvino backend is served here
through this file, by the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

It follows the C++ backend (triton-inference-server/openvino_backend, ``src/openvino.cc``):

* model file ``<version>/model.xml`` (+ ``model.bin``), or ``default_model_filename``;
* parameters ``PERFORMANCE_HINT``, ``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``,
  ``NUM_STREAMS``, ``HINT_BF16``, ``CPU_EXTENSION_PATH``, ``RESHAPE_IO_LAYERS``,
  ``SKIP_OV_DYNAMIC_BATCHSIZE``, ``ENABLE_BATCH_PADDING``, validated the same way; plus
  ``INFERENCE_PRECISION_HINT`` (OpenVINO's property, e.g. ``f32``), which the C++ backend
  does not read;
* with ``max_batch_size > 0`` the model's batch is fixed to ``max_batch_size``; smaller
  batches are padded with zeros when ``ENABLE_BATCH_PADDING`` is YES, else every request
  must carry exactly ``max_batch_size`` items (the README's rule);
* one infer request per instance, ONE inference per batch the dynamic batcher forms.

Unlike the C++ backend, a request that does not fit the config gets an error response of its
own and the other requests of the batch are answered. This file runs inside Triton's Python
stub and imports nothing from dnx.
"""

import json
import os

import numpy as np
import openvino as ov
import triton_python_backend_utils as pb_utils

_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


def _params(config: dict) -> dict:
    return {k: v.get("string_value", "").strip() for k, v in config.get("parameters", {}).items()}


def _yes(params: dict, key: str) -> bool:
    return params.get(key, "").lower() == "yes"


def _properties(params: dict) -> dict:
    """OpenVINO CPU properties from config parameters; ValueError for a value the C++ backend refuses."""
    props = {}
    for key in ("INFERENCE_NUM_THREADS", "COMPILATION_NUM_THREADS"):
        if params.get(key):
            if not params[key].isdigit():
                raise ValueError(f"parameter {key} must be a non-negative number, got {params[key]!r}")
            props[key] = params[key]
    streams = params.get("NUM_STREAMS", "")
    if streams:
        if not (streams.isdigit() or streams.upper() in ("AUTO", "NUMA")):
            raise ValueError(f"parameter NUM_STREAMS must be AUTO, NUMA or a number, got {streams!r}")
        props["NUM_STREAMS"] = streams.upper()
    hint = params.get("PERFORMANCE_HINT", "")
    if hint:
        if hint.upper() not in _HINTS:
            raise ValueError(f"parameter PERFORMANCE_HINT must be one of {', '.join(_HINTS)}, got {hint!r}")
        props["PERFORMANCE_HINT"] = hint.upper()
    if params.get("HINT_BF16"):
        if not _yes(params, "HINT_BF16"):
            raise ValueError(f"parameter HINT_BF16 must be YES, got {params['HINT_BF16']!r}")
        props["INFERENCE_PRECISION_HINT"] = "bf16"
    elif params.get("INFERENCE_PRECISION_HINT"):
        props["INFERENCE_PRECISION_HINT"] = params["INFERENCE_PRECISION_HINT"].lower()
    return props


def _dims(tensor_config: dict) -> tuple:
    return tuple(int(d) for d in tensor_config.get("dims", []))


def _shape_fits(shape: tuple, dims: tuple) -> bool:
    return len(shape) == len(dims) and all(d == -1 or s == d for s, d in zip(shape, dims))


class TritonPythonModel:
    """One compiled OpenVINO model and one infer request per model instance."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = self.config["name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.inputs = [
            (i["name"], pb_utils.triton_string_to_numpy(i["data_type"]), _dims(i)) for i in self.config["input"]
        ]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in self.config["output"]]
        params = _params(self.config)
        self.padding = _yes(params, "ENABLE_BATCH_PADDING")
        try:
            props = _properties(params)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: {exc}; fix config.pbtxt")

        filename = self.config.get("default_model_filename") or "model.xml"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"{self.name}: {path} not found; export the model into the repository")
        core = ov.Core()
        if params.get("CPU_EXTENSION_PATH"):
            core.add_extension(params["CPU_EXTENSION_PATH"])
        model = core.read_model(path)
        self._check_names(model, filename)
        self._reshape(model, _yes(params, "RESHAPE_IO_LAYERS"))
        if self.max_batch_size > 0:
            props["ALLOW_AUTO_BATCHING"] = "NO" if _yes(params, "SKIP_OV_DYNAMIC_BATCHSIZE") else "YES"
        self.compiled = core.compile_model(model, "CPU", props)
        self.request = self.compiled.create_infer_request()
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        pb_utils.Logger.log_info(
            f"{self.name}: OpenVINO {ov.get_version()} on CPU, precision {precision}, "
            f"streams {self.compiled.get_property('NUM_STREAMS')}, "
            f"threads {self.compiled.get_property('INFERENCE_NUM_THREADS')}, batch {self.max_batch_size or 'model'}"
        )

    def _check_names(self, model, filename):
        graph_inputs = {n for port in model.inputs for n in port.get_names()}
        graph_outputs = {n for port in model.outputs for n in port.get_names()}
        missing = [n for n, _, _ in self.inputs if n not in graph_inputs] + [
            n for n, _ in self.outputs if n not in graph_outputs
        ]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: config names {missing} are not in {filename} "
                f"(model inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)}); fix config.pbtxt"
            )

    def _reshape(self, model, reshape_io_layers):
        """Fix the batch to max_batch_size (as the C++ backend does); RESHAPE_IO_LAYERS applies config dims."""
        if reshape_io_layers:
            lead = [-1] if self.max_batch_size > 0 else []
            model.reshape({name: ov.PartialShape(lead + list(dims)) for name, _, dims in self.inputs})
        if self.max_batch_size > 0:
            for param in model.get_parameters():
                param.set_layout(ov.Layout("N..."))
            ov.set_batch(model, self.max_batch_size)

    def _check(self, request):
        """Return (feed dict, batch size) for one request, or raise ValueError saying what is wrong."""
        feed, batch = {}, None
        for name, dtype, dims in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name!r} is missing")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise ValueError(f"input {name!r} has data type {array.dtype}, expected {np.dtype(dtype)}")
            shape = array.shape
            if self.max_batch_size > 0:
                if not shape or not 1 <= shape[0] <= self.max_batch_size:
                    raise ValueError(f"input {name!r} batch size {shape[:1]} is outside 1..{self.max_batch_size}")
                if batch is not None and shape[0] != batch:
                    raise ValueError("inputs disagree on the batch size")
                if not self.padding and shape[0] != self.max_batch_size:
                    # The C++ backend's rule: each request must fill the fixed batch unless padding is on.
                    raise ValueError(
                        f"expected requests with batch size {self.max_batch_size}, got {shape[0]}; set parameter "
                        "ENABLE_BATCH_PADDING to YES in config.pbtxt (or send batches of max_batch_size)"
                    )
                batch, shape = shape[0], shape[1:]
            if not _shape_fits(shape, dims):
                raise ValueError(f"input {name!r} has shape {list(array.shape)}, expected [N, {', '.join(map(str, dims))}]")
            feed[name] = array
        return feed, batch or 1

    def _infer(self, feed: dict, total: int) -> list:
        """One OpenVINO inference on the whole batch; outputs cut back to ``total`` rows."""
        if self.max_batch_size > 0 and total < self.max_batch_size:
            pad = self.max_batch_size - total
            feed = {n: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for n, a in feed.items()}
        results = self.request.infer({n: np.ascontiguousarray(a) for n, a in feed.items()})
        by_name = {n: results[port] for port in self.compiled.outputs for n in port.get_names()}
        rows = slice(0, total) if self.max_batch_size > 0 else slice(None)
        return [by_name[name][rows] for name, _ in self.outputs]

    def execute(self, requests):
        responses = [None] * len(requests)
        # Requests whose non-batch shapes agree run together in one inference.
        groups = {}
        for idx, request in enumerate(requests):
            try:
                feed, batch = self._check(request)
            except ValueError as exc:
                responses[idx] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
                continue
            key = tuple((n, feed[n].shape[1:] if self.max_batch_size else feed[n].shape) for n, _, _ in self.inputs)
            if not self.max_batch_size:
                key = (idx, key)  # without a batch dimension every request runs alone
            groups.setdefault(key, []).append((idx, feed, batch))

        for members in groups.values():
            if len(members) == 1:
                feed = members[0][1]
            else:
                feed = {n: np.concatenate([m[1][n] for m in members]) for n, _, _ in self.inputs}
            total = sum(m[2] for m in members)
            try:
                results = self._infer(feed, total)
            except Exception as exc:  # noqa: BLE001 - the error goes back to each client
                for idx, _, _ in members:
                    responses[idx] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
                continue
            start = 0
            for idx, _, batch in members:
                stop = start + batch if self.max_batch_size else None
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop], dtype=dtype))
                    for (name, dtype), result in zip(self.outputs, results)
                ]
                responses[idx] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop or 0
        return responses

    def finalize(self):
        self.request = None
        self.compiled = None
