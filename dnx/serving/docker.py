"""Docker mode: the NGC ``tritonserver`` image, its tag and its ``docker run`` command line.

The argv and the tag are pure functions of their inputs so they can be tested on machines
without a Docker engine or a GPU (like the ones dnx is developed on).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from dnx.errors import ServerError
from dnx.manifest import Manifest
from dnx.model_repository.layout import MANIFEST_NAME

log = logging.getLogger(__name__)

IMAGE = "nvcr.io/nvidia/tritonserver"
# TensorRT (major.minor) -> the newest Triton release (YY.MM) that ships it (Triton's support
# matrix). An engine only loads in the TensorRT it was built with, so the image follows the plans.
TENSORRT_TO_TRITON = {
    "10.8": "25.02",
    "10.9": "25.05",
    "10.10": "25.07",
    "10.11": "25.10",
    "10.13": "26.02",
    "10.14": "26.07",
}
DEFAULT_TAG = "26.03"  # no TensorRT plan in the repository: same month as `make engines`' default image
CONTAINER_REPOSITORY = "/models"
CONTAINER_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


SERVE_IMAGE = "dnx-tritonserver"  # IMAGE plus Pillow, built from docker/Dockerfile.serve


def image_for_tag(tag: str, python_models: bool = False) -> str:
    """``nvcr.io/nvidia/tritonserver:<YY.MM>-py3``, or ``dnx-tritonserver:<YY.MM>`` for Python-backend models.

    The ``<model>_preprocess`` model decodes images with Pillow, which the NGC image lacks;
    ``docker build -f docker/Dockerfile.serve --build-arg TRITON_TAG=<YY.MM> -t dnx-tritonserver:<YY.MM> .``
    adds it.
    """
    return f"{SERVE_IMAGE}:{tag}" if python_models else f"{IMAGE}:{tag}-py3"


def tag_for_tensorrt(version: str) -> str:
    """The Triton release whose TensorRT matches ``version`` (e.g. ``"10.13.3.9"`` -> ``"26.02"``)."""
    key = ".".join(str(version).split(".")[:2])
    try:
        return TENSORRT_TO_TRITON[key]
    except KeyError:
        known = ", ".join(TENSORRT_TO_TRITON)
        raise ServerError(
            f"no known tritonserver image ships TensorRT {version} (known: {known}); rebuild the engines "
            f"in nvcr.io/nvidia/tensorrt:{DEFAULT_TAG}-py3 or pass an image tag explicitly"
        ) from None


def _recorded_tag(trt: dict) -> str | None:
    """The tag of the NGC TensorRT image that built a plan, when the manifest recorded it."""
    image = trt.get("image") or trt.get("container") or ""
    tag = image.rsplit(":", 1)[-1].split("-", 1)[0] if ":" in image else ""
    return tag if len(tag) == 5 and tag[2] == "." and tag.replace(".", "").isdigit() else None


def select_image_tag(manifest: Manifest | None, plan_models: list[str]) -> str:
    """Pick the tritonserver tag for a repository whose TensorRT plans are ``plan_models``.

    Per plan the manifest's ``tensorrt`` record of the model gives the build image (same NGC month
    serves it best) or at least the TensorRT ``version``; every plan must agree. With no plans
    the default tag is used.
    """
    tags: dict[str, list[str]] = {}
    for name in plan_models:
        record = manifest.models.get(name) if manifest is not None else None
        trt = (record.get("tensorrt") if record is not None else None) or {}
        version = trt.get("version")
        tag = _recorded_tag(trt) or (tag_for_tensorrt(version) if version else None)
        if tag is None:
            log.warning("%s: no TensorRT version recorded in %s; assuming image %s", name, MANIFEST_NAME, DEFAULT_TAG)
            continue
        tags.setdefault(tag, []).append(f"{name} (TensorRT {version or '?'})")
    if len(tags) > 1:
        detail = "; ".join(f"{tag}: {', '.join(names)}" for tag, names in sorted(tags.items()))
        raise ServerError(
            f"TensorRT plans need different tritonserver images ({detail}); rebuild all engines with one TensorRT version"
        )
    return next(iter(tags), DEFAULT_TAG)


def docker_run_argv(
    repository: str | Path,
    *,
    tag: str,
    models: list[str],
    gpu: bool,
    host: str = "127.0.0.1",
    grpc_port: int = 8001,
    http_port: int = 8000,
    metrics_port: int = 8002,
    name: str = "dnx-tritonserver",
    env_names: tuple[str, ...] | list[str] = (),
    python_models: bool = False,
) -> list[str]:
    """The ``docker run`` command line that serves ``repository`` (mounted read-only) with ``models``.

    An ``s3://`` repository is not mounted: Triton in the container reads it, with the
    variables ``env_names`` passed through by name (values never appear on the command line).
    ``python_models``: some of ``models`` use the Python backend (the ensemble's preprocessing),
    so the image with Pillow is used (:func:`image_for_tag`).
    """
    argv = ["docker", "run", "--rm", "--name", name, "--init", "--shm-size", "1g"]
    if gpu:
        argv += ["--gpus", "all"]
    host_ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
    for proto in ("http", "grpc", "metrics"):
        argv += ["-p", f"{host}:{host_ports[proto]}:{CONTAINER_PORTS[proto]}"]
    for env in env_names:
        argv += ["-e", env]
    if str(repository).startswith("s3://"):
        argv += [image_for_tag(tag, python_models), "tritonserver", f"--model-repository={repository}"]
    else:
        argv += ["-v", f"{Path(repository).resolve()}:{CONTAINER_REPOSITORY}:ro", image_for_tag(tag, python_models)]
        argv += ["tritonserver", f"--model-repository={CONTAINER_REPOSITORY}"]
    argv += ["--model-control-mode=explicit"]
    argv += [f"--load-model={m}" for m in models]
    return argv


def docker_stop_argv(name: str, timeout_s: int = 10) -> list[str]:
    """``docker stop`` for the container started by :func:`docker_run_argv`."""
    return ["docker", "stop", "--time", str(timeout_s), name]


def docker_available() -> bool:
    """True when a Docker engine answers ``docker info`` (a client alone is not enough)."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def gpu_present() -> bool:
    """True when an NVIDIA GPU is visible (``nvidia-smi -L`` lists one)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout
