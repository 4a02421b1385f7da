"""EXIF orientation is applied as galleries and browsers show the photo; a corrupt EXIF block is ignored."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dnx.photos import synthesize
from dnx.preprocess import exif_orientation, preprocess_bytes
from dnx.spec import DEFAULT_MODEL, get_spec
from tests.preprocess.reference import assert_within_tolerance, reference


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(640, 480), (1100, 700)])
def test_every_orientation_shows_the_upright_picture(photos, orientation, size):
    """Stored transposed + tagged, lossless (PNG): the result is the upright picture's transform."""
    upright = synthesize(size, photos[0], fmt="PNG")
    tagged = synthesize(size, photos[0], fmt="PNG", orientation=orientation)
    if orientation in (5, 6, 7, 8):
        assert Image.open(io.BytesIO(tagged)).size == size[::-1]
    assert_within_tolerance(preprocess_bytes(tagged), reference(upright, DEFAULT_MODEL), f"orientation {orientation}")


@pytest.mark.parametrize("orientation", [3, 5, 6])
def test_tagged_phone_jpeg_is_decoded_at_reduced_scale_and_turned_upright(photos, orientation):
    blob = synthesize((4032, 3024), photos[1], orientation=orientation)
    spec = get_spec("efficientnet_b0")  # bicubic: the rotation holds for every spec's interpolation
    for s in (DEFAULT_MODEL, spec):
        assert_within_tolerance(preprocess_bytes(blob, s), reference(blob, s), f"{s.name} orientation {orientation}")


def test_rotated_photo_classifies_as_the_upright_one(photos, densenet_fp32):
    upright = [synthesize((1600, 1200), p, fmt="PNG") for p in photos[:6]]
    rotated = synthesize((1600, 1200), photos[0], fmt="PNG", orientation=6)
    ref = densenet_fp32(np.stack([reference(b, DEFAULT_MODEL) for b in upright]))
    got = densenet_fp32(np.stack([preprocess_bytes(rotated), reference(rotated, DEFAULT_MODEL, orient=False)]))
    mean = ref.mean(axis=0)
    cos = [float(np.dot(g - mean, ref[0] - mean) / np.linalg.norm(g - mean) / np.linalg.norm(ref[0] - mean)) for g in got]
    assert cos[0] >= 0.9999, cos  # tag honoured: the upright photo's logits
    assert cos[1] < 0.99, cos  # tag ignored (the photo lying on its side) would not pass


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` right after SOI."""
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_corrupt_exif_is_decoded_without_rotation(photos):
    plain = synthesize((1200, 900), photos[2])
    exif = Image.Exif()
    exif[0x0112] = 6
    good = b"Exif\x00\x00" + exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else b"Exif\x00\x00" + exif.tobytes()
    broken = {
        "garbage": b"Exif\x00\x00" + bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)),
        "truncated IFD": good[: len(good) // 2],
        "bad byte order": b"Exif\x00\x00XX\x00\x2a\x00\x00\x00\x08",
        "orientation 9": None,
    }
    exif9 = Image.Exif()
    exif9[0x0112] = 9
    expected = reference(plain, DEFAULT_MODEL, orient=False)
    for name, payload in broken.items():
        if payload is None:
            buf = io.BytesIO()
            Image.open(io.BytesIO(plain)).save(buf, "JPEG", quality=95, exif=exif9.tobytes())
            blob = buf.getvalue()
            expected_here = reference(blob, DEFAULT_MODEL, orient=False)
        else:
            blob, expected_here = _with_app1(plain, payload), expected
        with Image.open(io.BytesIO(blob)) as img:
            assert exif_orientation(img) == 1, name
        assert_within_tolerance(preprocess_bytes(blob), expected_here, name)
