"""The ONE ImageNet transform, shared by calibration, parity checks and the client.

It reproduces torchvision's ``Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize``
on PIL images bit for bit (tests compare against torchvision), using only PIL and numpy
so that clients need no torch.

``dnx export`` copies this file, unchanged, beside the model.py of the ``<model>_preprocess``
Python-backend model (as ``dnx_preprocess.py``), so the server decodes and transforms images
with this very code. It must therefore import nothing but PIL, numpy and the standard library
at module level; dnx's own modules are imported only when present.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

try:
    from dnx.errors import InputError
except ImportError:  # copied into a Triton model repository, where dnx is not installed

    class InputError(Exception):
        """An image that cannot be decoded or preprocessed."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    # Same arithmetic as torchvision.transforms.functional._compute_resized_output_size.
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


# The largest image (in pixels, after decoding) the server accepts: above it, decoding alone
# takes seconds and hundreds of MB. PIL's own bomb check starts at 2x its MAX_IMAGE_PIXELS.
MAX_PIXELS = 50_000_000
# The short side is resized to ``spec.resize``; a very elongated image would be resized to a
# huge strip (20000x30 -> 170666x256) only to keep its centre, so the long side is capped.
MAX_ASPECT = 100


def _default_spec():
    from dnx.spec import DEFAULT_MODEL

    return DEFAULT_MODEL


def _resample(name: str):
    from PIL import Image

    modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
    try:
        return modes[str(name).lower()]
    except KeyError:
        raise InputError(f"unknown interpolation {name!r}; use one of {', '.join(modes)}") from None


def to_rgb(image):
    """8-bit RGB view of any PIL mode: 16/32-bit grayscale is scaled (not clipped) to 8 bits."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image)
        peak = 65535 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        arr = np.clip(arr.astype(np.float64) * (255.0 / peak), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(arr, "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess_pil(image, spec=None) -> np.ndarray:
    """Turn a PIL image into a normalized float32 CHW array (no batch dimension).

    ``spec`` is a :class:`dnx.spec.ModelSpec` (or anything with ``resize``, ``crop``,
    ``interpolation``, ``mean`` and ``std``); default: DenseNet-121's.
    """
    spec = spec or _default_spec()
    image = to_rgb(image)
    w, h = image.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise InputError(f"image is {w}x{h}, more than {MAX_ASPECT}:1; crop it to a less elongated picture")
    image = image.resize(_resized_size(w, h, spec.resize), _resample(getattr(spec, "interpolation", "bilinear")))
    w, h = image.size
    top = int(round((h - spec.crop) / 2.0))
    left = int(round((w - spec.crop) / 2.0))
    image = image.crop((left, top, left + spec.crop, top + spec.crop))
    # ToTensor then Normalize, in their order and in float32 (so the values are torchvision's to
    # the bit), computed in place on the CHW array: one allocation instead of four.
    arr = np.empty((3, spec.crop, spec.crop), dtype=np.float32)
    arr[...] = np.asarray(image).transpose(2, 0, 1)
    arr /= np.float32(255.0)
    arr -= np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    arr /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return arr


def preprocess_bytes(data: bytes, spec=None) -> np.ndarray:
    """Decode one encoded image (JPEG, PNG, WebP, ...) and preprocess it like :func:`load_image`.

    Raises :class:`InputError` with a one-line reason for empty, corrupt, truncated, oversized
    or non-image data.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("empty image (0 bytes); send the encoded JPEG/PNG/WebP file contents")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise InputError(f"image is {w}x{h} ({w * h / 1e6:.0f} MP), above the {MAX_PIXELS / 1e6:.0f} MP limit; send a smaller image")
            img.load()
            return preprocess_pil(img, spec)
    except UnidentifiedImageError:
        raise InputError(f"not a decodable image ({len(data)} bytes, starts {data[:8]!r}); send JPEG, PNG or WebP bytes") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image too large ({exc}); send a smaller image") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data inside a known format
        raise InputError(f"corrupt or truncated image ({str(exc)[:120] or exc.__class__.__name__}); send the complete file") from None


def load_image(path: str | os.PathLike, spec=None) -> np.ndarray:
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


def photo_batch(spec=None, limit: int | None = None) -> np.ndarray:
    """A float32 NCHW batch of the shipped photographs, preprocessed."""
    photos = sample_photographs()[:limit]
    if not photos:
        raise InputError("no sample photographs found; install scikit-image (pip install scikit-image)")
    return np.stack([load_image(p, spec) for p in photos])


def probe_inputs(spec=None, random: int = 4, seed: int = 0,
                 photo_limit: int | None = None) -> tuple[np.ndarray, dict]:
    """Real photographs (scikit-image's) plus ``random`` seeded standard-normal inputs, and their description.

    The one probe set: parity inputs, FP16 range probing and ``dnx validate`` all use it.
    """
    spec = spec or _default_spec()
    photos = photo_batch(spec, limit=photo_limit)
    rand = np.random.default_rng(seed).standard_normal((random, *spec.input_shape)).astype(np.float32)
    data = np.concatenate([photos, rand]) if random else photos
    return data, {"photographs": len(photos), "random": random, "seed": seed, "total": len(data)}
