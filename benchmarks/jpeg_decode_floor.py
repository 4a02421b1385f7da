"""What decoding a 12 MP phone JPEG costs on this CPU against a whole 640x480 preprocessing (CPU time, one thread).

The floor of the bytes-in ensemble's preprocessing: libjpeg-turbo (through PIL's ``draft``) can decode
at 1/2, 1/4 or 1/8 DCT scale, but the entropy-coded data is read in full at every scale.

    .venv/bin/python benchmarks/jpeg_decode_floor.py
"""

from __future__ import annotations

import io
import time

from PIL import Image

from dnx.photos import PHONE_SIZE, synthesize
from dnx.preprocess import preprocess_pil


def cpu_ms(fn, n: int) -> float:
    """Mean CPU milliseconds of ``fn()`` over ``n`` calls, after one warm-up call."""
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e3


def decode(data: bytes, scale: int):
    def run():
        im = Image.open(io.BytesIO(data))
        if scale > 1:
            im.draft("RGB", (im.size[0] // scale, im.size[1] // scale))
        im.load()
    return run


def main() -> None:
    big = synthesize(PHONE_SIZE)
    buf = io.BytesIO()
    Image.open(io.BytesIO(big)).resize((640, 480)).save(buf, "JPEG", quality=90)
    small = buf.getvalue()
    print(f"12 MP JPEG {len(big)} bytes, 640x480 JPEG {len(small)} bytes")
    for s in (1, 2, 4, 8):
        print(f"12 MP decode at 1/{s}: {cpu_ms(decode(big, s), 5 if s < 4 else 10):.2f} ms")
    print(f"640x480 decode: {cpu_ms(decode(small, 1), 50):.2f} ms")
    print(f"12 MP preprocessing: {cpu_ms(lambda: preprocess_pil(Image.open(io.BytesIO(big))), 5):.2f} ms")
    print(f"640x480 preprocessing: {cpu_ms(lambda: preprocess_pil(Image.open(io.BytesIO(small))), 50):.2f} ms")


if __name__ == "__main__":
    main()
