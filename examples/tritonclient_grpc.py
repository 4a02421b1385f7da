#!/usr/bin/env python3
"""Classify one image with a plain tritonclient gRPC query: needs no dnx, only
``pip install "tritonclient[grpc]" pillow numpy``.

    python examples/tritonclient_grpc.py cat.jpg --url 127.0.0.1:8001 --model densenet121_onnx --top-k 5

The labels come from the server (Triton's classification extension on the output that has a
``label_filename``). Preprocessing is torchvision's ImageNet transform: resize the short side to
256 (bilinear), center-crop 224, scale to [0, 1], normalize with the ImageNet mean/std, NCHW.
"""

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(path: str) -> np.ndarray:
    """[1, 3, 224, 224] float32, identical to torchvision Resize(256)/CenterCrop(224)/ToTensor/Normalize."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        if w <= h:
            size = (256, int(256 * h / w))
        else:
            size = (int(256 * w / h), 256)
        img = img.resize(size, Image.BILINEAR)
        left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
        img = img.crop((left, top, left + 224, top + 224))
        x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address host:port")
    parser.add_argument("--model", default="densenet121_onnx")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    client = grpcclient.InferenceServerClient(args.url)
    try:
        if not client.is_model_ready(args.model):
            print(f"model {args.model} is not ready on {args.url}", file=sys.stderr)
            return 1
        meta = client.get_model_metadata(args.model)
        inp = grpcclient.InferInput(meta.inputs[0].name, [1, 3, 224, 224], "FP32")
        inp.set_data_from_numpy(preprocess(args.image))
        out = grpcclient.InferRequestedOutput(meta.outputs[0].name, class_count=args.top_k)
        result = client.infer(args.model, [inp], outputs=[out])
    except InferenceServerException as exc:
        print(f"Triton error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()

    # Each entry is b"score:index:label".
    for rank, entry in enumerate(result.as_numpy(meta.outputs[0].name)[0], 1):
        score, index, label = entry.decode().split(":", 2)
        print(f"{rank}. {float(score):8.4f}  {label} ({index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
