"""Three decoding levers for dnx.preprocess, measured against its stated tolerance (issue 20).

    PYTHONPATH=$PWD .venv/bin/python perf/decode_levers.py scaled-decode   # needs: pip install simplejpeg
    PYTHONPATH=$PWD .venv/bin/python perf/decode_levers.py large-scaled    # needs: pip install simplejpeg
    PYTHONPATH=$PWD .venv/bin/python perf/decode_levers.py reducing-gap

``scaled-decode``: libjpeg-turbo decodes a JPEG at any M/8 scale (simplejpeg's ``min_height`` /
``min_width``; Pillow's ``draft`` has 1/2, 1/4, 1/8 only), so a 640x480 JPEG could be decoded
straight to just above the resize. Prints, per size and photograph, the decoded size and the mean /
p99.9 |difference| against torchvision's transform on the full decode, for decoded short sides of
1.0-2.0x the resize.

``large-scaled``: the same M/8 decoding for photographs of 1920x1080..8000x6000 (four each), keeping
dnx's rule (the short side >= DRAFT_MIN_RATIO x the resize) but with M/8 steps (a 12 MP photo at
3/8 instead of 1/2): per photograph the decoded size, mean / p99.9 against the reference and ms
(best of 3) next to today's preprocess_bytes, then the smallest centred DenseNet-121 logits
cosine of each (random weights, seed 0; the shipped photographs join the set for the centring).

``reducing-gap``: Pillow's ``resize(..., reducing_gap=g)`` (an integer box reduction, then the
triangle filter) inside dnx.preprocess, on 1024x768..8000x6000 photographs: the worst tensor
difference, the smallest centred DenseNet-121 logits cosine (random weights, seed 0) and ms per
12 MP photo (best of 3).

Photographs: the shipped ones made into JPEGs of each size by dnx.photos.synthesize (q90).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "preprocess"))
from reference import centred_cosines, differences, reference  # noqa: E402 - the tests' reference transform

from dnx.photos import synthesize  # noqa: E402
from dnx.preprocess import DEFAULT_TRANSFORM as SPEC  # noqa: E402
from dnx.preprocess import _normalise_affine, _resized_size, preprocess_bytes, sample_photographs  # noqa: E402


def _scaled(data: bytes, ratio: float) -> tuple[np.ndarray, tuple[int, int]]:
    """simplejpeg's smallest M/8 decode with a short side >= ``ratio`` x resize, then dnx's crop-box resize."""
    import simplejpeg
    from PIL import Image

    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    need = int(np.ceil(ratio * SPEC.resize))
    if min(w, h) >= need:
        arr = simplejpeg.decode_jpeg(data, "RGB", min_height=need if h <= w else 0, min_width=need if w < h else 0)
    else:
        arr = simplejpeg.decode_jpeg(data, "RGB")
    dh, dw = arr.shape[:2]
    nw, nh = _resized_size(w, h, SPEC.resize)
    top, left = int(round((nh - SPEC.crop) / 2.0)), int(round((nw - SPEC.crop) / 2.0))
    fx, fy = (w / nw) / (w / dw), (h / nh) / (h / dh)  # source pixels per resized pixel, in the decoded image
    box = (left * fx, top * fy, (left + SPEC.crop) * fx, (top + SPEC.crop) * fy)
    small = Image.fromarray(arr).resize((SPEC.crop, SPEC.crop), Image.BILINEAR, box=box)
    out = np.empty((3, SPEC.crop, SPEC.crop), np.float32)
    a, b = _normalise_affine(SPEC.mean, SPEC.std)
    out[...] = np.asarray(small).transpose(2, 0, 1)
    out *= a
    out -= b
    return out, (dw, dh)


def scaled_decode() -> None:
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        sys.exit("scaled-decode needs simplejpeg (not a dnx dependency): pip install simplejpeg")
    photos = sample_photographs()
    for size in [(640, 480), (480, 640), (800, 600), (1024, 768), (1280, 720), (1920, 1080)]:
        for i, p in enumerate(photos[:6]):
            data = synthesize(size, p, seed=i)
            ref = reference(data, SPEC)
            row = []
            for ratio in (1.0, 1.1, 1.25, 1.5, 2.0):
                ours, (dw, dh) = _scaled(data, ratio)
                m, q = differences(ours, ref)
                row.append(f"{ratio}x:{dw}x{dh} {m:.4f}/{q:.3f}")
            m0, q0 = differences(preprocess_bytes(data, SPEC), ref)
            print(size, p.stem[:10], f"today {m0:.4f}/{q0:.3f}", " | ".join(row), flush=True)


def _best_ms(fn, repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return min(runs)


def reducing_gap() -> None:
    from PIL import Image

    from dnx.exporter.torch_export import load_torch_model, torch_forward

    resize, gap = Image.Image.resize, {"value": None}

    def with_gap(self, size, resample=None, box=None, reducing_gap=None):
        return resize(self, size, resample, box=box, reducing_gap=gap["value"])

    photos = sample_photographs()
    sizes = [(1024, 768), (2048, 1536), (1920, 1080), (3000, 2000), (4032, 3024), (3024, 4032), (8000, 6000)]
    blobs = [(s, synthesize(s, photos[i % len(photos)], seed=i)) for i, s in enumerate(sizes)]
    blobs += [((4032, 3024), synthesize((4032, 3024), photos[i], seed=10 + i)) for i in range(1, 6)]
    refs = [reference(b, SPEC) for _, b in blobs]
    model, _ = load_torch_model(weights="random", seed=0)
    ref_logits = torch_forward(model, np.stack(refs))
    twelve = [b for s, b in blobs if s == (4032, 3024)][:3]
    Image.Image.resize = with_gap  # what dnx.preprocess calls, for this measurement only
    try:
        for g in (None, 3.0, 2.0, 1.5):
            gap["value"] = g
            outs = [preprocess_bytes(b, SPEC) for _, b in blobs]
            worst = max(differences(o, r) for o, r in zip(outs, refs))
            cos = centred_cosines(torch_forward(model, np.stack(outs)), ref_logits)
            ms = _best_ms(lambda: [preprocess_bytes(b, SPEC) for b in twelve]) / len(twelve)
            print(f"reducing_gap {g}: worst mean/p99.9 {worst[0]:.4f}/{worst[1]:.3f}, "
                  f"min centred cosine {cos.min():.6f}, 12 MP {ms:.1f} ms", flush=True)
    finally:
        Image.Image.resize = resize


def large_scaled() -> None:
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        sys.exit("large-scaled needs simplejpeg (not a dnx dependency): pip install simplejpeg")
    from dnx.exporter.torch_export import load_torch_model, torch_forward
    from dnx.preprocess import DRAFT_MIN_RATIO

    photos = sample_photographs()
    sizes = [(4032, 3024), (3024, 4032), (4000, 3000), (3000, 2000), (2592, 1944), (2048, 1536),
             (1920, 1080), (6000, 4000), (8000, 6000)]
    today, scaled, refs = [], [], []
    for size in sizes:
        for i, p in enumerate(photos[:4]):
            data = synthesize(size, p, seed=i)
            ref, old = reference(data, SPEC), preprocess_bytes(data, SPEC)
            new, (dw, dh) = _scaled(data, DRAFT_MIN_RATIO)
            (mo, qo), (mn, qn) = differences(old, ref), differences(new, ref)
            print(size, i, f"decoded at {dw}x{dh}", f"today {mo:.4f}/{qo:.3f} {_best_ms(lambda: preprocess_bytes(data, SPEC)):.1f} ms",
                  f"M/8 {mn:.4f}/{qn:.3f} {_best_ms(lambda: _scaled(data, DRAFT_MIN_RATIO)):.1f} ms", flush=True)
            today.append(old)
            scaled.append(new)
            refs.append(ref)
    for p in photos:  # full decodes both ways: they only widen the set the centring averages over
        data = p.read_bytes()
        refs.append(reference(data, SPEC))
        today.append(preprocess_bytes(data, SPEC))
        scaled.append(today[-1])
    model, _ = load_torch_model(weights="random", seed=0)
    ref_logits = torch_forward(model, np.stack(refs))
    for name, outs in (("today", today), ("M/8", scaled)):
        print(f"{name}: min centred cosine {centred_cosines(torch_forward(model, np.stack(outs)), ref_logits).min():.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lever", choices=("scaled-decode", "large-scaled", "reducing-gap"))
    {"scaled-decode": scaled_decode, "large-scaled": large_scaled, "reducing-gap": reducing_gap}[ap.parse_args().lever]()


if __name__ == "__main__":
    main()
