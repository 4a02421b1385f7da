"""``dnx-manifest.json``: what was built, from what, with which versions and figures.

:class:`Manifest` and :class:`ModelRecord` are the typed view every reader uses
(:func:`load_manifest`); keys they do not name (``tune``, ``bench``, ``onnx`` ... records added by
later commands) are kept in ``extra`` and written back unchanged, so a round trip loses nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from dnx import __version__
from dnx.cpu import this_cpu
from dnx.errors import InputError
from dnx.model_repository.layout import MANIFEST_NAME, atomic_write_text

_VERSIONED = ("torch", "torchvision", "onnx", "onnxruntime", "openvino", "polygraphy", "tritonclient",
              "nvidia-pytriton", "numpy")


_INTERNAL = ("name", "extra", "order")


def _split(cls, data: dict) -> tuple[dict, dict]:
    """``data`` split into the dataclass fields of ``cls`` and everything else (kept as ``extra``)."""
    names = {f.name for f in fields(cls)} - set(_INTERNAL)
    known = {k: v for k, v in data.items() if k in names}
    return known, {k: v for k, v in data.items() if k not in names}


def _to_dict(record, default_order: tuple[str, ...], values: dict) -> dict:
    """Keys in the order they were read (else ``default_order``).

    A record read from a file writes back the keys it had, plus fields set since; a new one writes
    every field (``None`` included, as export always has).
    """
    order = list(record.order or default_order)
    order += [k for k in (*values, *record.extra) if k not in order]
    out = {}
    for key in order:
        if key in values:
            if not record.order or key in record.order or values[key] not in (None, {}, []):
                out[key] = values[key]
        elif key in record.extra:
            out[key] = record.extra[key]
    return out


@dataclass
class ModelRecord:
    """One model of the repository, as ``manifest["models"][<name>]`` records it."""

    name: str
    runtime: str | None = None
    precision: str | None = None
    backend: str | None = None
    platform: str | None = None
    target: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # "1/model.onnx" -> sha256
    opset: int | None = None
    config: dict[str, Any] = field(default_factory=dict)  # max_batch_size, instance_count, parameters, ...
    parity: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # onnx / openvino / tensorrt / tune / bench ... records
    order: tuple[str, ...] = field(default=(), repr=False, compare=False)  # key order as read

    @classmethod
    def from_dict(cls, name: str, data: dict) -> "ModelRecord":
        """The record of model ``name`` from its manifest block (unknown keys go to ``extra``)."""
        data = data if isinstance(data, dict) else {}
        known, extra = _split(cls, data)
        return cls(name=name, **known, extra=extra, order=tuple(data))

    def to_dict(self) -> dict:
        """The manifest block: the named fields, then ``extra`` unchanged."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _INTERNAL}
        return _to_dict(self, tuple(values), values)

    @property
    def passed(self) -> bool:
        """False only when the export recorded a failed parity gate."""
        return (self.parity or {}).get("passed", True) is not False

    @property
    def max_batch_size(self) -> int:
        """The config's ``max_batch_size`` (1 when not recorded)."""
        return int(self.config.get("max_batch_size") or 1)

    @property
    def parameters(self) -> dict[str, str]:
        """The config's ``parameters`` (runtime options), a copy."""
        return dict(self.config.get("parameters") or {})

    def get(self, key: str, default=None):
        """A named field or an ``extra`` record by key (``record.get("tensorrt")``)."""
        if key in self.extra:
            return self.extra[key]
        return getattr(self, key, default) if key in {f.name for f in fields(self)} else default


@dataclass
class Manifest:
    """The whole ``dnx-manifest.json`` of one repository."""

    model: str | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    parity: dict | None = None
    calibration: dict | None = None
    ensemble: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # dnx_version, built_at, host, versions, tuning, ...
    order: tuple[str, ...] = field(default=(), repr=False, compare=False)  # key order as read

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """The typed manifest of a parsed JSON object (unknown keys go to ``extra``)."""
        known, extra = _split(cls, data)
        models = {n: ModelRecord.from_dict(n, e) for n, e in (known.pop("models", None) or {}).items()}
        return cls(**known, models=models, extra=extra, order=tuple(data))

    def to_dict(self) -> dict:
        """The JSON object, keys in the order read (new manifests: the order export writes them)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _INTERNAL}
        values["models"] = {n: m.to_dict() for n, m in self.models.items()}
        for key in ("parity", "calibration", "ensemble"):  # added by export only when there is one
            if values[key] is None and key not in self.order:
                del values[key]
        return _to_dict(self, _ORDER, values)


_ORDER = ("dnx_version", "built_at", "model", "weights", "preprocessing", "options", "host", "versions", "models",
          "stages", "parity", "calibration", "ensemble")


# Per model record: the sha256 of every file beside the model files that dnx wrote for it
# (``config.pbtxt``, ``labels.txt``; ``config.pbtxt`` again and ``config.pbtxt.orig`` once
# `dnx tune` rewrote the config), so `dnx publish` can verify every file it uploads.
CONFIG_FILES = "config_files"


def recorded_files(manifest: Manifest) -> dict[str, str]:
    """Every repository path the manifest records a sha256 for (``model/1/model.onnx`` -> sha256).

    The variants' model files and config files, the ensemble's three models, the golden file.
    The manifest itself is the root of this list and is not in it.
    """
    out: dict[str, str] = {}
    for name, record in manifest.models.items():
        for rel, digest in record.files.items():
            out[f"{name}/{rel}"] = digest
        for rel, digest in (record.extra.get(CONFIG_FILES) or {}).items():
            out[f"{name}/{rel}"] = digest
    out.update((manifest.ensemble or {}).get("files") or {})
    golden = manifest.extra.get("golden")
    if isinstance(golden, dict) and golden.get("file") and golden.get("sha256"):
        out[golden["file"]] = golden["sha256"]
    return out


def library_versions(names=_VERSIONED) -> dict[str, str | None]:
    """Installed versions of the libraries that shape the artifacts and the measurements (None when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def new_manifest(spec, weights: dict, options: dict) -> Manifest:
    """A manifest skeleton for one export run."""
    return Manifest(
        model=spec.name, weights=weights, options=options,
        extra={"dnx_version": __version__,
               "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "preprocessing": spec.preprocessing(),
               "host": {"python": platform.python_version(), "machine": platform.machine(),
                        "system": platform.system(), "cpu": this_cpu().to_dict()},
               "versions": library_versions()},
    )


def write_manifest(repo: Path, manifest: Manifest | dict) -> Path:
    """Write ``<repo>/dnx-manifest.json`` atomically."""
    data = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    path = Path(repo) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def load_manifest(repo: str | os.PathLike, *, required: bool = True) -> Manifest | None:
    """Read ``<repo>/dnx-manifest.json`` as a :class:`Manifest`: the one reader.

    A missing manifest raises :class:`InputError` when ``required``, else returns None (a
    repository dnx did not build can still be served and measured). A corrupt one always raises.
    """
    data = read_manifest(repo, required=required)
    return None if data is None else Manifest.from_dict(data)


def read_manifest(repo: str | os.PathLike, *, required: bool = True) -> dict | None:
    """The manifest as the plain JSON object (compatibility; new code uses :func:`load_manifest`)."""
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
    if not isinstance(data.get("models", {}), dict):
        raise InputError(f"{path} has no valid \"models\" object; rebuild the repository with `dnx export`")
    return data


def calibration_summary(manifest: Manifest | dict) -> str:
    """One line on how the repository's INT8 models were calibrated, flagging non-production data."""
    c = manifest.calibration if isinstance(manifest, Manifest) else manifest.get("calibration")
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
        manifest = load_manifest(repo, required=False)
    except InputError:
        manifest = None
    if manifest is None:
        return f"unknown ({Path(repo) / MANIFEST_NAME} missing or unreadable)"
    return calibration_summary(manifest)
