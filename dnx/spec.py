"""The model as data: names, shapes, preprocessing, parity gates and variant naming.

Other torchvision classifiers can be added to :data:`MODELS` as data; the pipeline reads
everything it needs from a :class:`ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnx.kinds import Precision
from dnx.errors import InputError
from dnx.preprocess import DRAFT_MIN_RATIO, ORIENTATION, TOLERANCE

PRECISIONS = tuple(p.value for p in Precision)

# Short runtime names used in model names: <model>_<runtime>[_<precision>].
RUNTIME_TAGS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "trt"}


@dataclass(frozen=True)
class Gate:
    """Parity gate of one precision against the PyTorch FP32 reference.

    ``None`` disables a criterion. Top-k agreement gates only apply to trained weights:
    random weights make top-k agreement meaningless (near-uniform logits).
    """

    max_abs: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None  # fraction, trained weights only


@dataclass(frozen=True)
class ModelSpec:
    """Everything dnx needs to know about one torchvision classifier."""

    name: str
    torchvision_fn: str
    weights_enum: str
    input_name: str = "input"
    output_name: str = "logits"
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    opset: int = 17
    gates: dict[str, Gate] = field(
        default_factory=lambda: {
            "fp32": Gate(max_abs=1e-3, min_cosine=0.99999),
            "fp16": Gate(min_cosine=0.999, min_top1=0.99),
            "bf16": Gate(min_cosine=0.999, min_top1=0.99),
            "int8": Gate(min_cosine=0.99, min_top1=0.95),
        }
    )

    def preprocessing(self) -> dict:
        """The preprocessing as recorded in the manifest (one record: client, server, calibration, parity)."""
        return {
            "resize": self.resize,
            "center_crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW",
            "scale": "1/255",
            "orientation": ORIENTATION,
            "jpeg_decode": f"reduced DCT scale (1/2, 1/4, 1/8) while the short side stays >= {DRAFT_MIN_RATIO:g}x resize",
            "resize_region": "centre crop only (same filter and sample positions)",
            "tolerance": {**TOLERANCE, "reference": "torchvision Resize + CenterCrop + Normalize on the full decode"},
        }

    @property
    def preprocess_name(self) -> str:
        """The Python-backend model that decodes and transforms images: ``densenet121_preprocess``."""
        return f"{self.name}_preprocess"

    @property
    def softmax_name(self) -> str:
        """The ONNX model that turns logits into probabilities: ``densenet121_softmax``."""
        return f"{self.name}_softmax"

    @property
    def ensemble_name(self) -> str:
        """The ensemble that takes encoded images and answers probabilities: the model's own name."""
        return self.name

    def model_name(self, runtime: str, precision: str) -> str:
        """Triton model name of one variant: ``densenet121_onnx``, ``densenet121_openvino_int8``, ..."""
        tag = RUNTIME_TAGS[runtime]
        return f"{self.name}_{tag}" if precision == "fp32" else f"{self.name}_{tag}_{precision}"


# Preprocessing is that of each weights enum's IMAGENET1K_V1 entry (the weights dnx loads),
# as ``<Weights>.IMAGENET1K_V1.transforms()`` reports it; tests/test_spec.py checks every entry
# against torchvision so the data here cannot drift.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(name="densenet121", torchvision_fn="densenet121", weights_enum="DenseNet121_Weights"),
        ModelSpec(name="resnet50", torchvision_fn="resnet50", weights_enum="ResNet50_Weights"),
        ModelSpec(name="mobilenet_v3_large", torchvision_fn="mobilenet_v3_large",
                  weights_enum="MobileNet_V3_Large_Weights"),
        ModelSpec(name="efficientnet_b0", torchvision_fn="efficientnet_b0", weights_enum="EfficientNet_B0_Weights",
                  interpolation="bicubic"),
        ModelSpec(name="convnext_tiny", torchvision_fn="convnext_tiny", weights_enum="ConvNeXt_Tiny_Weights",
                  resize=236),
    )
}

DEFAULT_MODEL = MODELS["densenet121"]


def get_spec(name: str = "densenet121") -> ModelSpec:
    """Return the registered :class:`ModelSpec` called ``name``."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; pass --model with one of: {', '.join(MODELS)}") from None


def spec_from_manifest(manifest) -> ModelSpec:
    """The :class:`ModelSpec` of the model a repository's manifest says it holds.

    ``manifest``: a :class:`dnx.manifest.Manifest`, its JSON object, or None (DenseNet-121).
    """
    model = manifest.get("model") if isinstance(manifest, dict) else getattr(manifest, "model", None)
    return get_spec(model or DEFAULT_MODEL.name)


def spec_for_model(model_name: str) -> ModelSpec:
    """The spec a served model name belongs to (``resnet50_onnx`` -> resnet50); DenseNet-121 when none matches."""
    owners = [s for s in MODELS.values() if model_name == s.name or model_name.startswith(s.name + "_")]
    return max(owners, key=lambda s: len(s.name)) if owners else DEFAULT_MODEL
