"""Config ``parameters`` -> runtime options, and request batching: one copy for dnx and its backends.

dnx's in-process runners (:mod:`dnx.runtimes.onnxruntime`, :mod:`dnx.runtimes.openvino`) and the
Python-based Triton backends (``dnx/serving/backends/*/model.py``) both build their ONNX Runtime
session options and OpenVINO compile properties here, so a model runs in-process exactly as it
is served. The server launcher copies this file beside each backend's ``model.py`` as
``dnx_backend_common.py``: it imports numpy only (the runtimes inside functions), never dnx.
"""

import json
import os

import numpy as np

OPENVINO_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# The onnxruntime C++ backend's graph levels: -1 basic, 1 basic + extended, 2 none, unset all.
ORT_GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 2: "ORT_DISABLE_ALL"}


def config_parameters(config: dict) -> dict:
    """``parameters`` of a Triton model config in JSON form, as ``{key: string value}``."""
    return {k: str(v.get("string_value", "")).strip() for k, v in config.get("parameters", {}).items()}


def is_yes(params: dict, key: str) -> bool:
    """True when parameter ``key`` is YES (any case), as the openvino backend reads flags."""
    return params.get(key, "").strip().lower() == "yes"


def _off(value: str) -> bool:
    return value in ("0", "false", "False")


def ort_session_options(params: dict, graph_level: int = 0):
    """``onnxruntime.SessionOptions`` for the onnxruntime backend's ``parameters`` (same meaning as C++)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # 0 (the C++ backend's default) leaves the choice to ONNX Runtime.
    opts.intra_op_num_threads = int(params.get("intra_op_thread_count", "0") or 0)
    opts.inter_op_num_threads = int(params.get("inter_op_thread_count", "0") or 0)
    if params.get("execution_mode", "0") == "1":
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    # The C++ backend spells it "enable_mem_area"; accept both.
    arena = params.get("enable_mem_arena", params.get("enable_mem_area"))
    if arena is not None:
        opts.enable_cpu_mem_arena = not _off(arena)
    pattern = params.get("enable_mem_pattern")
    if pattern is not None:
        opts.enable_mem_pattern = not _off(pattern)
    level = ORT_GRAPH_LEVELS.get(int(graph_level or 0), "ORT_ENABLE_ALL")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return opts


def ort_run_options(params: dict):
    """``onnxruntime.RunOptions`` for ``memory.enable_memory_arena_shrinkage``, or None."""
    shrink = params.get("memory.enable_memory_arena_shrinkage")
    if not shrink:
        return None
    import onnxruntime as ort

    run = ort.RunOptions()
    run.add_run_config_entry("memory.enable_memory_arena_shrinkage", shrink)
    return run


def openvino_properties(params: dict) -> dict:
    """OpenVINO CPU properties for the openvino backend's ``parameters``, validated as the C++ backend does.

    Raises ValueError for a value the C++ backend refuses. ``INFERENCE_PRECISION_HINT`` is
    OpenVINO's own property (dnx writes ``f32`` for fp32 variants); the C++ backend ignores it.
    """
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
        if hint.upper() not in OPENVINO_HINTS:
            raise ValueError(f"parameter PERFORMANCE_HINT must be one of {', '.join(OPENVINO_HINTS)}, got {hint!r}")
        props["PERFORMANCE_HINT"] = hint.upper()
    if params.get("HINT_BF16"):
        if not is_yes(params, "HINT_BF16"):
            raise ValueError(f"parameter HINT_BF16 must be YES, got {params['HINT_BF16']!r}")
        props["INFERENCE_PRECISION_HINT"] = "bf16"
    elif params.get("INFERENCE_PRECISION_HINT"):
        props["INFERENCE_PRECISION_HINT"] = params["INFERENCE_PRECISION_HINT"].lower()
    return props


def instance_count(config: dict) -> int:
    """How many instances Triton runs of a model: the sum of its ``instance_group`` counts (1 if none)."""
    groups = config.get("instance_group") or [{}]
    return max(1, sum(int(g.get("count", 1)) for g in groups))


def openvino_process_share(props: dict, instances: int, cores: int) -> dict:
    """One instance's share of the compile properties, so N instance processes act as the C++ backend's one model.

    The C++ openvino backend compiles a model ONCE and gives each of its ``instances`` an infer
    request on it: ``NUM_STREAMS`` streams split the CPU's ``INFERENCE_NUM_THREADS`` (default:
    all cores) and up to ``instances`` inferences overlap. Triton's Python backend runs each
    instance in a process of its own, each compiling its own model, so each process gets
    ``NUM_STREAMS // instances`` streams (at least 1) and ``threads // instances`` threads (at
    least 1): the same streams and threads in total, not ``instances`` times as many. Thread
    pinning is turned off: each process would pin its threads to the same first cores.
    """
    if instances <= 1:
        return dict(props)
    out = dict(props)
    streams = str(props.get("NUM_STREAMS", ""))
    if streams.isdigit():
        out["NUM_STREAMS"] = str(max(1, int(streams) // instances))
    threads = int(props.get("INFERENCE_NUM_THREADS") or 0) or max(1, cores)
    out["INFERENCE_NUM_THREADS"] = str(max(1, threads // instances))
    # OpenVINO pins each process's stream threads from core 0 up: every process would share core 0.
    out["ENABLE_CPU_PINNING"] = False
    return out


def pad_batch(feed: dict, rows: int) -> dict:
    """Zero-pad every array of ``feed`` along axis 0 up to ``rows`` (the openvino backend's batch padding)."""
    out = {}
    for name, array in feed.items():
        missing = rows - len(array)
        out[name] = np.concatenate([array, np.zeros((missing, *array.shape[1:]), array.dtype)]) if missing > 0 else array
    return out


class BatchBuffers:
    """Per-instance input buffers that a batch of several requests (or a padded one) is copied into.

    Allocated once per input (``capacity`` rows, e.g. ``max_batch_size``) and reused by every
    execute: a fresh ``np.concatenate``/``np.zeros`` per batch costs an allocation, page faults
    and, for padding, zero-filling the whole padded batch again (0.9 ms for 1 image padded to 8 on
    a 2-core Xeon, against 0.04 ms for the copy alone). ``pad_to`` > 0 pads every batch
    with zero rows up to that many (the openvino backend's fixed batch); only rows an earlier,
    larger batch left behind are zeroed again. A lone request that needs no padding is passed on
    as is (no copy). The arrays :meth:`join` returns are views valid until the next call: ``run``
    must consume them before it returns (ONNX Runtime's ``run`` and OpenVINO's ``infer`` do).
    """

    def __init__(self, pad_to: int = 0, capacity: int = 0):
        self.pad_to = pad_to
        self.capacity = capacity
        self._buffers = {}  # input name -> [array, rows that may hold data]

    def join(self, parts: dict[str, list]) -> dict:
        """``{name: [request arrays]}`` -> ``{name: one array}``: concatenated along axis 0, zero-padded."""
        out = {}
        for name, arrays in parts.items():
            rows = sum(len(a) for a in arrays)
            total = max(rows, self.pad_to)
            if len(arrays) == 1 and rows == total:
                out[name] = arrays[0]
                continue
            first = arrays[0]
            entry = self._buffers.get(name)
            if entry is None or entry[0].shape[1:] != first.shape[1:] or entry[0].dtype != first.dtype or len(entry[0]) < total:
                entry = self._buffers[name] = [np.zeros((max(total, self.capacity), *first.shape[1:]), first.dtype), 0]
            buf, dirty = entry
            if len(arrays) == 1:
                buf[:rows] = first
            else:
                np.concatenate(arrays, out=buf[:rows])
            if total > rows and dirty > rows:
                buf[rows:dirty] = 0  # padding rows must be zero; rows past `dirty` still are
            entry[1] = rows if total > rows else max(dirty, rows)
            out[name] = buf[:total]
        return out


def execute_batched(requests, fetch, run, *, input_names, max_batch_size, check=None, buffers=None):
    """Answer ``requests`` with ONE ``run`` call per group of requests whose non-batch shapes agree.

    ``fetch(request, name)`` returns a request's input array; ``check(batch)`` may raise
    ValueError to refuse a request (its own error, the others still run); ``run(feed, rows)``
    returns the output arrays for the ``feed`` of ``rows`` batch items (concatenated, and padded
    when ``buffers`` pads: then the arrays may hold more rows than ``rows``; outputs past
    ``rows`` are ignored). ``buffers`` (:class:`BatchBuffers`) is where groups are joined; by
    default a fresh one per call. Triton has already checked names, data types, shapes and
    ``max_batch_size`` against the config. Returns, per request, ``(outputs, None)`` or
    ``(None, error message)``.
    """
    buffers = buffers or BatchBuffers()
    answers = [None] * len(requests)
    groups = {}
    for idx, request in enumerate(requests):
        feed = {name: fetch(request, name) for name in input_names}
        batch = len(next(iter(feed.values()))) if max_batch_size > 0 else 1
        if check is not None:
            try:
                check(batch)
            except ValueError as exc:
                answers[idx] = (None, str(exc))
                continue
        shapes = tuple(a.shape[1:] if max_batch_size > 0 else a.shape for a in feed.values())
        # Without a batch dimension every request runs alone.
        key = shapes if max_batch_size > 0 else (idx, shapes)
        groups.setdefault(key, []).append((idx, feed, batch))

    for members in groups.values():
        rows = sum(m[2] for m in members)
        try:
            feed = members[0][1] if max_batch_size <= 0 else buffers.join(
                {n: [m[1][n] for m in members] for n in input_names})
            results = run(feed, rows)
        except Exception as exc:  # noqa: BLE001 - the error goes back to each client of the group
            for idx, _, _ in members:
                answers[idx] = (None, str(exc))
            continue
        start = 0
        for idx, _, batch in members:
            stop = start + batch if max_batch_size > 0 else None
            answers[idx] = ([r[start:stop] for r in results], None)
            start = stop or 0
    return answers


def triton_responses(pb_utils, requests, run, *, model, input_names, outputs, max_batch_size, check=None,
                     buffers=None):
    """:func:`execute_batched` for a Python-based backend: ``pb_utils`` requests in, responses out.

    ``outputs`` is ``[(name, numpy dtype), ...]`` from the config; errors are prefixed with ``model``.
    """
    answers = execute_batched(
        requests, lambda r, n: pb_utils.get_input_tensor_by_name(r, n).as_numpy(), run,
        input_names=input_names, max_batch_size=max_batch_size, check=check, buffers=buffers,
    )
    out = []
    for arrays, error in answers:
        if error is not None:
            out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{model}: {error}")))
            continue
        tensors = [pb_utils.Tensor(n, np.ascontiguousarray(a, dtype=t)) for (n, t), a in zip(outputs, arrays)]
        out.append(pb_utils.InferenceResponse(output_tensors=tensors))
    return out


class BackendModel:
    """What both Python-based backends read from Triton's ``initialize`` arguments.

    ``name``, ``max_batch_size``, ``inputs`` (``[(name, dims)]``), ``outputs``
    (``[(name, numpy dtype)]``), ``params`` (string parameters) and ``path`` of the model file
    (``default_model_filename`` or ``default_filename``), which must exist.
    """

    def __init__(self, args: dict, pb_utils, default_filename: str):
        self.pb_utils = pb_utils
        self.config = json.loads(args["model_config"])
        self.name = self.config["name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.inputs = [(i["name"], [int(d) for d in i.get("dims", [])]) for i in self.config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in self.config["output"]]
        self.params = config_parameters(self.config)
        self.filename = self.config.get("default_model_filename") or default_filename
        self.path = os.path.join(args["model_repository"], args["model_version"], self.filename)
        if not os.path.exists(self.path):
            raise pb_utils.TritonModelException(f"{self.name}: {self.path} not found; export the model into the repository")
        # Reused by every execute of this instance; a backend that pads sets buffers.pad_to.
        self.buffers = BatchBuffers(capacity=self.max_batch_size)

    def check_names(self, graph_inputs: set, graph_outputs: set, what: str = "graph") -> None:
        """Refuse to load when the config names a tensor the model file does not have."""
        missing = [n for n, _ in self.inputs if n not in graph_inputs] + [n for n, _ in self.outputs if n not in graph_outputs]
        if missing:
            raise self.pb_utils.TritonModelException(
                f"{self.name}: config names {missing} are not in {self.filename} "
                f"({what} inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)}); fix config.pbtxt"
            )

    def responses(self, requests, run, check=None):
        """:func:`triton_responses` with this model's names and batch size."""
        return triton_responses(self.pb_utils, requests, run, model=self.name, input_names=[n for n, _ in self.inputs],
                                outputs=self.outputs, max_batch_size=self.max_batch_size, check=check,
                                buffers=self.buffers)
