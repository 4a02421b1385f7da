"""Bad encoded images are refused with one line each; the header alone decides when it can."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image, features

from dnx.errors import InputError
from dnx.preprocess import preprocess_bytes
from tests.preprocess.bad_inputs import jpeg_declaring, new_bad_inputs, png_header


@pytest.fixture(scope="module")
def bad() -> dict[str, tuple[bytes, str]]:
    return new_bad_inputs()


def test_each_bad_input_gets_its_one_line_reason(bad, photos):
    good = photos[3].read_bytes()  # rocket.jpg
    cases = dict(bad)
    cases |= {"empty": (b"", "empty image (0 bytes)"), "text": (b"GIF89a-not-really", "not a decodable image"),
              "truncated.jpg": (good[:200], "corrupt or truncated image")}
    for name, (data, reason) in cases.items():
        with pytest.raises(InputError) as exc:
            preprocess_bytes(data)
        assert reason in str(exc.value) and "\n" not in str(exc.value), (name, str(exc.value))


def test_a_real_avif_is_refused_like_heic():
    """Whether or not this Pillow can decode AVIF, the answer is the same on every server."""
    if not features.check("avif"):
        return  # nothing more to show: the crafted AVIF header of the test above covers it
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(buf, "AVIF")
    with pytest.raises(InputError, match=r"unsupported format \(AVIF\), send JPEG, PNG or WebP"):
        preprocess_bytes(buf.getvalue())


def test_the_accepted_formats_still_decode(photos):
    img = Image.open(photos[0]).convert("RGB")
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM", "GIF"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        assert preprocess_bytes(buf.getvalue()).shape == (3, 224, 224), fmt


def test_an_image_just_under_the_limit_is_answered():
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((8000, 6000)).save(buf, "JPEG")  # 48 MP: decoded at 1/4
    assert preprocess_bytes(buf.getvalue()).shape == (3, 224, 224)


BOMB_SCRIPT = """
import resource, sys
import numpy as np
from dnx.preprocess import preprocess_bytes, InputError
from tests.preprocess.bad_inputs import jpeg_declaring, png_header
vm = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize'))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (128 << 20), resource.RLIM_INFINITY))
for data in (png_header(30000, 30000), png_header(9000, 9000), jpeg_declaring(65000, 65000), jpeg_declaring(8000, 7000)):
    try:
        preprocess_bytes(data)
        print('ANSWERED')
    except InputError as exc:
        print('REFUSED', exc)
try:  # the limit bites: one of these pictures, decoded, would not fit
    np.ones((8000, 7000, 3), np.uint8)
    print('ALLOCATED')
except MemoryError:
    print('NO MEMORY')
"""


def test_decompression_bombs_are_refused_without_allocating_them():
    """Under an address-space limit 128 MB above the interpreter's, where none of them fits decoded."""
    r = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "NO MEMORY", lines
    assert len(lines) == 5 and all(ln.startswith("REFUSED decompression bomb refused before decoding") for ln in lines[:4]), lines
    assert len(png_header(30000, 30000)) < 200 and len(jpeg_declaring(8000, 7000)) < 1000
