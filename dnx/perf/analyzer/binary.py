"""Where ``perf_analyzer`` is and the environment it needs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from dnx.errors import MissingDependencyError


def find_perf_analyzer() -> Path:
    """``perf_analyzer`` from PATH (Triton SDK container), else the one beside this Python."""
    found = shutil.which("perf_analyzer")
    candidates = [Path(found)] if found else []
    candidates.append(Path(sys.executable).parent / "perf_analyzer")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise MissingDependencyError(
        "perf_analyzer not found on PATH or beside the Python interpreter; "
        "install tritonclient[all]==2.50.0 in this environment or use the Triton SDK container"
    )


def cudart_lib_dir() -> Path | None:
    """The folder holding ``libcudart.so.12`` from the nvidia-cuda-runtime-cu12 wheel, if installed."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(loc) / "lib"
        if (lib / "libcudart.so.12").is_file():
            return lib
    return None


def perf_analyzer_env(base: dict | None = None) -> dict:
    """Environment for perf_analyzer: the 2.50 wheel's binary links ``libcudart.so.12``."""
    env = dict(os.environ if base is None else base)
    lib = cudart_lib_dir()
    if lib is not None:
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        if str(lib) not in parts:
            env["LD_LIBRARY_PATH"] = ":".join([str(lib), *parts])
    return env
