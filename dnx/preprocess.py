"""The ONE ImageNet transform, shared by calibration, parity checks and the client.

It reproduces torchvision's ``Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize``
on PIL images bit for bit (tests compare against torchvision), using only PIL and numpy
so that clients need no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dnx.errors import InputError
from dnx.spec import DEFAULT_MODEL, ModelSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    # Same arithmetic as torchvision.transforms.functional._compute_resized_output_size.
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def preprocess_pil(image, spec: ModelSpec = DEFAULT_MODEL) -> np.ndarray:
    """Turn a PIL image into a normalized float32 CHW array (no batch dimension)."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    image = image.resize(_resized_size(w, h, spec.resize), Image.BILINEAR)
    w, h = image.size
    top = int(round((h - spec.crop) / 2.0))
    left = int(round((w - spec.crop) / 2.0))
    image = image.crop((left, top, left + spec.crop, top + spec.crop))
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def load_image(path: str | os.PathLike, spec: ModelSpec = DEFAULT_MODEL) -> np.ndarray:
    """Read one image file and preprocess it; raises :class:`InputError` if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            return preprocess_pil(img, spec)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; pass image files or use a folder argument") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__}); pass a JPEG or PNG") from None


def find_images(paths, recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders searched at any depth)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            found.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(p)
    return found


def sample_photographs() -> list[Path]:
    """Real colour photographs shipped inside scikit-image's wheel (no download needed)."""
    from dnx._lazy import lazy_import

    skdata = lazy_import("skimage.data")
    root = Path(skdata.__file__).parent
    names = [
        "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
        "motorcycle_right.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "color.png",
    ]
    return [root / n for n in names if (root / n).is_file()]


def photo_batch(spec: ModelSpec = DEFAULT_MODEL, limit: int | None = None) -> np.ndarray:
    """A float32 NCHW batch of the shipped photographs, preprocessed."""
    photos = sample_photographs()[:limit]
    if not photos:
        raise InputError("no sample photographs found; install scikit-image (pip install scikit-image)")
    return np.stack([load_image(p, spec) for p in photos])


def probe_inputs(spec: ModelSpec = DEFAULT_MODEL, random: int = 4, seed: int = 0,
                 photo_limit: int | None = None) -> tuple[np.ndarray, dict]:
    """Real photographs (scikit-image's) plus ``random`` seeded standard-normal inputs, and their description.

    The one probe set: parity inputs, FP16 range probing and ``dnx validate`` all use it.
    """
    photos = photo_batch(spec, limit=photo_limit)
    rand = np.random.default_rng(seed).standard_normal((random, *spec.input_shape)).astype(np.float32)
    data = np.concatenate([photos, rand]) if random else photos
    return data, {"photographs": len(photos), "random": random, "seed": seed, "total": len(data)}
