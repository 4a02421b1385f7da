"""`make install`'s choices: the apt packages of scripts/install-system-deps.sh, and TORCH=cpu.

No Docker engine can run on the machines dnx is developed on, so `docker` is a fake script in a
private PATH (the one thing mocked); bash, grep and ldconfig are the real ones. The script's
DRY_RUN=1 prints the packages it would install and stops before apt-get.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-system-deps.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# A development requirement (README: `make install`, `make test`), not an optional extra: missing is a failure.
MAKE_MISSING = "make is not installed; the README's setup needs it (apt-get install make)"


def _path(tmp_path, docker: str | None = None, docker_compose: bool = False) -> Path:
    """A PATH folder with the real grep and ldconfig, and the given fake docker commands."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("grep", "ldconfig"):
        real = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        (folder / tool).symlink_to(real)
    fakes = {"docker": docker, "docker-compose": "exit 0" if docker_compose else None}
    for name, body in fakes.items():
        if body is not None:
            (folder / name).write_text(f"#!/bin/sh\n{body}\n")
            (folder / name).chmod(0o755)
    return folder


def _apt(folder: Path) -> list[str]:
    out = subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": str(folder), "DRY_RUN": "1"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("apt: "), line
    return [] if line == "apt: (none)" else line[len("apt: "):].split()


def _libb64() -> list[str]:
    listed = subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    return [] if "libb64.so.0d" in listed else ["libb64-0d"]


# `docker info` answers only where an engine runs; `docker compose version` where the plugin is.
ENGINE_WITHOUT_COMPOSE = 'case "$1" in info) exit 0;; *) exit 1;; esac'
ENGINE_WITH_COMPOSE = "exit 0"
CLIENT_ONLY = 'echo "Cannot connect to the Docker daemon" >&2; exit 1'


@pytest.mark.parametrize(
    "docker, docker_compose, wants_compose",
    [
        (None, False, False),  # no docker at all
        (CLIENT_ONLY, False, False),  # a client but no engine (these machines): no Docker packages
        (ENGINE_WITHOUT_COMPOSE, False, True),  # an engine, no compose client: docker-compose lints the file
        (ENGINE_WITHOUT_COMPOSE, True, False),  # docker-compose already there
        (ENGINE_WITH_COMPOSE, False, False),  # the compose plugin is there
    ],
)
def test_docker_packages_only_with_a_docker_engine(tmp_path, docker, docker_compose, wants_compose):
    apt = _apt(_path(tmp_path, docker, docker_compose))
    assert apt == _libb64() + (["docker-compose"] if wants_compose else [])
    assert "docker.io" not in apt and "containerd" not in apt


@pytest.mark.parametrize("torch, index", [("cpu", CPU_INDEX), (None, None)])
def test_make_install_torch_variable(tmp_path, torch, index):
    assert shutil.which("make"), MAKE_MISSING
    args = ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"] + ([f"TORCH={torch}"] if torch else [])
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pips = [line for line in out.stdout.splitlines() if "/pip install" in line and "--upgrade pip" not in line]
    if index is None:  # the default is unchanged: one pip install of the project, default index
        assert len(pips) == 1 and "--index-url" not in pips[0]
    else:  # torch and torchvision from the CPU index first; the project install then keeps them
        assert pips[0].endswith(f"--index-url {index} torch torchvision") and "-c constraints.txt" in pips[0]
        assert pips[1].endswith("-e '.[dev]'") and "--index-url" not in pips[1]


def test_make_install_rejects_an_unknown_torch_build(tmp_path):
    assert shutil.which("make"), MAKE_MISSING
    out = subprocess.run(["make", "-n", "install", "TORCH=cuda", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "TORCH=cuda is not a choice: use TORCH=cpu" in out.stderr
