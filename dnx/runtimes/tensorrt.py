"""TensorRT engines through Polygraphy's ``TrtRunner`` (needs the TensorRT libraries and an NVIDIA GPU)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess

from dnx._lazy import lazy_import


def parse_nvidia_smi(text: str) -> dict | None:
    """First GPU from ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    for line in text.strip().splitlines():
        name, _, cc = line.rpartition(",")
        if name.strip() and cc.strip():
            return {"name": name.strip(), "compute_capability": cc.strip(), "source": "nvidia-smi"}
    return None


def gpu_info() -> dict | None:
    """Name and compute capability of GPU 0 (via torch.cuda when present, else nvidia-smi), or None."""
    try:
        torch = importlib.import_module("torch")
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "source": "torch.cuda"}
    except Exception:  # noqa: BLE001 - a broken torch install just means "ask nvidia-smi"
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out)


def available() -> tuple[bool, str]:
    """``(True, description)`` when TensorRT imports and a GPU is visible, else ``(False, reason)``."""
    try:
        trt = importlib.import_module("tensorrt")
        version = trt.__version__
    except Exception as exc:  # noqa: BLE001 - the stub wheels fail in assorted ways
        return False, (f"TensorRT is not importable ({exc.__class__.__name__}: {exc}); "
                       "build engines in nvcr.io/nvidia/tensorrt:<YY.MM>-py3 (make engines)")
    gpu = gpu_info()
    if gpu is None:
        return False, f"TensorRT {version} is installed but no NVIDIA GPU is visible (torch.cuda and nvidia-smi found none)"
    return True, f"TensorRT {version} on {gpu['name']} (compute capability {gpu['compute_capability']})"




def runner(plan: bytes | str | os.PathLike, name: str):
    """Polygraphy ``TrtRunner`` of a serialized engine (bytes) or a ``model.plan`` path."""
    lazy_import("tensorrt")
    trt_mod = lazy_import("polygraphy.backend.trt")
    loader = trt_mod.EngineFromBytes(plan) if isinstance(plan, bytes) else trt_mod.EngineFromPath(str(plan))
    return trt_mod.TrtRunner(loader, name=name)
