"""``dnx-manifest.json``: what was built, from what, with which versions and figures."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from dnx import __version__
from dnx.errors import InputError
from dnx.model_repository.layout import MANIFEST_NAME, atomic_write_text

_VERSIONED = ("torch", "torchvision", "onnx", "onnxruntime", "openvino", "polygraphy", "tritonclient",
              "nvidia-pytriton", "numpy")


def library_versions(names=_VERSIONED) -> dict[str, str | None]:
    """Installed versions of the libraries that shape the artifacts and the measurements (None when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def new_manifest(spec, weights: dict, options: dict) -> dict:
    """A manifest skeleton for one export run."""
    return {
        "dnx_version": __version__,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec.name,
        "weights": weights,
        "preprocessing": spec.preprocessing(),
        "options": options,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        "versions": library_versions(),
        "models": {},
        "stages": [],
    }


def write_manifest(repo: Path, manifest: dict) -> Path:
    """Write ``<repo>/dnx-manifest.json`` atomically."""
    path = Path(repo) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(repo: str | os.PathLike, *, required: bool = True) -> dict | None:
    """Read ``<repo>/dnx-manifest.json``.

    A missing manifest raises :class:`InputError` when ``required``, else returns None (a
    repository dnx did not build can still be served and measured). A corrupt one always raises.
    """
    path = Path(repo) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        if not required:
            return None
        raise InputError(f"{path} not found; build the repository first with `dnx export`") from None
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise InputError(f"{path} is unreadable or corrupt ({exc}); rebuild the repository with `dnx export`") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a dnx manifest (a JSON object); rebuild the repository with `dnx export`")
    return data


def calibration_summary(manifest: dict) -> str:
    """One line on how the repository's INT8 models were calibrated, flagging non-production data."""
    c = manifest.get("calibration")
    if not c:
        return "no INT8 model (nothing calibrated)"
    kind = c.get("kind") or ("synthetic" if c.get("synthetic") else "images")
    demo = {"bundled": c.get("source", "bundled photographs"), "synthetic": "SYNTHETIC random tensors (not production)"}
    what = demo.get(kind) or f"images from {c.get('source')}"
    line = f"INT8 calibrated on {c.get('count', '?')} {what}, {c.get('method', '?')} ranges"
    return line + ("; re-export with --calib-dir <your images> for production" if kind in demo else "")


def repository_calibration(repo: Path) -> str:
    """:func:`calibration_summary` of the repository at ``repo`` (says so when it has no readable manifest)."""
    try:
        manifest = read_manifest(repo, required=False)
    except InputError:
        manifest = None
    if manifest is None:
        return f"unknown ({Path(repo) / MANIFEST_NAME} missing or unreadable)"
    return calibration_summary(manifest)
