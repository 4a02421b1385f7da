"""The manifest's one-line calibration summary shown by `dnx validate` and `make bench`."""

from __future__ import annotations

import json

from dnx.manifest import MANIFEST_NAME, calibration_summary, repository_calibration


def test_demo_calibrations_are_flagged_and_user_images_are_not():
    bundled = {"calibration": {"kind": "bundled", "count": 26, "method": "max",
                               "source": "bundled scikit-image photographs (generic, not production)"}}
    assert calibration_summary(bundled) == (
        "INT8 calibrated on 26 bundled scikit-image photographs (generic, not production), max ranges; "
        "re-export with --calib-dir <your images> for production")
    synthetic = {"calibration": {"synthetic": True, "count": 8, "method": "max", "source": "synthetic"}}  # older manifests: no kind
    assert "8 SYNTHETIC random tensors (not production)" in calibration_summary(synthetic)
    assert "--calib-dir" in calibration_summary(synthetic)
    own = {"calibration": {"kind": "images", "count": 512, "method": "entropy", "source": "/data/val"}}
    assert calibration_summary(own) == "INT8 calibrated on 512 images from /data/val, entropy ranges"
    assert calibration_summary({"models": {}}) == "no INT8 model (nothing calibrated)"


def test_repository_without_a_manifest(tmp_path):
    assert repository_calibration(tmp_path).startswith("unknown (")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"models": {}}))
    assert repository_calibration(tmp_path) == "no INT8 model (nothing calibrated)"
