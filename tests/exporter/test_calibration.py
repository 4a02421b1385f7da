"""Calibration set loading, seeded sampling, synthetic fallback and the calibrated-model cache."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from dnx.errors import InputError
from dnx.exporter.calibration import (
    BUNDLED_SOURCE,
    CalibrationCache,
    CalibrationSet,
    bundled_photographs,
    bundled_photographs_dir,
    cache_key,
    calibration_set,
    check_method,
    choose_samples,
    sha256_file,
)
from dnx.preprocess import find_images, load_image

CALIB_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "calib"


def test_nested_images_preprocessed_exactly_like_inference():
    calib = calibration_set(CALIB_DIR, samples=100, progress=False)
    assert calib.count == 6 == calib.available  # JPEG and PNG, up to three folders deep; SOURCES.txt ignored
    assert calib.data.shape == (6, 3, 224, 224) and calib.data.dtype == np.float32
    assert "animals/close_up/chelsea_face.png" in calib.files
    for row, rel in zip(calib.data, calib.files):
        np.testing.assert_array_equal(row, load_image(CALIB_DIR / rel))


def test_sample_choice_is_seeded():
    a = calibration_set(CALIB_DIR, samples=3, seed=0, progress=False)
    b = calibration_set(CALIB_DIR, samples=3, seed=0, progress=False)
    assert a.files == b.files and a.sha256 == b.sha256 and a.count == 3
    files = find_images([CALIB_DIR])
    choices = {tuple(choose_samples(files, 3, seed)) for seed in range(8)}
    assert len(choices) > 1  # other seeds pick other images
    assert choose_samples(files, 10, 0) == files


def test_describe_records_count_hash_method_and_source():
    calib = calibration_set(CALIB_DIR, samples=2, seed=3, progress=False)
    info = calib.describe("entropy")
    assert info["count"] == 2 and info["method"] == "entropy" and info["seed"] == 3
    assert info["synthetic"] is False and info["source"] == str(CALIB_DIR) and info["images_found"] == 6
    assert info["sha256"] == calib.sha256 and len(info["sha256"]) == 64
    json.dumps(info)


def test_hash_follows_the_preprocessed_tensors():
    calib = calibration_set(CALIB_DIR, samples=2, progress=False)
    changed = calib.data.copy()
    changed[0, 0, 0, 0] += 1e-3
    assert CalibrationSet(changed, "x", False, 0).sha256 != calib.sha256
    assert CalibrationSet(calib.data.copy(), "elsewhere", False, 9).sha256 == calib.sha256


def test_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no JPEG/PNG images found.*--calib-synthetic") as err:
        calibration_set(tmp_path, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not a folder"):
        calibration_set(tmp_path / "absent")
    with pytest.raises(InputError, match="at least 1"):
        calibration_set(CALIB_DIR, samples=0)


def test_default_is_the_bundled_photographs_flagged_as_not_production():
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    assert bundled_photographs_dir() == folder  # found without importing scikit-image
    photos = bundled_photographs()
    assert len(photos) >= 20 and all(p.parent == folder for p in photos)
    assert not [p for p in photos if p.suffix == ".tif"]  # multi-page test stacks, not photographs
    calib = calibration_set(None, progress=False)
    assert calib.kind == "bundled" and not calib.synthetic and calib.count == len(photos)
    assert calib.unreadable == ()  # so the warning's count is the count calibrated on
    info = calib.describe("max")
    assert info["source"] == BUNDLED_SOURCE and info["production"] is False and info["folder"] == str(folder)
    assert calibration_set(CALIB_DIR, progress=False).describe()["production"] is True
    few = calibration_set(None, samples=4, progress=False)
    assert few.count == 4 and set(few.files) < {p.name for p in photos}


def test_no_bundled_photographs_is_a_clear_error(monkeypatch):
    # scikit-image is installed here; its absence is simulated by hiding its data folder.
    import dnx.exporter.calibration as calibration

    monkeypatch.setattr(calibration, "bundled_photographs_dir", lambda: None)
    with pytest.raises(InputError, match="INT8 needs calibration images.*--calib-dir .*--calib-synthetic"):
        calibration_set(None, progress=False)
    assert calibration_set(None, samples=2, synthetic=True).synthetic  # --calib-synthetic still works


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        calibration_set(tmp_path, progress=False)


def test_unreadable_files_are_skipped_and_recorded(tmp_path):
    shutil.copytree(CALIB_DIR, tmp_path / "calib")
    (tmp_path / "calib" / "aaa_corrupt.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    calib = calibration_set(tmp_path / "calib", samples=100, progress=False)
    assert calib.count == 6 and "aaa_corrupt.jpg" not in calib.files
    assert calib.describe()["unreadable_files"] == ["aaa_corrupt.jpg"]
    few = calibration_set(tmp_path / "calib", samples=6, seed=1, progress=False)
    assert few.count == 6  # a corrupt file is replaced, the set keeps its size


def test_synthetic_fallback_is_flagged(tmp_path):
    calib = calibration_set(None, samples=3, synthetic=True, seed=1)
    assert calib.synthetic and calib.source == "synthetic" and calib.data.shape == (3, 3, 224, 224)
    assert abs(float(calib.data.std()) - 1.0) < 0.01
    assert calib.describe("max")["synthetic"] is True
    assert calibration_set(tmp_path, samples=3, synthetic=True, seed=1).sha256 == calib.sha256  # empty dir
    assert not calibration_set(CALIB_DIR, samples=3, synthetic=True, progress=False).synthetic  # images win


def test_methods_are_checked():
    assert [check_method(m) for m in ("max", "entropy", "percentile")] == ["max", "entropy", "percentile"]
    with pytest.raises(InputError, match="choose one of: max, entropy, percentile"):
        check_method("minmax")


def test_progress_bar_goes_to_stderr_and_can_be_disabled(capsys):
    calibration_set(CALIB_DIR, samples=2, progress=False)
    assert capsys.readouterr() == ("", "")
    calibration_set(CALIB_DIR, samples=2, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "loading calibration images" in err


def test_cache_key_covers_every_input():
    calib = calibration_set(CALIB_DIR, samples=2, progress=False)
    other = calibration_set(CALIB_DIR, samples=3, progress=False)
    base = cache_key("a" * 64, calib, "max", {"r": 1})
    assert base == cache_key("a" * 64, calib, "max", {"r": 1})
    assert len({base, cache_key("b" * 64, calib, "max", {"r": 1}), cache_key("a" * 64, other, "max", {"r": 1}),
                cache_key("a" * 64, calib, "entropy", {"r": 1}), cache_key("a" * 64, calib, "max", {"r": 2})}) == 5


def test_cache_ignores_incomplete_or_corrupt_entries(tmp_path):
    cache = CalibrationCache(tmp_path / "cache")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"quantized bytes")
    key = "f" * 64
    assert cache.get(key) is None
    stored = cache.put(key, model, None, {"qdq": {}})
    path, meta = cache.get(key)
    assert path == stored and meta["key"] == key and meta["sha256"] == sha256_file(model)
    stored.write_bytes(b"truncated")
    assert cache.get(key) is None
    cache.put(key, model, None, {})
    (cache.entry(key) / CalibrationCache.META).unlink()  # interrupted write
    assert cache.get(key) is None


def test_rerun_with_same_inputs_hits_the_cache(onnx_fp32_path, tmp_path):
    from dnx.exporter.precision import Int8FromOnnx

    calib = calibration_set(CALIB_DIR, samples=4, progress=False)
    cache_dir = tmp_path / "cache"

    t0 = time.perf_counter()
    first = Int8FromOnnx(onnx_fp32_path, calib, cache_dir=cache_dir, progress=False)(tmp_path / "a.onnx")
    t1 = time.perf_counter()
    second = Int8FromOnnx(onnx_fp32_path, calib, cache_dir=cache_dir, progress=False)(tmp_path / "b.onnx")
    t2 = time.perf_counter()
    print(f"int8 calibration: first run {t1 - t0:.2f} s (miss), rerun {t2 - t1:.2f} s (hit)")

    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["cache_key"] == second["cache_key"]
    assert first["sha256"] == second["sha256"] == sha256_file(tmp_path / "b.onnx")
    assert second["qdq"] == first["qdq"] and second["calibration"] == first["calibration"]
    entry = Path(first["cache_path"])
    assert (entry / "model.onnx").is_file() and json.loads((entry / "ranges.json").read_text())

    # A different calibration set is a different key: calibrates again.
    fewer = CalibrationSet(calib.data[:3], calib.source, False, 0)
    third = Int8FromOnnx(onnx_fp32_path, fewer, cache_dir=cache_dir, progress=False)(tmp_path / "c.onnx")
    assert third["cache_hit"] is False and third["cache_key"] != first["cache_key"]
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 2
    shutil.rmtree(cache_dir)
