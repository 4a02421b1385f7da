"""A real mix of photographs for measuring the bytes-in path (the ``<model>`` ensemble).

The default mix is the photographs shipped in scikit-image's wheel as JPEG files (web-image
sizes, 300x225 to 1500x1000) plus one generated 12 MP phone photo (4032x3024, the size of most
phone cameras); ``photos_dir`` replaces it with a folder of the user's own images. The mix is
written as a perf_analyzer ``--input-data`` JSON for the ensemble's BYTES input, so a measured
throughput is for real image sizes.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_text
from dnx.preprocess import find_images, sample_photographs

PHONE_SIZE = (4032, 3024)
PHONE_QUALITY = 90
# Sensor-like noise (standard deviation in 8-bit levels) on generated photographs: an upscaled
# picture is smoother than a phone photo, and smooth pictures flatter reduced-scale decoding.
NOISE_LEVELS = 3.0
# perf_analyzer reads the whole JSON into memory and every request sends one entry.
MAX_MIX_BYTES = 512 << 20
# The file a sweep or a tune writes the mix to in its output folder, for perf_analyzer --input-data.
MIX_INPUT_DATA = "input-data-photos.json"


def synthesize(size: tuple[int, int], source: str | Path | None = None, *, quality: int = PHONE_QUALITY,
               seed: int = 0, orientation: int = 1, fmt: str = "JPEG") -> bytes:
    """An encoded ``size`` (width, height) photograph made from a real one.

    ``source`` (default: scikit-image's astronaut) is centre-cropped to the aspect ratio,
    resized with Lanczos, given :data:`NOISE_LEVELS` of seeded noise and encoded as ``fmt``.
    ``orientation`` (2-8) stores the picture transposed, with that EXIF tag, so that a viewer
    that honours the tag shows it upright.
    """
    import numpy as np
    from PIL import Image


    src = Path(source) if source is not None else next(p for p in sample_photographs() if p.name == "astronaut.png")
    w, h = size
    with Image.open(src) as img:
        img = img.convert("RGB")
    sw, sh = img.size
    cw, ch = (sw, round(sw * h / w)) if sw * h <= sh * w else (round(sh * w / h), sh)
    left, top = (sw - cw) // 2, (sh - ch) // 2
    img = img.resize((w, h), Image.LANCZOS, box=(left, top, left + cw, top + ch))
    # One seeded 521x521 noise tile (a prime, so it does not line up with 8x8 JPEG blocks)
    # repeated in strips: noise for every pixel of 8000x6000 would take seconds and 576 MB.
    tile = np.random.default_rng(seed).normal(0.0, NOISE_LEVELS, (521, 521, 3)).round().astype(np.int16)
    band = np.tile(tile, (1, -(-w // 521), 1))[:, :w]
    pixels = np.array(img)
    for y in range(0, h, 521):
        strip = pixels[y : y + 521]
        strip[...] = np.clip(strip + band[: len(strip)], 0, 255)
    img = Image.fromarray(pixels)
    kwargs: dict = {"quality": quality} if fmt.upper() in ("JPEG", "WEBP") else {}
    if orientation != 1:
        # Stored = the inverse of the transpose that the tag asks a viewer to apply.
        inverse = {2: 0, 3: 3, 4: 1, 5: 5, 6: 2, 7: 6, 8: 4}[orientation]
        img = img.transpose(inverse)
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def shipped_jpegs() -> list[tuple[str, bytes]]:
    """``[(name, JPEG bytes)]``: scikit-image's photographs, JPEGs as shipped, the rest encoded at q90."""
    from PIL import Image


    out = []
    for path in sample_photographs():
        if path.suffix.lower() in (".jpg", ".jpeg"):
            out.append((path.name, path.read_bytes()))
            continue
        buf = io.BytesIO()
        with Image.open(path) as img:
            img.convert("RGB").save(buf, "JPEG", quality=PHONE_QUALITY)
        out.append((path.with_suffix(".jpg").name, buf.getvalue()))
    if not out:
        raise InputError("no sample photographs found; install scikit-image (pip install scikit-image)")
    return out


def photo_mix(photos_dir: str | Path | None = None, *, phone: bool = True) -> list[tuple[str, bytes]]:
    """The photographs a bytes-in measurement sends: ``[(name, encoded bytes)]``.

    ``photos_dir``: every image file under it (any depth), as stored; else :func:`shipped_jpegs`
    plus, with ``phone``, one generated 4032x3024 phone JPEG.
    """

    if photos_dir is None:
        mix = shipped_jpegs()
        return mix + [("phone_4032x3024.jpg", synthesize(PHONE_SIZE))] if phone else mix
    root = Path(photos_dir)
    if not root.is_dir():
        raise InputError(f"--photos {root}: not a folder; pass a folder of JPEG/PNG/WebP photographs")
    files = find_images([root])
    if not files:
        raise InputError(f"--photos {root}: no JPEG/PNG/WebP images found (searched all subfolders); add photographs")
    mix, total = [], 0
    for f in files:
        data = f.read_bytes()
        total += len(data)
        if total > MAX_MIX_BYTES:
            raise InputError(f"--photos {root}: more than {MAX_MIX_BYTES >> 20} MB of images; pass a folder with fewer")
        mix.append((str(f.relative_to(root)), data))
    return mix


def write_input_data(path: str | Path, input_name: str, photos: list[tuple[str, bytes]]) -> Path:
    """Write perf_analyzer ``--input-data`` JSON: one batch-1 request per photograph, cycled through.

    Each entry's ``b64`` is the raw BYTES tensor, Triton's serialization of one string
    element: a 4-byte little-endian length, then the encoded image.
    """

    if not photos:
        raise InputError("no photographs to send; pass a folder of JPEG/PNG/WebP photographs")
    data = {"data": [{input_name: {"b64": base64.b64encode(struct.pack("<I", len(blob)) + blob).decode("ascii")}}
                     for _, blob in photos]}
    path = Path(path)
    atomic_write_text(path, json.dumps(data) + "\n")
    return path


def describe(photos: list[tuple[str, bytes]]) -> dict:
    """What a report says about the mix: count, sizes in KB, names."""
    sizes = [len(b) for _, b in photos]
    return {"count": len(photos), "min_kb": min(sizes) // 1024, "max_kb": max(sizes) // 1024,
            "mean_kb": round(sum(sizes) / len(sizes) / 1024), "names": [n for n, _ in photos]}
