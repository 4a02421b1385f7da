"""Every ModelSpec is data that must agree with torchvision's own weights metadata."""

import pytest

from dnx.errors import InputError
from dnx.spec import MODELS, get_spec, spec_for_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spec_preprocessing_matches_the_weights_enum(name):
    import torchvision.models as models
    spec = MODELS[name]
    weights = getattr(models, spec.weights_enum).IMAGENET1K_V1
    t = weights.transforms()
    assert [spec.resize] == list(t.resize_size) and [spec.crop] == list(t.crop_size)
    assert spec.interpolation == t.interpolation.value
    assert list(spec.mean) == list(t.mean) and list(spec.std) == list(t.std)
    assert spec.num_classes == len(weights.meta["categories"])
    assert callable(getattr(models, spec.torchvision_fn))


def test_required_models_are_registered():
    assert {"densenet121", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"} <= set(MODELS)
    assert get_spec("resnet50").model_name("openvino", "int8") == "resnet50_openvino_int8"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(InputError) as exc:
        get_spec("vgg16")
    text = str(exc.value)
    assert "unknown model 'vgg16'" in text and "resnet50" in text and "convnext_tiny" in text and "\n" not in text


def test_spec_for_served_names():
    assert spec_for_model("resnet50_onnx").name == "resnet50"
    assert spec_for_model("mobilenet_v3_large_openvino_int8").name == "mobilenet_v3_large"
    assert spec_for_model("densenet121").name == "densenet121" and spec_for_model("other").name == "densenet121"


def test_preprocess_default_transform_is_the_default_models():
    """dnx.preprocess cannot import dnx.spec (it also runs where dnx is absent): its default must not drift."""
    from dnx.preprocess import DEFAULT_TRANSFORM
    from dnx.spec import DEFAULT_MODEL

    for field in ("resize", "crop", "mean", "std", "interpolation", "input_shape"):
        assert getattr(DEFAULT_TRANSFORM, field) == getattr(DEFAULT_MODEL, field), field
