"""Docker mode: image tag choice and the `docker run` command line (pure functions).

No Docker engine or GPU exists on the machines dnx is developed on, so the container itself is
never started here; `auto` mode is checked to fall back to local.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dnx.errors import ServerError
from dnx.manifest import Manifest
from dnx.serving import docker as d
from dnx.serving.server import TritonServer

ROOT = Path(__file__).resolve().parents[2]


def _manifest(**trt_by_model):
    return Manifest.from_dict({"models": {name: {"tensorrt": trt} for name, trt in trt_by_model.items()}})


def test_tag_follows_recorded_tensorrt_version():
    m = _manifest(densenet121_trt_fp16={"version": "10.13.3.9"}, densenet121_trt_int8={"version": "10.13.3.9"})
    assert d.select_image_tag(m, ["densenet121_trt_fp16", "densenet121_trt_int8"]) == "26.02"
    assert d.select_image_tag(_manifest(p={"version": "10.8.0.43"}), ["p"]) == "25.02"


def test_tag_prefers_the_recorded_build_image():
    m = _manifest(p={"version": "10.14.1.48", "image": "nvcr.io/nvidia/tensorrt:26.03-py3"})
    assert d.select_image_tag(m, ["p"]) == "26.03"


def test_default_tag_without_plans_or_versions():
    assert d.select_image_tag(None, []) == d.DEFAULT_TAG
    assert d.select_image_tag(Manifest(), ["p"]) == d.DEFAULT_TAG  # warned, not fatal


def test_conflicting_or_unknown_tensorrt_versions():
    with pytest.raises(ServerError, match="different tritonserver images"):
        d.select_image_tag(_manifest(a={"version": "10.8.0"}, b={"version": "10.14.1"}), ["a", "b"])
    with pytest.raises(ServerError, match="no known tritonserver image ships TensorRT 9.2"):
        d.select_image_tag(_manifest(a={"version": "9.2.0"}), ["a"])


def test_docker_run_argv_gpu():
    argv = d.docker_run_argv("/data/repo", tag="26.02", models=["a", "b"], gpu=True, grpc_port=9001,
                             http_port=9000, metrics_port=9002, name="x")
    assert argv[:2] == ["docker", "run"] and "--rm" in argv
    assert argv[argv.index("--gpus") + 1] == "all"
    assert "127.0.0.1:9000:8000" in argv and "127.0.0.1:9001:8001" in argv and "127.0.0.1:9002:8002" in argv
    assert argv[argv.index("-v") + 1] == "/data/repo:/models:ro"
    image = argv.index("nvcr.io/nvidia/tritonserver:26.02-py3")
    assert argv[image + 1 :] == ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit",
                                 "--load-model=a", "--load-model=b"]


def test_python_backend_models_get_the_image_with_pillow():
    """The preprocess model needs Pillow, absent from the NGC image (no Docker engine here: argv only)."""
    argv = d.docker_run_argv("repo", tag="26.03", models=["densenet121"], gpu=False, python_models=True)
    assert "dnx-tritonserver:26.03" in argv and not any(a.startswith("nvcr.io/") for a in argv)
    dockerfile = (Path(__file__).parents[2] / "docker" / "Dockerfile.serve").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3" in dockerfile and "pillow==" in dockerfile


def test_docker_run_argv_cpu_has_no_gpus_flag():
    argv = d.docker_run_argv("repo", tag="26.03", models=["a"], gpu=False, host="0.0.0.0")
    assert "--gpus" not in argv and "0.0.0.0:8001:8001" in argv
    assert argv[argv.index("-v") + 1] == f"{Path('repo').resolve()}:/models:ro"


@pytest.mark.server
@pytest.mark.skipif(d.docker_available(), reason="a Docker engine answers here; auto would pick docker")
def test_auto_mode_falls_back_to_local_without_docker_engine(tmp_path):
    from tests.fixtures_server import add_test_models

    add_test_models(tmp_path)
    server = TritonServer(tmp_path, mode="auto", grpc_port=0, http_port=0, metrics_port=0, log_file=tmp_path / "log")
    try:
        server.start()
        assert server.mode == "local" and server.argv[0].endswith("tritonserver")
    finally:
        server.stop()


@pytest.mark.skipif(d.docker_available(), reason="a Docker engine answers here")
def test_docker_mode_without_engine_is_a_clean_error(tmp_path):
    from tests.fixtures_server import add_test_models

    add_test_models(tmp_path)
    with pytest.raises(ServerError, match="no Docker engine answers `docker info`; start Docker or use --mode local"):
        TritonServer(tmp_path, mode="docker", grpc_port=0, http_port=0, metrics_port=0).start()


# Keys of a Compose service used or plausible in docker/docker-compose.yml (Compose specification);
# anything else is a typo that `docker compose config` would reject.
SERVICE_KEYS = {"image", "build", "command", "entrypoint", "volumes", "ports", "environment", "shm_size",
                "ulimits", "deploy", "healthcheck", "depends_on", "restart", "working_dir", "user", "ipc"}
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?][^}]*)?\}")


def test_compose_file_is_valid():
    """A Python lint of docker/docker-compose.yml: no Docker engine or compose client needed."""
    import yaml
    path = ROOT / "docker" / "docker-compose.yml"
    text = path.read_text()
    assert not re.sub(INTERPOLATION, "", text).count("${"), "malformed ${VAR} interpolation"
    # ${VAR:-default} becomes its default (or "x"), as Compose would with VAR unset.
    doc = yaml.safe_load(INTERPOLATION.sub(lambda m: re.sub(r"^:?[-?]", "", m.group(2) or "") or "x", text))
    services = doc["services"]
    assert set(services) == {"tritonserver", "client"}
    for name, svc in services.items():
        assert set(svc) <= SERVICE_KEYS, f"{name}: unknown keys {set(svc) - SERVICE_KEYS}"
        assert "image" in svc or "build" in svc
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} must bind 127.0.0.1"
    server = services["tritonserver"]
    # The NGC image plus Pillow for the ensemble's preprocessing model, built from Dockerfile.serve.
    assert server["image"].startswith("dnx-tritonserver:")
    serve_file = (path.parent / server["build"]["context"]).resolve() / server["build"]["dockerfile"]
    assert serve_file.is_file() and "nvcr.io/nvidia/tritonserver:" in serve_file.read_text()
    assert "--model-repository=/models" in server["command"]
    assert "../model_repository:/models:ro" in server["volumes"]
    client = services["client"]
    assert set(client["depends_on"]) <= set(services)
    context = (path.parent / client["build"]["context"]).resolve()
    assert (context / client["build"]["dockerfile"]).is_file() and (context / "pyproject.toml").is_file()


def _compose():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("no compose client (installed only where a Docker engine runs); test_compose_file_is_valid lints it")


def test_compose_client_accepts_the_file():
    cmd = _compose() + ["-f", str(ROOT / "docker" / "docker-compose.yml"), "config"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # The server image is built from docker/Dockerfile.serve (the NGC image plus Pillow).
    assert "dnx-tritonserver" in out.stdout and "Dockerfile.serve" in out.stdout and "/models" in out.stdout
