"""dnx.preprocess as it was before issue 20 (full decode, resize then crop, broadcast normalise).

Kept for perf/bytes_vs_tensor.py's in-process comparison only; nothing in dnx imports it.
"""

from __future__ import annotations

import io

import numpy as np

from dnx.preprocess import MAX_ASPECT, MAX_PIXELS, _resample, _resized_size, to_rgb


def preprocess_pil(image, spec) -> np.ndarray:
    image = to_rgb(image)
    w, h = image.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ValueError(f"image is {w}x{h}, more than {MAX_ASPECT}:1")
    image = image.resize(_resized_size(w, h, spec.resize), _resample(spec.interpolation))
    w, h = image.size
    top, left = int(round((h - spec.crop) / 2.0)), int(round((w - spec.crop) / 2.0))
    image = image.crop((left, top, left + spec.crop, top + spec.crop))
    arr = np.empty((3, spec.crop, spec.crop), dtype=np.float32)
    arr[...] = np.asarray(image).transpose(2, 0, 1)
    arr /= np.float32(255.0)
    arr -= np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    arr /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return arr


def preprocess_bytes(data: bytes, spec) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"image is {w}x{h}, above the limit")
        img.load()
        return preprocess_pil(img, spec)
