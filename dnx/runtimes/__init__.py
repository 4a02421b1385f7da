"""One runtime layer: a module per runtime, each with its loader and one Polygraphy runner.

* :mod:`.onnxruntime` - ONNX Runtime CPU sessions (Polygraphy ``OnnxrtRunner``);
* :mod:`.openvino` - OpenVINO CPU compiled models, fixed batch and padding as the backend serves;
* :mod:`.tensorrt` - TensorRT engines (Polygraphy ``TrtRunner``; needs TensorRT and a GPU);
* :mod:`.torch` - PyTorch eager, the parity reference and the bench baseline.

Every runner follows Polygraphy's ``BaseRunner`` interface, so parity (Polygraphy's
``Comparator``), ``dnx validate``, ``dnx bench`` and ``dnx tune`` run models the same way. Runtime
options come from a model's Triton config ``parameters`` through :mod:`.backend_common`, the
module the Python-based backends use too: a model runs in-process as it is served.

    from dnx.runtimes import model_runner
    runner, why = model_runner("model_repository", "densenet121_openvino_int8", manifest_entry)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from dnx._lazy import lazy_import
from dnx.spec import DEFAULT_MODEL, ModelSpec

_CALLABLE_RUNNER_CLASS = None


def callable_runner(load: Callable[[], Callable[[np.ndarray], np.ndarray]], name: str, spec: ModelSpec = DEFAULT_MODEL):
    """A Polygraphy runner whose ``activate`` calls ``load()`` for a function ``batch -> outputs``.

    How OpenVINO, PyTorch and a served model become Polygraphy runners; ``load`` runs on
    activation, so a runner costs nothing until the Comparator uses it.
    """
    global _CALLABLE_RUNNER_CLASS
    if _CALLABLE_RUNNER_CLASS is None:
        base = lazy_import("polygraphy.backend.base")
        common = lazy_import("polygraphy.common")

        class CallableRunner(base.BaseRunner):
            """Runs the function ``load()`` returned on the input batch."""

            def __init__(self, load, name, spec):
                super().__init__(name=name, prefix="callable-runner")
                self._load, self._fn, self._spec = load, None, spec

            def activate_impl(self):
                self._fn = self._load()

            def deactivate_impl(self):
                self._fn = None

            def get_input_metadata_impl(self):
                meta = common.TensorMetadata()
                meta.add(self._spec.input_name, dtype=np.float32, shape=(-1, *self._spec.input_shape))
                return meta

            def infer_impl(self, feed_dict):
                start = time.perf_counter()
                out = np.asarray(self._fn(feed_dict[self._spec.input_name]))
                self.inference_time = time.perf_counter() - start
                return {self._spec.output_name: out}

        _CALLABLE_RUNNER_CLASS = CallableRunner
    return _CALLABLE_RUNNER_CLASS(load, name, spec)


def model_runner(repository: str | Path, name: str, entry: dict, spec: ModelSpec = DEFAULT_MODEL):
    """The runner of one repository model with the runtime and config that serve it.

    ``entry`` is the model's block of ``dnx-manifest.json``. Returns ``(runner, None)``, or
    ``(None, why)`` when this machine cannot run it (TensorRT without a GPU).
    """
    vdir = Path(repository) / name / "1"
    runtime = entry.get("runtime")
    cfg = entry.get("config", {})
    if runtime == "onnxruntime":
        from dnx.runtimes import onnxruntime

        return onnxruntime.runner(vdir / "model.onnx", name, parameters=cfg.get("parameters")), None
    if runtime == "openvino":
        from dnx.runtimes import openvino

        return openvino.runner(vdir / "model.xml", name, cfg.get("parameters", {}), cfg.get("max_batch_size", 1), spec), None
    if runtime == "tensorrt":
        from dnx.runtimes import tensorrt

        usable, reason = tensorrt.available()
        return (tensorrt.runner(vdir / "model.plan", name), None) if usable else (None, reason)
    return None, f"unknown runtime {runtime!r} in the manifest"
