"""dnx.preprocess equals torchvision's ImageNet transform exactly (it is what the client sends)."""

import numpy as np
import pytest
from PIL import Image

from dnx.errors import InputError
from dnx.preprocess import find_images, load_image, sample_photographs


@pytest.fixture(scope="module")
def torchvision_transform():
    T = pytest.importorskip("torchvision.transforms")
    return T.Compose([
        T.Resize(256),  # bilinear, antialiased on PIL images
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


def test_photographs_equal_torchvision(torchvision_transform):
    photos = sample_photographs()
    assert len(photos) >= 5
    for path in photos:
        ours = load_image(path)
        with Image.open(path) as img:
            theirs = torchvision_transform(img.convert("RGB")).numpy()
        assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
        assert np.array_equal(ours, theirs), f"{path.name}: max diff {np.abs(ours - theirs).max()}"


@pytest.mark.parametrize("size,mode", [((300, 500), "RGB"), ((200, 150), "L"), ((640, 257), "RGBA"), ((256, 256), "P")])
def test_odd_sizes_and_modes_equal_torchvision(tmp_path, torchvision_transform, size, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    path = tmp_path / f"img_{mode}.png"
    rgb.convert(mode).save(path)
    with Image.open(path) as img:
        theirs = torchvision_transform(img.convert("RGB")).numpy()
    assert np.array_equal(load_image(path), theirs)


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


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny", "resnet50"])
def test_other_specs_equal_their_torchvision_weights_transform(name):
    """Each spec's resize/crop/interpolation reproduces its weights enum's own transform."""
    import torchvision.models as models

    from dnx.spec import get_spec

    spec = get_spec(name)
    theirs_t = getattr(models, spec.weights_enum).IMAGENET1K_V1.transforms()
    path = sample_photographs()[1]
    with Image.open(path) as img:
        theirs = theirs_t(img.convert("RGB")).numpy()
    assert np.abs(load_image(path, spec) - theirs).max() < 1e-5


def test_preprocess_bytes_errors_are_one_line():
    import io

    from dnx.preprocess import preprocess_bytes

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(buf, "JPEG")
    good = buf.getvalue()
    assert preprocess_bytes(good).shape == (3, 224, 224)
    for data, message in [(b"", "empty image"), (b"GIF89a-not-really", "not a decodable image"),
                          (good[:200], "corrupt or truncated image")]:
        with pytest.raises(InputError, match=message) as exc:
            preprocess_bytes(data)
        assert "\n" not in str(exc.value)
