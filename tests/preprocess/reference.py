"""The reference dnx.preprocess is held to: torchvision's transform on the full decode, and the tolerance metrics."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from dnx.preprocess import TOLERANCE


def reference(data: bytes, spec, *, orient: bool = True) -> np.ndarray:
    """torchvision ``Resize + CenterCrop + ToTensor + Normalize`` of the fully decoded picture, upright."""
    import torchvision.transforms as T  # noqa: N812 - torchvision's documented alias

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = (ImageOps.exif_transpose(img) if orient else img).convert("RGB")
    transform = T.Compose([
        T.Resize(spec.resize, interpolation=T.InterpolationMode(spec.interpolation)),  # antialiased on PIL images
        T.CenterCrop(spec.crop), T.ToTensor(), T.Normalize(spec.mean, spec.std),
    ])
    return transform(img).numpy()


def differences(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(mean, 99.9th percentile) of the absolute difference, in normalised units."""
    d = np.abs(ours.astype(np.float64) - theirs)
    return float(d.mean()), float(np.quantile(d, 0.999))


def assert_within_tolerance(ours: np.ndarray, theirs: np.ndarray, what: str) -> tuple[float, float]:
    assert ours.shape == theirs.shape and ours.dtype == np.float32, what
    mean, p999 = differences(ours, theirs)
    assert mean <= TOLERANCE["mean_abs"] and p999 <= TOLERANCE["p99.9_abs"], f"{what}: mean {mean:.4f}, p99.9 {p999:.4f}"
    return mean, p999


def centred_cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, classes] logit sets after subtracting the reference's mean row.

    Random weights answer nearly alike for every image (raw cosine ~0.996 between unrelated
    photographs); the mean over several photographs removes that shared part.
    """
    mean = theirs.mean(axis=0, keepdims=True)
    a, b = ours - mean, theirs - mean
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
