"""Lazy imports of heavy packages, with an error that names what to install."""

import importlib

from dnx.errors import MissingDependencyError

# import name -> what to install
_INSTALL_HINTS = {
    "torch": "torch torchvision (pip install 'dnx[torch]' or `make install`)",
    "torchvision": "torchvision (pip install torchvision)",
    "onnx": "onnx (pip install onnx)",
    "onnxruntime": "onnxruntime (pip install onnxruntime)",
    "openvino": "openvino (pip install openvino)",
    "tensorrt": "TensorRT (use the NGC image nvcr.io/nvidia/tensorrt:<YY.MM>-py3, or `make engines`)",
    "polygraphy": "polygraphy (pip install polygraphy)",
    "tritonclient": "tritonclient (pip install 'tritonclient[all]==2.50.0')",
    "onnxconverter_common": "onnxconverter-common (pip install onnxconverter-common)",
    "matplotlib": "matplotlib (pip install matplotlib)",
    "skimage": "scikit-image (pip install scikit-image)",
    "mlperf_loadgen": "MLPerf LoadGen (pip install mlcommons-loadgen)",
}


def lazy_import(name: str):
    """Import module ``name`` now, or raise :class:`MissingDependencyError` naming the package."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        hint = _INSTALL_HINTS.get(top, top)
        raise MissingDependencyError(f"{name} is not importable ({exc}); install {hint}") from exc


def has_module(name: str) -> bool:
    """True when ``name`` can be imported (does not raise)."""
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
