"""ONNX Runtime on the CPU: sessions built from a config's ``parameters``, as the backend builds them."""

from __future__ import annotations

import os

from dnx._lazy import lazy_import
from dnx.runtimes.backend_common import ort_session_options


def cpu_parameters(threads: int | None = None) -> dict[str, str]:
    """The onnxruntime backend ``parameters`` dnx writes for the CPU: ``threads`` intra-op (default: all cores), 1 inter-op."""
    return {"intra_op_thread_count": str(threads or os.cpu_count() or 1), "inter_op_thread_count": "1"}


def session(path: str | os.PathLike, parameters: dict[str, str] | None = None, graph_level: int = 0):
    """An ``InferenceSession`` on the CPU with the session options ``parameters`` map to.

    ``None`` means dnx's CPU default (:func:`cpu_parameters`), not ONNX Runtime's.
    """
    ort = lazy_import("onnxruntime")
    opts = ort_session_options(cpu_parameters() if parameters is None else parameters, graph_level)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def runner(path: str | os.PathLike, name: str, parameters: dict[str, str] | None = None, graph_level: int = 0):
    """Polygraphy ``OnnxrtRunner`` on :func:`session` (the session is opened on activation).

    ``graph_level`` 2 runs the graph unoptimised: Q/DQ pairs then compute as float fake-quant.
    """
    runner_mod = lazy_import("polygraphy.backend.onnxrt")
    return runner_mod.OnnxrtRunner(lambda: session(path, parameters, graph_level), name=name)
