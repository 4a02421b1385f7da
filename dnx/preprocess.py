"""The ONE ImageNet transform, shared by calibration, parity checks, the client and the server.

It computes torchvision's ``Resize(resize) -> CenterCrop(crop) -> ToTensor() -> Normalize`` of
the photograph as phone galleries and browsers show it (EXIF orientation applied), within a
stated tolerance rather than bit for bit (:data:`TOLERANCE`, tested in tests/preprocess/):

* a large JPEG is decoded at reduced DCT scale (libjpeg-turbo's 1/2, 1/4 or 1/8 through PIL's
  ``draft``), the smallest scale whose short side stays >= :data:`DRAFT_MIN_RATIO` x ``resize``;
  other formats and small JPEGs are decoded fully;
* only the centre-crop region is resized (``resize(box=...)``: the same antialiased filter and
  the same sample positions as resizing the whole image, then cropping), in the stored
  orientation; the 224x224 result is then turned upright;
* normalisation is one multiply and one subtract in place in a (preallocated) CHW float32
  array (differs from torchvision's ``(x / 255 - mean) / std`` by float rounding, ~1e-7).

Bad input is refused with one line each, before any pixel is decoded when the header already
says it is unusable (unsupported format, > :data:`MAX_PIXELS`, decompression bomb, too elongated).

``dnx export`` copies this file, unchanged, beside the model.py of the ``<model>_preprocess``
Python-backend model (as ``dnx_preprocess.py``), so the server decodes and transforms images
with this very code. It must therefore import nothing but PIL, numpy and the standard library
at module level; dnx's own modules are imported only when present.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

try:
    from dnx.errors import InputError
except ImportError:  # copied into a Triton model repository, where dnx is not installed

    class InputError(Exception):
        """An image that cannot be decoded or preprocessed."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
# PIL format names decoded; anything else PIL may open (AVIF, HEIF, JPEG 2000, PSD, ICO...) is
# refused the same way on every machine, whatever plugins its Pillow build happens to carry.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "PPM", "GIF")

# The largest image (in pixels, as its header declares) accepted: above it, decoding alone
# takes seconds and hundreds of MB. The header is read without decoding.
MAX_PIXELS = 50_000_000
# An oversized header that declares more than this many pixels per byte of file is called a
# decompression bomb (real photographs compress < 100:1; a blank 60 MP PNG is ~350:1).
BOMB_PIXELS_PER_BYTE = 1000
# The short side is resized to ``spec.resize``; a very elongated image would be resized to a
# huge strip (20000x30 -> 170666x256) only to keep its centre, so the long side is capped.
MAX_ASPECT = 100
# Reduced-DCT-scale decoding keeps the short side >= this many times ``resize``. Checked on
# the shipped photographs made into 1366x1024..8000x6000 JPEGs (q90, sensor-like noise) against
# the full decode: at 2.0x the worst photo has tensor mean 0.012 / p99.9 0.14 (outside the
# tolerance); at 2.95x (12 MP at 1/4) the tensors are within it (0.005 / 0.035) but centred
# DenseNet-121 logits reach only cosine 0.9994-0.9997; from 3x on (12 MP at 1/2, 5.9x) every
# photograph has cosine >= 0.99997.
DRAFT_MIN_RATIO = 3.0
# What "the same preprocessing" means (normalised units; one pixel level is ~0.017): against
# torchvision's transform on the full decode, per image.
TOLERANCE = {"mean_abs": 0.01, "p99.9_abs": 0.1, "centred_logits_cosine": 0.9999}
ORIENTATION = "EXIF orientation applied (as phone galleries and browsers show the photo); a corrupt EXIF block -> none"

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> PIL transpose method (values of PIL.Image.Transpose) that shows it upright.
_UPRIGHT = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}
_SWAPS_AXES = frozenset((5, 6, 7, 8))
# Containers PIL does not decode here or that dnx refuses: leading bytes -> name.
_ISO_MEDIA_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                     b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    # Same arithmetic as torchvision.transforms.functional._compute_resized_output_size.
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


@dataclass(frozen=True)
class ImageNetTransform:
    """The transform fields :mod:`dnx.spec`'s ``ModelSpec`` carries, for callers that pass no spec.

    This module also runs inside a model repository where dnx is not installed, so it cannot import
    ``dnx.spec``; :data:`DEFAULT_TRANSFORM` is DenseNet-121's, and a test keeps it equal to
    ``dnx.spec.DEFAULT_MODEL``'s fields.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    input_shape: tuple[int, int, int] = (3, 224, 224)


DEFAULT_TRANSFORM = ImageNetTransform()


def _default_spec():
    return DEFAULT_TRANSFORM


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


def exif_orientation(image) -> int:
    """The EXIF orientation (1-8) of a PIL image; 1 when absent, out of range or unreadable."""
    try:
        value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a corrupt EXIF block means "as stored", never a refusal
        return 1
    return value if 1 <= value <= 8 else 1


def draft_scale(width: int, height: int, resize: int) -> int:
    """The DCT scale denominator (8, 4, 2 or 1) to decode a ``width`` x ``height`` JPEG at."""
    for s in (8, 4, 2):
        if min(width, height) >= DRAFT_MIN_RATIO * resize * s:
            return s
    return 1


def _stored_box(box, orientation: int, width: int, height: int) -> tuple[float, float, float, float]:
    """Map a box of the upright picture onto the image as stored (``width`` x ``height``)."""
    x0, y0, x1, y1 = box
    W, H = width, height  # noqa: N806 - the EXIF orientation table reads as the spec writes it
    return {
        1: (x0, y0, x1, y1), 2: (W - x1, y0, W - x0, y1), 3: (W - x1, H - y1, W - x0, H - y0),
        4: (x0, H - y1, x1, H - y0), 5: (y0, x0, y1, x1), 6: (y0, H - x1, y1, H - x0),
        7: (W - y1, H - x1, W - y0, H - x0), 8: (W - y1, x0, W - y0, x1),
    }[orientation]


@lru_cache(maxsize=16)
def _normalise_affine(mean: tuple, std: tuple) -> tuple[np.ndarray, np.ndarray]:
    # (x / 255 - mean) / std as x * a - b: one multiply and one subtract per value, in place.
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return (1.0 / (255.0 * s)).astype(np.float32)[:, None, None], (m / s).astype(np.float32)[:, None, None]


def preprocess_pil(image, spec=None, out: np.ndarray | None = None) -> np.ndarray:
    """Turn a PIL image into a normalized float32 CHW array (no batch dimension).

    ``spec`` is a :class:`dnx.spec.ModelSpec` (or anything with ``resize``, ``crop``,
    ``interpolation``, ``mean`` and ``std``); default: DenseNet-121's. An image not yet loaded
    (fresh from ``Image.open``) that is a large JPEG is decoded at reduced DCT scale. ``out``,
    if given, is the ``[3, crop, crop]`` float32 array written (e.g. one row of a batch).
    """
    spec = spec or _default_spec()
    width, height = image.size  # as stored, before any reduced-scale decoding
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"image is {width}x{height}, more than {MAX_ASPECT}:1; crop it to a less elongated picture")
    scale = 1.0
    if image.format in ("JPEG", "MPO") and getattr(image, "tile", None):
        s = draft_scale(width, height, spec.resize)
        drafted = image.draft("RGB", (width // s, height // s)) if s > 1 else None
        if drafted is not None:
            scale = width / drafted[1][2]
    image.load()
    orientation = exif_orientation(image)
    if image.mode not in ("RGB", "L"):
        image = to_rgb(image)
    # The centre crop of the upright picture resized as torchvision would, in its coordinates...
    upright = (height, width) if orientation in _SWAPS_AXES else (width, height)
    new_w, new_h = _resized_size(*upright, spec.resize)
    crop = spec.crop
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    sx, sy = upright[0] / new_w, upright[1] / new_h
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    # ...mapped onto the stored (and possibly reduced) image, resized there, then turned upright.
    box = tuple(v / scale for v in _stored_box(box, orientation, width, height))
    small = image.resize((crop, crop), _resample(getattr(spec, "interpolation", "bilinear")), box=box)
    if orientation != 1:
        small = small.transpose(_UPRIGHT[orientation])
    if small.mode != "RGB":
        small = small.convert("RGB")
    pixels = np.asarray(small)
    if out is None:
        out = np.empty((3, crop, crop), dtype=np.float32)
    scale_, shift = _normalise_affine(tuple(map(float, spec.mean)), tuple(map(float, spec.std)))
    out[...] = pixels.transpose(2, 0, 1)
    out *= scale_
    out -= shift
    return out


def _unsupported(data: bytes) -> str | None:
    """The name of a container dnx does not decode, recognised by its leading bytes."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return _ISO_MEDIA_BRANDS.get(brand, f"ISO media ({brand.decode('ascii', 'replace')!r})")
    for magic, name in ((b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (b"\xff\x0a", "JPEG XL"),
                        (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"), (b"%PDF", "PDF")):
        if data.startswith(magic):
            return name
    return None


def unsupported_message(name: str) -> str:
    """The one-line refusal of an image format dnx does not decode."""
    return f"unsupported format ({name}), send JPEG, PNG or WebP"


def check_header(image, nbytes: int | None = None) -> None:
    """Refuse, from the header alone (nothing decoded), a format, size or shape dnx does not take.

    ``nbytes`` (the encoded size) tells a decompression bomb (a small file declaring a huge
    picture) from an honest oversized photograph; both are refused.
    """
    if image.format not in ACCEPTED_FORMATS:
        raise InputError(unsupported_message(image.format or "unknown"))
    w, h = image.size
    if w * h > MAX_PIXELS:
        if nbytes is not None and w * h > BOMB_PIXELS_PER_BYTE * nbytes:
            raise InputError(f"decompression bomb refused before decoding: a {nbytes}-byte file declares {w}x{h} "
                             f"({w * h / 1e6:.0f} MP); send a real image of at most {MAX_PIXELS / 1e6:.0f} MP")
        raise InputError(f"image is {w}x{h} ({w * h / 1e6:.0f} MP), above the {MAX_PIXELS / 1e6:.0f} MP limit; send a smaller image")


def _bomb(nbytes: int) -> InputError:
    from PIL import Image

    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
    return InputError(f"decompression bomb refused before decoding: a {nbytes}-byte file declares more than "
                      f"{limit:.0f} MP; send a real image of at most {MAX_PIXELS / 1e6:.0f} MP")


def preprocess_bytes(data: bytes, spec=None, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one encoded image (JPEG, PNG, WebP, ...) and preprocess it like :func:`load_image`.

    Raises :class:`InputError` with a one-line reason for empty, corrupt, truncated, oversized,
    unsupported or non-image data. ``out`` as in :func:`preprocess_pil`.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("empty image (0 bytes); send the encoded JPEG/PNG/WebP file contents")
    name = _unsupported(data[:16])
    if name is not None:
        raise InputError(unsupported_message(name))
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_header(img, len(data))
            return preprocess_pil(img, spec, out)
    except UnidentifiedImageError:
        raise InputError(f"not a decodable image ({len(data)} bytes, starts {data[:8]!r}); send JPEG, PNG or WebP bytes") from None
    except Image.DecompressionBombError:
        raise _bomb(len(data)) from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data inside a known format
        raise InputError(f"corrupt or truncated image ({str(exc)[:120] or exc.__class__.__name__}); send the complete file") from None


def load_image(path: str | os.PathLike, spec=None, out: np.ndarray | None = None) -> np.ndarray:
    """Read one image file and preprocess it; raises :class:`InputError` if it is not an image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; pass image files or use a folder argument") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.__class__.__name__}); check its permissions") from None
    try:
        return preprocess_bytes(data, spec, out)
    except InputError as exc:
        raise InputError(f"{path}: not a readable image: {exc}") from None


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
