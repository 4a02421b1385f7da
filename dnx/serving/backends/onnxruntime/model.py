"""A Python-based Triton backend named ``onnxruntime``: ONNX Runtime on the CPU.

Triton loads ``<backend-dir>/onnxruntime/model.py`` for any model whose ``config.pbtxt``
says ``backend: "onnxruntime"`` when no ``libtriton_onnxruntime.so`` is there. So the
*unchanged* repository that the NGC container serves with the real C++ backend is served
here through this file, by the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

What it honours from the config: input/output names and data types, ``max_batch_size``,
``default_model_filename``, and the C++ backend's parameters with the same meaning
(``intra_op_thread_count``, ``inter_op_thread_count``, ``execution_mode``,
``enable_mem_arena`` (older spelling ``enable_mem_area``), ``enable_mem_pattern``,
``memory.enable_memory_arena_shrinkage``) plus ``optimization { graph { level } }``. Every batch the dynamic batcher hands to
:meth:`TritonPythonModel.execute` becomes ONE ``InferenceSession.run``; a request that
does not fit the config gets an error response of its own and the others are answered.

This file runs inside Triton's Python stub and imports nothing from dnx.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _params(config: dict) -> dict:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def _session_options(config: dict) -> "ort.SessionOptions":
    params = _params(config)
    opts = ort.SessionOptions()
    # 0 (the C++ backend's default) leaves the choice to ONNX Runtime.
    opts.intra_op_num_threads = int(params.get("intra_op_thread_count", "0") or 0)
    opts.inter_op_num_threads = int(params.get("inter_op_thread_count", "0") or 0)
    if params.get("execution_mode", "0") == "1":
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    # The C++ backend spells it "enable_mem_area"; accept both.
    arena = params.get("enable_mem_arena", params.get("enable_mem_area"))
    if arena is not None:
        opts.enable_cpu_mem_arena = arena not in ("0", "false", "False")
    pattern = params.get("enable_mem_pattern")
    if pattern is not None:
        opts.enable_mem_pattern = pattern not in ("0", "false", "False")
    # The C++ backend's mapping: -1 basic, 1 basic + extended, 2 none, unset all.
    level = int(config.get("optimization", {}).get("graph", {}).get("level", 0) or 0)
    opts.graph_optimization_level = {
        -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return opts


def _run_options(config: dict):
    shrink = _params(config).get("memory.enable_memory_arena_shrinkage")
    if not shrink:
        return None
    run = ort.RunOptions()
    run.add_run_config_entry("memory.enable_memory_arena_shrinkage", shrink)
    return run


def _dims(tensor_config: dict) -> tuple:
    return tuple(int(d) for d in tensor_config.get("dims", []))


def _shape_fits(shape: tuple, dims: tuple) -> bool:
    return len(shape) == len(dims) and all(d == -1 or s == d for s, d in zip(shape, dims))


class TritonPythonModel:
    """ONNX Runtime CPU session serving one model instance."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = self.config["name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.inputs = [
            (i["name"], pb_utils.triton_string_to_numpy(i["data_type"]), _dims(i)) for i in self.config["input"]
        ]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in self.config["output"]]

        filename = self.config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: {path} not found; export the model into the repository")
        self.session = ort.InferenceSession(
            path, sess_options=_session_options(self.config), providers=["CPUExecutionProvider"]
        )
        self.run_options = _run_options(self.config)
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n, _, _ in self.inputs if n not in graph_inputs] + [
            n for n, _ in self.outputs if n not in graph_outputs
        ]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: config names {missing} are not in {filename} "
                f"(graph inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)}); fix config.pbtxt"
            )

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
                batch, shape = shape[0], shape[1:]
            if not _shape_fits(shape, dims):
                raise ValueError(f"input {name!r} has shape {list(array.shape)}, expected [N, {', '.join(map(str, dims))}]")
            feed[name] = array
        return feed, batch or 1

    def execute(self, requests):
        responses = [None] * len(requests)
        # Requests whose non-batch shapes agree run together in one ONNX Runtime call.
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

        out_names = [n for n, _ in self.outputs]
        for members in groups.values():
            if len(members) == 1:
                feed = members[0][1]
            else:
                feed = {n: np.concatenate([m[1][n] for m in members]) for n, _, _ in self.inputs}
            try:
                results = self.session.run(out_names, feed, self.run_options)
            except Exception as exc:  # noqa: BLE001 - the error goes back to each client
                for idx, _, _ in members:
                    responses[idx] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{self.name}: ONNX Runtime failed: {exc}")
                    )
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
        self.session = None
