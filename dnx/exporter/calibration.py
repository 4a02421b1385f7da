"""INT8 calibration data and the cache of calibrated models.

Without ``--calib-dir`` the images bundled with scikit-image (a few dozen generic photographs
installed with dnx) are used, and every record of the set says so: such scales are a demo,
not a production calibration.

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

# The manifest's ``calibration.source`` when no --calib-dir was given.
BUNDLED_SOURCE = "bundled scikit-image photographs (generic, not production)"
NO_BUNDLED_IMAGES = ("INT8 needs calibration images and scikit-image's bundled photographs were not found: "
                     "pass --calib-dir <folder of JPEG/PNG photographs> (or pip install scikit-image, "
                     "or --calib-synthetic for random data, unfit for production)")

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
    source: str  # the --calib-dir, BUNDLED_SOURCE, or "synthetic"
    synthetic: bool
    seed: int
    files: tuple[str, ...] = ()  # chosen images, relative to source
    available: int = 0  # images found under source
    unreadable: tuple[str, ...] = ()  # image files skipped because they could not be read
    sha256: str = field(default="")
    kind: str = ""  # "images" (a --calib-dir), "bundled" (scikit-image's photographs) or "synthetic"
    folder: str = ""  # where the images were read from

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", "synthetic" if self.synthetic else "images")
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
            "kind": self.kind,
            "production": self.kind == "images",
            "seed": self.seed,
            "images_found": self.available,
            "preprocessing": "dnx.preprocess.load_image (same as inference)" if not self.synthetic else "none (standard normal)",
        }
        if self.folder and self.folder != self.source:
            info["folder"] = self.folder
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
    """Load the calibration set from ``calib_dir`` (images at any depth), or the bundled photographs.

    ``samples`` images are chosen with ``seed`` when the folder holds more. Without
    ``calib_dir``, scikit-image's bundled photographs are used (``kind="bundled"``), unless
    ``synthetic=True`` asks for seeded standard-normal tensors; a ``calib_dir`` without images
    falls back to those too with ``synthetic=True``, else :class:`InputError` is raised.
    Bundled and synthetic sets are flagged so every report says they are not production data.
    """
    if samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    found: list[Path] = []
    kind = "images"
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
    elif not synthetic:
        root, kind = bundled_photographs_dir(), "bundled"
        found = bundled_photographs()
        if not found:
            raise InputError(NO_BUNDLED_IMAGES)
    if not found:
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
        source=BUNDLED_SOURCE if kind == "bundled" else str(root),
        synthetic=False,
        kind=kind,
        folder=str(root),
        seed=seed,
        files=tuple(str(p.relative_to(root)) for p, _ in loaded),
        available=len(found),
        unreadable=tuple(skipped),
    )


def bundled_photographs_dir() -> Path | None:
    """scikit-image's ``data`` folder (photographs shipped in its wheel), found without importing it."""
    import importlib.util

    found = importlib.util.find_spec("skimage")
    for location in (found.submodule_search_locations or []) if found else []:
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    return None


def bundled_photographs() -> list[Path]:
    """The image files of :func:`bundled_photographs_dir` (the default calibration set).

    Its TIFFs are multi-page test stacks, not photographs (one of them PIL cannot read), so
    they are left out and the count the warning gives is the count calibrated on.
    """
    folder = bundled_photographs_dir()
    found = find_images([folder]) if folder is not None else []
    return [p for p in found if p.suffix.lower() not in (".tif", ".tiff")]


def bundled_warning(count: int) -> str:
    """The one warning line printed when INT8 falls back to the bundled photographs."""
    return (f"INT8 calibrates on the {count} generic sample photographs bundled with scikit-image, not on "
            "your data: fine for a demo, not for production; pass --calib-dir <folder of your own images>")


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
