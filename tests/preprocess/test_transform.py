"""dnx.preprocess on odd modes and sizes, file errors, folder expansion."""

import numpy as np
import pytest
from PIL import Image

from dnx.errors import InputError
from dnx.preprocess import find_images, load_image, preprocess_pil
from dnx.spec import DEFAULT_MODEL
from tests.preprocess.reference import assert_within_tolerance, reference


@pytest.mark.parametrize("size,mode", [((300, 500), "RGB"), ((200, 150), "L"), ((640, 257), "RGBA"), ((256, 256), "P"),
                                       ((300, 224), "CMYK")])
def test_odd_sizes_and_modes_match_torchvision(tmp_path, size, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    path = tmp_path / f"img_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    rgb.convert(mode).save(path)
    ours = load_image(path)
    assert_within_tolerance(ours, reference(path.read_bytes(), DEFAULT_MODEL), mode)
    if mode != "CMYK":  # full decode and no resampling shortcut: +-1 level at most
        assert np.abs(ours - reference(path.read_bytes(), DEFAULT_MODEL)).max() <= 0.018


def test_a_loaded_pil_image_is_preprocessed_too(photos):
    with Image.open(photos[0]) as img:
        img.load()
        assert_within_tolerance(preprocess_pil(img), reference(photos[0].read_bytes(), DEFAULT_MODEL), "loaded")


def test_unreadable_files_raise_one_line_input_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for bad in (text, tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(InputError) as exc:
            load_image(bad)
        assert "\n" not in str(exc.value) and str(bad) in str(exc.value)


def test_find_images_expands_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "sub/a.JPG"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="PNG")
    (tmp_path / "readme.txt").write_text("x")
    found = find_images([tmp_path])
    assert sorted(p.name for p in found) == ["a.JPG", "b.png"]
