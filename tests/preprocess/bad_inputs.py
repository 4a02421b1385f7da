"""Bad encoded images and the reason each must be refused with (pure tests and the server's)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height`` RGB, with one tiny IDAT: a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF header is patched to declare ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def iso_media(brand: bytes) -> bytes:
    """The start of an ISO base media file (HEIC/AVIF): an ``ftyp`` box with ``brand``, then junk."""
    return struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x00\x00" + b"mif1" + brand + b"\x00" * 200


def sixty_megapixels() -> bytes:
    """A real 9000x6700 (60.3 MP) JPEG: a gradient, a few hundred KB."""
    img = Image.linear_gradient("L").resize((9000, 6700)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def new_bad_inputs() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, part of the refusal) for the inputs issue 20 adds."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(buf, "TGA")
    return {
        "photo.heic": (iso_media(b"heic"), "unsupported format (HEIC), send JPEG, PNG or WebP"),
        "photo.avif": (iso_media(b"avif"), "unsupported format (AVIF), send JPEG, PNG or WebP"),
        "picture.tga": (buf.getvalue(), "unsupported format (TGA), send JPEG, PNG or WebP"),
        "bomb.png": (png_header(30000, 30000), "decompression bomb refused before decoding"),
        "bomb.jpg": (jpeg_declaring(8000, 7000), "decompression bomb refused before decoding"),
        "60mp.jpg": (sixty_megapixels(), "image is 9000x6700 (60 MP), above the 50 MP limit"),
    }
