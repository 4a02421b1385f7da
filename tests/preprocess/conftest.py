"""Session fixtures of the preprocessing tests: generated photographs (made once) and the FP32 model."""

from __future__ import annotations

import pytest

# (width, height): 100x100 to 8000x6000, landscape, portrait, square and panorama, and the short
# sides where reduced-scale decoding starts (1536 = 3 x 2 x 256 for 1/2, 3072 for 1/4).
SIZES = [(100, 100), (300, 200), (451, 300), (640, 480), (480, 640), (1024, 768), (1280, 720),
         (2048, 1536), (1920, 1080), (1080, 1920), (2400, 1000), (1000, 2400), (4096, 3072),
         (4032, 3024), (3024, 4032), (8000, 6000)]


@pytest.fixture(scope="session")
def generated_photos(photos) -> dict[str, bytes]:
    """JPEGs (q90) of every size in :data:`SIZES` plus a PNG and a WebP, each from another shipped photograph."""
    from dnx.photos import synthesize

    out = {}
    for i, (w, h) in enumerate(SIZES):
        out[f"{w}x{h}.jpg"] = synthesize((w, h), photos[i % len(photos)], seed=i)
    out["1000x750.png"] = synthesize((1000, 750), photos[1], fmt="PNG")
    out["2000x1500.webp"] = synthesize((2000, 1500), photos[2], fmt="WEBP")
    return out


@pytest.fixture(scope="session")
def densenet_fp32():
    """DenseNet-121, random weights (seed 0), FP32 in PyTorch: ``logits(batch) -> [N, 1000]``."""
    from dnx.exporter.torch_export import load_torch_model, torch_forward

    model, _ = load_torch_model(weights="random", seed=0)
    return lambda batch: torch_forward(model, batch)
