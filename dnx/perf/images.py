"""Encoded photographs for measuring the bytes-in path (the ``<model>`` ensemble) with perf_analyzer.

Real photographs from scikit-image's wheel, as JPEG files of 50-120 KB: ``rocket.jpg`` as
shipped (109 KB) and five PNG photographs re-encoded as JPEG quality 90 (66-116 KB).
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_text
from dnx.preprocess import sample_photographs

# (photograph, re-encode as JPEG q90?) chosen so the files average ~95 KB.
BENCH_PHOTOS = (("rocket.jpg", False), ("astronaut.png", True), ("coffee.png", True),
                ("motorcycle_left.png", True), ("motorcycle_right.png", True), ("ihc.png", True))


def benchmark_jpegs() -> list[tuple[str, bytes]]:
    """``[(name, JPEG bytes)]`` of the benchmark photographs."""
    from PIL import Image

    found = {p.name: p for p in sample_photographs()}
    out = []
    for name, reencode in BENCH_PHOTOS:
        if name not in found:
            continue
        if not reencode:
            out.append((name, found[name].read_bytes()))
            continue
        buf = io.BytesIO()
        with Image.open(found[name]) as img:
            img.convert("RGB").save(buf, "JPEG", quality=90)
        out.append((Path(name).with_suffix(".jpg").name, buf.getvalue()))
    if not out:
        raise InputError("no sample photographs found; install scikit-image (pip install scikit-image)")
    return out


def write_image_input_data(path: Path, input_name: str, jpegs: list[tuple[str, bytes]] | None = None) -> Path:
    """perf_analyzer ``--input-data`` JSON: one entry per JPEG (base64), cycled through by the requests."""
    jpegs = jpegs if jpegs is not None else benchmark_jpegs()
    # perf_analyzer decodes "b64" into the raw BYTES tensor, i.e. Triton's serialization:
    # each element is a 4-byte little-endian length followed by its bytes.
    data = {"data": [{input_name: {"b64": base64.b64encode(struct.pack("<I", len(blob)) + blob).decode("ascii")}}
                     for _, blob in jpegs]}
    atomic_write_text(path, json.dumps(data) + "\n")
    return path
