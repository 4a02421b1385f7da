"""The local mode's parts: the ``tritonserver`` binary of the nvidia-pytriton wheel, the backend folder
beside it, the repository view it reads, its argv, free and busy ports, and the watchdog that takes
its process group down with dnx. :class:`dnx.serving.server.TritonServer` runs the lifecycle.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dnx.errors import InputError, MissingDependencyError, ServerError
from dnx.ops.metrics import SERVER_METRICS_FLAGS
from dnx.serving.servable import BACKENDS_SOURCE, local_backends
from dnx.signals import die_with_parent
from dnx.storage.s3 import is_s3_uri

DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002}
# Option mapping and request batching shared with dnx's in-process runners, copied beside each model.py.
BACKEND_COMMON = Path(__file__).parent.parent / "runtimes" / "backend_common.py"
# --------------------------------------------------------------------------- local binary


@dataclass(frozen=True)
class LocalTriton:
    """Where the ``nvidia-pytriton`` wheel keeps the server, its libraries and the Python backend."""

    binary: Path
    libs: Path
    python_backend: Path
    stub: Path


def find_local_triton(binary: str | Path | None = None) -> LocalTriton:
    """Locate ``tritonserver`` from the ``nvidia-pytriton`` wheel (or ``binary``)."""
    how = "install it with `pip install nvidia-pytriton==0.7.0` or use --mode docker"
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the nvidia-pytriton wheel (which ships tritonserver) is not installed; {how}")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = Path(binary) if binary else root / "bin" / "tritonserver"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise MissingDependencyError(f"tritonserver binary not found at {binary}; {how}")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependencyError(f"nvidia-pytriton has no Python backend stub for Python {py}; use Python 3.8-3.13 or --mode docker")
    return LocalTriton(binary, root.parent.parent / "nvidia_pytriton.libs", root / "backends" / "python", stub)


def make_backend_dir(dest: Path, triton: LocalTriton) -> Path:
    """Fill ``dest`` with ``python/`` (backend, utils, stub) and every ``<name>/model.py`` dnx ships,
    each with ``dnx_backend_common.py`` (from :mod:`dnx.runtimes.backend_common`) beside it."""
    python = dest / "python"
    python.mkdir(parents=True, exist_ok=True)
    for src in (triton.python_backend / "libtriton_python.so", triton.python_backend / "triton_python_backend_utils.py", triton.stub):
        shutil.copy2(src, python / src.name)
    for name in local_backends():
        (dest / name).mkdir(exist_ok=True)
        shutil.copy2(BACKENDS_SOURCE / name / "model.py", dest / name / "model.py")
        shutil.copy2(BACKEND_COMMON, dest / name / "dnx_backend_common.py")
    return dest


def repository_view(repository: Path, dest: Path) -> Path:
    """``dest`` mirroring ``repository`` for a local tritonserver: real folders, every file a symlink.

    Triton's Python backend stubs import a model's ``model.py`` (and what it imports) from its
    version folder, and their interpreter is isolated, so ``PYTHONDONTWRITEBYTECODE`` does not
    reach it: served directly, the repository gains ``__pycache__/`` folders and is no longer
    what was exported (``dnx publish`` refuses it; its content id moves). Through the view, the
    caches land in dnx's work folder. Files are read through their links, so a config ``dnx tune``
    replaces is read anew on the next load.
    """
    dest.mkdir(parents=True)
    for src in sorted(repository.iterdir()):
        if src.name.startswith("."):
            continue
        if src.is_dir():
            repository_view(src, dest / src.name)
        else:
            (dest / src.name).symlink_to(src.absolute())
    return dest


def tritonserver_argv(
    binary: str | Path,
    repository: str | Path,
    backend_dir: str | Path,
    models: list[str],
    *,
    host: str,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
) -> list[str]:
    """The local ``tritonserver`` command line (explicit model control, all services on ``host``)."""
    remote = str(repository).startswith("s3://")  # Triton reads s3:// itself; never a local path
    argv = [
        str(binary),
        f"--model-repository={repository if remote else Path(repository).resolve()}",
        f"--backend-directory={backend_dir}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in models),
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
        "--exit-timeout-secs=10",
        # dnx renders every config whole; Triton's auto-complete would start one more Python stub
        # per (re)load only to read it back: ~1.1-1.3 s per load here, paid by each tune candidate.
        "--disable-auto-complete-config",
        *SERVER_METRICS_FLAGS,  # latency quantiles for SLOs, CPU/GPU memory
    ]
    return argv


# --------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise :class:`ServerError` unless every port in ``ports`` (name -> number) can be bound on ``host``.

    Run before launching, so a busy port is reported in one line instead of a server log.
    """
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise InputError(f"--{name}-port and --{seen[port]}-port are both {port}; give each service its own port")
        seen[port] = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ServerError(
                        f"{name} port {port} on {host} is already in use (another tritonserver?); "
                        f"stop that process or pass --{name}-port with a free port"
                    ) from None
                raise ServerError(f"cannot bind {host}:{port} for {name} ({exc.strerror}); check --host") from None


# --------------------------------------------------------------------------- the server


# Run beside a local tritonserver: when dnx dies without stopping it (SIGKILL), PR_SET_PDEATHSIG gives
# tritonserver a SIGTERM, but Python backend stubs it was still starting or unloading outlive it when
# its --exit-timeout-secs runs out (seen under load: orphaned stubs for half an hour). The watchdog
# gets the same SIGTERM and takes the whole process group down: SIGTERM, then SIGKILL after GRACE.
WATCHDOG = """
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
def stop(*_):
    end = time.monotonic() + grace
    while alive() and time.monotonic() < end:
        time.sleep(0.2)
    if alive():
        os.killpg(pgid, signal.SIGKILL)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while alive():
    time.sleep(1)
"""
WATCHDOG_GRACE_S = 12.0  # tritonserver's --exit-timeout-secs=10, and a moment


def log_tail(path: Path, lines: int = 6) -> str:
    """The server log's last error lines (or last lines), joined into one line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    text = [t.strip() for t in text if t.strip() and not t.startswith(("+", "|"))]
    errors = [t for t in text if t[:1] == "E" or "error" in t.lower() or "failed" in t.lower()]
    noise = ("NVML", "DCGM", "CudaDriverHelper", "pinned")
    errors = [t for t in errors if not any(n in t for n in noise)]
    return " | ".join((errors or text)[-lines:]) or "(empty log)"


def local_command(binary: str | Path | None, repository, workdir: Path, models: list[str], env: dict, *, host: str,
                  grpc_port: int, http_port: int, metrics_port: int) -> list[str]:
    """The local ``tritonserver``'s argv over ``repository`` (a folder is read through a view in ``workdir``,
    an ``s3://`` one directly); ``env`` gets the libraries' and this interpreter's paths."""
    triton = find_local_triton(binary)
    backend_dir = make_backend_dir(workdir / "backends", triton)
    if not is_s3_uri(str(repository)):
        repository = repository_view(Path(repository), workdir / "repository")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(triton.libs), env.get("LD_LIBRARY_PATH")]))
    # The embedded stub finds this interpreter's site-packages through PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return tritonserver_argv(triton.binary, repository, backend_dir, models, host=host, grpc_port=grpc_port,
                             http_port=http_port, metrics_port=metrics_port)


def start_watchdog(pid: int) -> subprocess.Popen:
    """The process that takes ``pid``'s process group down with dnx (see :data:`WATCHDOG`)."""
    return subprocess.Popen(die_with_parent([sys.executable, "-c", WATCHDOG, str(pid), str(WATCHDOG_GRACE_S)]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
