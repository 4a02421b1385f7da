"""Fixtures of the operations tests: servers on exported repositories, a second export, Prometheus.

``ops_server`` serves ``fp32_repository`` exactly as exported (the session's ``triton_server``
serves a copy with test-only config edits, which `dnx check` rightly refuses). ``seed1_server``
serves a second export of the same model with other random weights (seed 1): "a replica
serving another version".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import s3_env, s3_server  # noqa: F401 - the moto S3 server, reused

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def need_prometheus() -> None:
    """Skip (with why) where Debian's prometheus is not installed; on CI it must be."""
    if Path(PROMETHEUS).is_file() and Path(PROMTOOL).is_file():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("prometheus/promtool missing on CI: scripts/install-system-deps.sh installs them (apt)")
    pytest.skip("prometheus/promtool not installed (apt-get install prometheus; scripts/install-system-deps.sh)")


@pytest.fixture(scope="session")
def seed1_repository(tmp_path_factory) -> Path:
    """Another export: the same model and options as ``fp32_repository`` but random weights of seed 1."""
    from dnx.pipeline import ExportOptions, export

    out = tmp_path_factory.mktemp("seed1") / "model_repository"
    result = export(ExportOptions(out=out, precisions=("fp32",), target="cpu", runtimes=("onnxruntime",),
                                  weights="random", seed=1, max_batch=8, progress=False))
    assert result.committed, [s.to_dict() for s in result.stages]
    return out


@pytest.fixture(scope="session")
def ops_server(triton_server_factory, fp32_repository, tmp_path_factory):
    return triton_server_factory(fp32_repository, log_file=tmp_path_factory.mktemp("ops") / "tritonserver.log")


@pytest.fixture(scope="session")
def seed1_server(triton_server_factory, seed1_repository, tmp_path_factory):
    return triton_server_factory(seed1_repository, log_file=tmp_path_factory.mktemp("ops1") / "tritonserver.log")
