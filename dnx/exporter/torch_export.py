"""OnnxFromTorch: torchvision DenseNet-121 (imagenet | random | .pth weights) to ONNX.

The exported graph has a dynamic batch dimension, named input/output (``input`` and
``logits``), passes ``onnx.checker`` and is written atomically.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from dnx._lazy import lazy_import
from dnx.errors import WeightsError
from dnx.hashing import sha256_file
from dnx.model_repository.layout import atomic_write_bytes
from dnx.runtimes.torch import forward_fn
from dnx.spec import DEFAULT_MODEL, ModelSpec

# Old torchvision DenseNet checkpoints name layers 'norm.1', 'conv.2', ...
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


@dataclass
class WeightsInfo:
    """Where the weights came from, as recorded in the manifest."""

    source: str  # "imagenet:IMAGENET1K_V1" | "random" | path
    random: bool
    trained: bool
    seed: int | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _clean_state_dict(obj) -> dict:
    if isinstance(obj, dict) and not any(hasattr(v, "shape") for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError("the weights file holds no state dict; save one with torch.save(model.state_dict(), path)")
    out = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")  # saved from DataParallel/DistributedDataParallel
        m = _OLD_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def _load_pth(model, path: Path, spec: ModelSpec) -> str:
    torch = lazy_import("torch")
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; pass an existing .pth, 'imagenet' or 'random'")
    digest = sha256_file(path)
    try:
        with open(path, "rb") as fh:  # read-only: the input is never modified
            obj = torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise WeightsError(
            f"cannot load weights {path}: {first}; pass a state dict saved with torch.save(model.state_dict(), path)"
        ) from None
    state = _clean_state_dict(obj)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit torchvision {spec.torchvision_fn}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); "
            f"pass a {spec.torchvision_fn} state dict"
        )
    wrong = [k for k, v in state.items() if tuple(getattr(v, "shape", ())) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{path}: {len(wrong)} tensors have the wrong shape (e.g. {k}: {tuple(state[k].shape)} vs "
            f"{tuple(expected[k].shape)}); dnx serves the {spec.num_classes}-class {spec.torchvision_fn}"
        )
    model.load_state_dict(state, strict=True)
    return digest


def load_torch_model(spec: ModelSpec = DEFAULT_MODEL, weights: str = "imagenet", seed: int = 0):
    """Build the torchvision model in eval mode with the requested weights.

    ``weights`` is ``imagenet`` (torchvision's IMAGENET1K_V1, downloaded or from the torch hub
    cache), ``random`` (seeded with ``seed``) or a path to a ``.pth`` state dict.
    Returns ``(model, WeightsInfo)``.
    """
    torch = lazy_import("torch")
    models = lazy_import("torchvision.models")
    build = getattr(models, spec.torchvision_fn)
    torch.manual_seed(seed)
    model = build(weights=None)
    if weights == "random":
        info = WeightsInfo(source="random", random=True, trained=False, seed=seed)
    elif weights == "imagenet":
        enum = getattr(models, spec.weights_enum).IMAGENET1K_V1
        try:
            state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - URLError, hash mismatch, partial download
            raise WeightsError(
                f"could not get torchvision's {spec.weights_enum}.IMAGENET1K_V1 weights "
                f"({exc.__class__.__name__}: no network?); pass --weights PATH.pth for a local copy, or --weights random"
            ) from None
        model.load_state_dict(_clean_state_dict(state), strict=True)
        info = WeightsInfo(source=f"imagenet:{spec.weights_enum}.IMAGENET1K_V1", random=False, trained=True)
    else:
        path = Path(weights).expanduser()
        digest = _load_pth(model, path, spec)
        info = WeightsInfo(source=str(path.resolve()), random=False, trained=True, sha256=digest)
    return model.eval(), info


def imagenet_labels(spec: ModelSpec = DEFAULT_MODEL) -> list[str]:
    """The 1000 ImageNet class names from torchvision's weight metadata (no download)."""
    models = lazy_import("torchvision.models")
    return list(getattr(models, spec.weights_enum).IMAGENET1K_V1.meta["categories"])


class OnnxFromTorch:
    """Export a torch model to ONNX with a dynamic batch dimension.

    ``OnnxFromTorch(model, spec)(path)`` writes ``path`` atomically and returns its opset.
    """

    def __init__(self, model, spec: ModelSpec = DEFAULT_MODEL, opset: int | None = None):
        self.model = model
        self.spec = spec
        self.opset = opset or spec.opset

    def __call__(self, path: str | os.PathLike) -> int:
        torch = lazy_import("torch")
        onnx = lazy_import("onnx")
        # An example batch of 2 keeps the batch dimension from being specialised to 1.
        example = torch.randn(2, *self.spec.input_shape)
        buf = io.BytesIO()
        # The TorchScript exporter (dynamo=False) is deliberate: it is the path seen exporting
        # DenseNet-121 with a dynamic batch reliably; parity is checked right after.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                self.model,
                example,
                buf,
                dynamo=False,
                opset_version=self.opset,
                input_names=[self.spec.input_name],
                output_names=[self.spec.output_name],
                dynamic_axes={self.spec.input_name: {0: "batch"}, self.spec.output_name: {0: "batch"}},
                do_constant_folding=True,
            )
        proto = onnx.load_from_string(buf.getvalue())
        onnx.checker.check_model(proto, full_check=True)
        atomic_write_bytes(path, buf.getvalue())
        return self.opset


def torch_forward(model, batch, chunk: int = 8):
    """Run ``model`` on a float32 NCHW numpy batch in chunks of ``chunk``; returns numpy logits."""
    import numpy as np

    run = forward_fn(model)
    return np.concatenate([run(batch[i : i + chunk]) for i in range(0, len(batch), chunk)])
