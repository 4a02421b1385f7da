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

from pathlib import Path

from dnx.manifest import ModelRecord
from dnx.runtimes import onnxruntime, openvino, tensorrt
from dnx.runtimes.callable import callable_runner
from dnx.spec import DEFAULT_MODEL, ModelSpec

__all__ = ["callable_runner", "model_runner"]


def model_runner(repository: str | Path, name: str, entry: ModelRecord | dict, spec: ModelSpec = DEFAULT_MODEL):
    """The runner of one repository model with the runtime and config that serve it.

    ``entry`` is the model's :class:`~dnx.manifest.ModelRecord` (or its block of
    ``dnx-manifest.json``). Returns ``(runner, None)``, or ``(None, why)`` when this machine
    cannot run it (TensorRT without a GPU).
    """
    record = entry if isinstance(entry, ModelRecord) else ModelRecord.from_dict(name, entry)
    vdir = Path(repository) / name / "1"
    runtime = record.runtime
    if runtime == "onnxruntime":
        # A GPU model's Q/DQ is evaluated exactly (fake-quant), never by this CPU's int8 kernels.
        exact = record.target == "gpu" and record.precision == "int8"
        return onnxruntime.runner(vdir / "model.onnx", name, parameters=record.config.get("parameters"),
                                  graph_level=2 if exact else 0), None
    if runtime == "openvino":
        return openvino.runner(vdir / "model.xml", name, record.parameters, record.max_batch_size, spec), None
    if runtime == "tensorrt":
        usable, reason = tensorrt.available()
        return (tensorrt.runner(vdir / "model.plan", name), None) if usable else (None, reason)
    return None, f"unknown runtime {runtime!r} in the manifest"
