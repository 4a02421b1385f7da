"""TensorRT engines through Polygraphy's ``TrtRunner`` (needs the TensorRT libraries and an NVIDIA GPU)."""

from __future__ import annotations

import os

from dnx._lazy import lazy_import


def available() -> tuple[bool, str]:
    """``(True, "")`` when TensorRT and a GPU are usable here, else ``(False, why)``."""
    from dnx.exporter.engine import tensorrt_available

    return tensorrt_available()


def runner(plan: bytes | str | os.PathLike, name: str):
    """Polygraphy ``TrtRunner`` of a serialized engine (bytes) or a ``model.plan`` path."""
    lazy_import("tensorrt")
    trt_mod = lazy_import("polygraphy.backend.trt")
    loader = trt_mod.EngineFromBytes(plan) if isinstance(plan, bytes) else trt_mod.EngineFromPath(str(plan))
    return trt_mod.TrtRunner(loader, name=name)
