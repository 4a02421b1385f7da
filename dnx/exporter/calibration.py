"""INT8 calibration data and the cache of calibrated models.

Calibration images go through :func:`dnx.preprocess.load_image`, the same transform as
inference, so the ranges the quantizer measures are the ranges the server will see.
The set is described by a hash of its preprocessed tensor bytes; together with the source
ONNX hash, the method and the sample count it keys a cache of quantized models, so a rerun
with the same inputs skips calibration.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dnx.hashing import sha256_file  # noqa: F401 - re-exported for the converters
from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_bytes, atomic_write_text
from dnx.preprocess import find_images, load_image
from dnx.spec import DEFAULT_MODEL, ModelSpec

CALIB_METHODS = ("max", "entropy", "percentile")
DEFAULT_METHOD = "max"
DEFAULT_SAMPLES = 512
DEFAULT_SEED = 0
DEFAULT_CACHE_DIR = Path(".dnx-cache") / "calib"

# ONNX Runtime CalibrationMethod member for each --calib-method value.
ORT_METHODS = {"max": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def sha256_array(data: np.ndarray) -> str:
    """Hex sha256 of an array's dtype, shape and bytes (C order)."""
    h = hashlib.sha256(f"{data.dtype.str}{tuple(data.shape)}".encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def check_method(method: str) -> str:
    """Return ``method`` if it is a known calibration method, else raise :class:`InputError`."""
    if method not in CALIB_METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIB_METHODS)}")
    return method


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (stdout stays clean for machine-readable output)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, leave=False)


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Preprocessed calibration tensors plus what the manifest records about them."""

    data: np.ndarray  # float32 [N, C, H, W]
    source: str  # the --calib-dir, or "synthetic"
    synthetic: bool
    seed: int
    files: tuple[str, ...] = ()  # chosen images, relative to source
    available: int = 0  # images found under source
    unreadable: tuple[str, ...] = ()  # image files skipped because they could not be read
    sha256: str = field(default="")

    def __post_init__(self):
        if not self.sha256:
            object.__setattr__(self, "sha256", sha256_array(self.data))

    @property
    def count(self) -> int:
        """Number of calibration samples."""
        return int(self.data.shape[0])

    def describe(self, method: str | None = None) -> dict:
        """The manifest's ``calibration`` block: count, hash, method, synthetic, source."""
        info = {
            "count": self.count,
            "sha256": self.sha256,
            "synthetic": self.synthetic,
            "source": self.source,
            "seed": self.seed,
            "images_found": self.available,
            "preprocessing": "dnx.preprocess.load_image (same as inference)" if not self.synthetic else "none (standard normal)",
        }
        if self.unreadable:
            info["unreadable_files"] = list(self.unreadable)
        if method is not None:
            info["method"] = method
        return info

    def reader(self, input_name: str, start: int = 0, stop: int | None = None, bar=None):
        """An ONNX Runtime calibration data reader over samples ``[start, stop)``, one per call."""
        return _Reader(self.data[start:stop], input_name, bar)


class _Reader:
    """Duck-typed ``onnxruntime.quantization.CalibrationDataReader`` (only ``get_next`` is called)."""

    def __init__(self, data: np.ndarray, input_name: str, bar=None):
        self._data, self._name, self._bar, self._i = data, input_name, bar, 0

    def get_next(self):
        if self._i >= len(self._data):
            return None
        feed = {self._name: self._data[self._i : self._i + 1]}
        self._i += 1
        if self._bar is not None:
            self._bar.update(1)
        return feed


def choose_samples(files: list[Path], samples: int, seed: int) -> list[Path]:
    """A seeded choice of ``samples`` files, kept in sorted order (all of them if fewer)."""
    if samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    if samples >= len(files):
        return list(files)
    idx = np.random.default_rng(seed).choice(len(files), size=samples, replace=False)
    return [files[i] for i in sorted(idx)]


def calibration_set(
    calib_dir: str | os.PathLike | None = None,
    samples: int = DEFAULT_SAMPLES,
    *,
    seed: int = DEFAULT_SEED,
    synthetic: bool = False,
    spec: ModelSpec = DEFAULT_MODEL,
    progress: bool = True,
) -> CalibrationSet:
    """Load the calibration set from ``calib_dir`` (images at any depth), or synthetic data.

    ``samples`` images are chosen with ``seed`` when the folder holds more. When there are no
    images, ``synthetic=True`` falls back to seeded standard-normal tensors, flagged
    ``synthetic`` so every report says so; without it, :class:`InputError` is raised.
    """
    if samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    found: list[Path] = []
    if calib_dir is not None:
        root = Path(calib_dir)
        if not root.is_dir():
            raise InputError(f"--calib-dir {root}: not a folder; pass a folder of JPEG/PNG photographs")
        found = find_images([root])
        if not found and not synthetic:
            raise InputError(
                f"--calib-dir {root}: no JPEG/PNG images found (searched all subfolders); "
                "add photographs or pass --calib-synthetic"
            )
    if not found:
        if not synthetic:
            raise InputError(
                "INT8 needs calibration images: pass --calib-dir <folder of JPEG/PNG photographs> "
                "(or --calib-synthetic for random data, unfit for production)"
            )
        data = np.random.default_rng(seed).standard_normal((samples, *spec.input_shape)).astype(np.float32)
        return CalibrationSet(data=data, source="synthetic", synthetic=True, seed=seed)

    # Unreadable files are skipped (named in the manifest); replacements come from the rest of
    # the seeded order, so one corrupt file neither aborts calibration nor shrinks the set.
    order = choose_samples(found, len(found), seed) if samples >= len(found) else _seeded_order(found, seed)
    loaded, skipped = [], []
    with progress_bar(min(samples, len(found)), "loading calibration images", progress) as bar:
        for path in order:
            if len(loaded) == samples:
                break
            try:
                loaded.append((path, load_image(path, spec)))
            except InputError:
                skipped.append(str(path.relative_to(root)))
                continue
            bar.update(1)
    if not loaded:
        raise InputError(f"--calib-dir {root}: none of the {len(found)} image files could be read "
                         f"(e.g. {skipped[0]}); pass JPEG/PNG photographs")
    loaded.sort(key=lambda item: item[0])
    return CalibrationSet(
        data=np.stack([arr for _, arr in loaded]),
        source=str(root),
        synthetic=False,
        seed=seed,
        files=tuple(str(p.relative_to(root)) for p, _ in loaded),
        available=len(found),
        unreadable=tuple(skipped),
    )


def _seeded_order(files: list[Path], seed: int) -> list[Path]:
    """All ``files`` in a seeded random order; its first N are :func:`choose_samples`' N (as a set)."""
    perm = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in perm]


def cache_key(source_sha256: str, calib: CalibrationSet, method: str, recipe: dict) -> str:
    """Cache key: source ONNX hash, calibration-set hash, method, sample count and quantizer recipe."""
    blob = json.dumps(
        {
            "source": source_sha256,
            "calibration": calib.sha256,
            "method": method,
            "count": calib.count,
            "recipe": recipe,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class CalibrationCache:
    """Calibrated INT8 models under ``<root>/<key>/`` (``model.onnx``, ``ranges.json``, ``meta.json``).

    ``meta.json`` is written last, so an entry without it (an interrupted run) is ignored;
    an entry whose model hash does not match its meta is ignored too.
    """

    MODEL, RANGES, META = "model.onnx", "ranges.json", "meta.json"

    def __init__(self, root: str | os.PathLike = DEFAULT_CACHE_DIR):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        """Folder of one cache entry."""
        return self.root / key[:32]

    def get(self, key: str) -> tuple[Path, dict] | None:
        """``(model path, meta)`` of a complete, intact entry, else ``None``."""
        folder = self.entry(key)
        try:
            meta = json.loads((folder / self.META).read_text())
        except (OSError, ValueError):
            return None
        model = folder / self.MODEL
        if meta.get("key") != key or not model.is_file() or sha256_file(model) != meta.get("sha256"):
            return None
        return model, meta

    def put(self, key: str, model_path: Path, ranges_path: Path | None, meta: dict) -> Path:
        """Store a quantized model (and its calibration ranges); returns the cached model path."""
        folder = self.entry(key)
        try:
            if folder.exists():
                shutil.rmtree(folder)
            atomic_write_bytes(folder / self.MODEL, Path(model_path).read_bytes())
            if ranges_path is not None and Path(ranges_path).is_file():
                atomic_write_bytes(folder / self.RANGES, Path(ranges_path).read_bytes())
            meta = {**meta, "key": key, "sha256": sha256_file(folder / self.MODEL)}
            atomic_write_text(folder / self.META, json.dumps(meta, indent=2, sort_keys=True))
        except OSError as exc:
            raise InputError(f"cannot write the calibration cache at {folder} ({exc}); pass a writable cache folder") from None
        return folder / self.MODEL
