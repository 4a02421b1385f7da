"""Shared references for the serving tests: the photographs and in-process ONNX Runtime outputs."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def photo_paths():
    from dnx.preprocess import sample_photographs

    return sample_photographs()


@pytest.fixture(scope="session")
def photo_inputs(photo_paths):
    from dnx.preprocess import load_image

    return np.stack([load_image(p) for p in photo_paths])


@pytest.fixture(scope="session")
def reference_logits(serving_repository, served_model, photo_inputs):
    """In-process ONNX Runtime (CPU) on the same model file the server serves."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(serving_repository / served_model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": photo_inputs})[0]


@pytest.fixture(scope="session")
def served_labels(serving_repository, served_model):
    return (serving_repository / served_model / "labels.txt").read_text().splitlines()
