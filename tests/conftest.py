"""Session fixtures shared by the whole suite.

The DenseNet-121 export (random weights, seed 0) is done once per session: every test that
needs an ONNX model or a model repository reuses it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_server"] if (Path(__file__).parent / "fixtures_server.py").exists() else []

FIXTURES = Path(__file__).parent / "fixtures"
# A test that uses one of these starts (or shares) a real tritonserver: it gets the `server` mark,
# so `-m "not server"` runs every pure test and nothing else. Tests that launch one themselves
# carry the mark explicitly.
SERVER_FIXTURES = {"triton_server", "triton_server_factory", "ov_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photographs shipped in scikit-image's wheel."""
    from dnx.preprocess import sample_photographs

    found = sample_photographs()
    assert len(found) >= 5, "scikit-image sample photographs missing"
    return found


@pytest.fixture(scope="session")
def photo_array():
    """The shipped photographs, preprocessed: float32 [N, 3, 224, 224]."""
    from dnx.preprocess import photo_batch

    return photo_batch()


@pytest.fixture(scope="session")
def torch_reference(photo_array):
    """PyTorch FP32 logits of ``photo_array`` from the random-weight model (seed 0) every export fixture holds."""
    from dnx.exporter.torch_export import load_torch_model, torch_forward

    model, _ = load_torch_model(weights="random", seed=0)
    return torch_forward(model, photo_array)


@pytest.fixture(scope="session")
def fp32_repository(tmp_path_factory) -> Path:
    """A model repository built by the real pipeline: densenet121_onnx, random weights, max batch 8."""
    from dnx.pipeline import ExportOptions, export

    out = tmp_path_factory.mktemp("repo") / "model_repository"
    result = export(ExportOptions(out=out, precisions=("fp32",), target="cpu", runtimes=("onnxruntime",),
                                  weights="random", max_batch=8, progress=False))
    assert result.committed, [s.to_dict() for s in result.stages]
    return out


@pytest.fixture(scope="session")
def onnx_fp32_path(fp32_repository, tmp_path_factory) -> Path:
    """A read-only copy of the random-weight FP32 DenseNet-121 ONNX (dynamic batch)."""
    dst = tmp_path_factory.mktemp("onnx") / "densenet121.fp32.onnx"
    shutil.copyfile(fp32_repository / "densenet121_onnx" / "1" / "model.onnx", dst)
    dst.chmod(0o444)
    return dst


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    """After the summary is printed: end the process past MLPerf LoadGen's native teardown, which
    faults while the interpreter exits (see dnx.cli.exit_past_loadgen), so the run's own status stands."""
    from dnx.cli import exit_past_loadgen

    exit_past_loadgen(_EXIT_STATUS[-1] if _EXIT_STATUS else 0)
