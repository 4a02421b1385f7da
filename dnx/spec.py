"""The model as data: names, shapes, preprocessing, parity gates and variant naming.

Other torchvision classifiers can be added to :data:`MODELS` as data; the pipeline reads
everything it needs from a :class:`ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RUNTIMES = ("onnxruntime", "openvino", "tensorrt")

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
        """The preprocessing as recorded in the manifest."""
        return {
            "resize": self.resize,
            "center_crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW",
            "scale": "1/255",
        }

    def model_name(self, runtime: str, precision: str) -> str:
        """Triton model name of one variant: ``densenet121_onnx``, ``densenet121_openvino_int8``, ..."""
        tag = RUNTIME_TAGS[runtime]
        return f"{self.name}_{tag}" if precision == "fp32" else f"{self.name}_{tag}_{precision}"


MODELS: dict[str, ModelSpec] = {
    "densenet121": ModelSpec(
        name="densenet121", torchvision_fn="densenet121", weights_enum="DenseNet121_Weights"
    ),
}

DEFAULT_MODEL = MODELS["densenet121"]


def get_spec(name: str = "densenet121") -> ModelSpec:
    """Return the registered :class:`ModelSpec` called ``name``."""
    from dnx.errors import InputError

    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
