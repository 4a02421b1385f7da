"""Launch ``tritonserver`` on a model repository, wait until it is ready, stop it cleanly.

Two modes:

* ``local``: the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel. It
  serves the *unchanged* repository: models with ``backend: "onnxruntime"`` (and
  ``"openvino"``) run through the Python-based backends under ``dnx/serving/backends/``;
  TensorRT plans are skipped with a logged reason (no TensorRT here).
* ``docker``: the NGC ``tritonserver`` image (see :mod:`dnx.serving.docker`).

``auto`` picks docker when a Docker engine answers, else local. Models are loaded
explicitly (``--model-control-mode explicit``) so a model that cannot run here is left
out instead of failing the whole server.

Example::

    with TritonServer("model_repository", grpc_port=0) as server:   # 0: pick a free port
        print(server.grpc_url, server.loaded)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from dnx.cpu import this_cpu, unsafe_variants
from dnx.manifest import load_manifest
from dnx.errors import InputError, ServerError
from dnx.ops.metrics import SERVER_METRICS_FLAGS
from dnx.serving import docker as docker_mode
from dnx.serving.local import (  # noqa: F401 - re-exported: the server's parts, one import away
    BACKEND_COMMON, DEFAULT_PORTS, WATCHDOG, WATCHDOG_GRACE_S, LocalTriton, check_ports, find_local_triton, free_port,
    local_command, log_tail, make_backend_dir, repository_view, start_watchdog, tritonserver_argv,
)
from dnx.serving.servable import TENSORRT, ModelChoice, choose_models
from dnx.signals import Interrupted, die_with_parent, hurry, terminating
from dnx.storage.remote import check_reachable_from_container, open_remote
from dnx.workdirs import make_dir

log = logging.getLogger(__name__)

MODES = ("auto", "local", "docker")
class TritonServer:
    """A running ``tritonserver``: start it, wait until ready, stop it (also as a context manager).

    ``mode``: ``local`` | ``docker`` | ``auto``. Ports given as ``0`` are replaced by free ones.
    ``models`` restricts loading to those names; ``tritonserver`` overrides the binary path and
    ``image_tag`` the NGC tag (docker). After :meth:`start`, ``loaded`` lists the models served
    and ``skipped`` maps the others to the reason; ``urls`` gives the client addresses.

    The server runs in its own process group (the Python backend's stubs too), so :meth:`stop`
    leaves nothing behind; a local server also gets SIGTERM if the thread that started it dies.
    """

    def __init__(
        self,
        repository: str | Path = "model_repository",
        *,
        mode: str = "local",
        host: str = "127.0.0.1",
        grpc_port: int = DEFAULT_PORTS["grpc"],
        http_port: int = DEFAULT_PORTS["http"],
        metrics_port: int = DEFAULT_PORTS["metrics"],
        log_file: str | Path | None = None,
        ready_timeout: float = 180.0,
        models: list[str] | None = None,
        tritonserver: str | Path | None = None,
        image_tag: str | None = None,
        endpoint_url: str | None = None,
        s3_sync: bool = False,
    ):
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        # An s3:// repository stays a string (Path would fold "//"); see dnx.storage.remote.
        self.repository = str(repository) if str(repository).startswith("s3://") else Path(repository)
        self.endpoint_url = endpoint_url
        self.s3_sync = s3_sync  # copy an s3:// repository into a local cache first instead of Triton reading it
        self.remote = None  # dnx.storage.remote.RemoteRepository once an s3:// repository is resolved
        self.mode = mode
        self.host = host
        ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        for name, port in ports.items():
            while port == 0 or (ports[name] == 0 and port in ports.values()):
                port = free_port(self._bind_probe_host)
            ports[name] = port
        self.grpc_port, self.http_port, self.metrics_port = ports["grpc"], ports["http"], ports["metrics"]
        self.ready_timeout = ready_timeout
        self.only_models = models
        self.tritonserver = tritonserver
        self.image_tag = image_tag
        self._workdir: Path | None = None
        self._keep_log = False
        self.log_file = Path(log_file) if log_file else None
        self.loaded: list[str] = []
        self.skipped: dict[str, str] = {}
        self.argv: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._container: str | None = None

    # -- addresses ----------------------------------------------------------------------
    @property
    def _bind_probe_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def _client_host(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_url(self) -> str:
        """``host:port`` for ``tritonclient.grpc``."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` for ``tritonclient.http``."""
        return f"{self._client_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics endpoint."""
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def urls(self) -> dict[str, str]:
        """``{"grpc": ..., "http": ..., "metrics": ...}``."""
        return {"grpc": self.grpc_url, "http": self.http_url, "metrics": self.metrics_url}

    @property
    def pid(self) -> int | None:
        """The local ``tritonserver`` process id (None before start and in docker mode)."""
        return self._proc.pid if self._proc is not None and self._container is None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "TritonServer":
        """Launch the server and block until it and every loaded model are ready."""
        if self.running:
            return self
        # Private (0700): generated backends, the view of an s3:// repository and, by default, the log.
        self._workdir = make_dir("dnx-triton")
        self._keep_log = False
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _local_view(self) -> Path:
        """The folder to choose models from: the repository, or the configs of an s3:// one."""
        if isinstance(self.repository, str):
            self.remote = open_remote(self.repository, self._workdir / "view", endpoint_url=self.endpoint_url,
                                      sync=self.s3_sync)
            log.info("serving %s (version %s) from S3", self.remote.uri, self.remote.published.version)
            return self.remote.view
        if not self.repository.is_dir():
            raise InputError(
                f"model repository {self.repository} does not exist; build it with `dnx export` (or `make demo`) or pass --repository"
            )
        return self.repository

    def _start(self) -> None:
        view = self._local_view()
        # A repository dnx did not build may have no manifest; a corrupt one is refused as tune,
        # check, publish and perf refuse it (one line), before anything starts.
        load_manifest(view, required=False)
        if self.mode == "auto":
            self.mode = "docker" if docker_mode.docker_available() else "local"
            log.info("mode auto: using %s", self.mode)
        elif self.mode == "docker" and not docker_mode.docker_available():
            raise ServerError("no Docker engine answers `docker info`; start Docker or use --mode local")
        gpu = docker_mode.gpu_present()
        choices = choose_models(view, mode=self.mode, gpu=gpu)
        if self.only_models is not None:
            known = {c.name for c in choices}
            unknown = [m for m in self.only_models if m not in known]
            if unknown:
                raise InputError(f"models {unknown} are not in {self.repository}; pick from {sorted(known)}")
            choices = [c for c in choices if c.name in self.only_models]
        self.loaded = [c.name for c in choices if c.load]
        self.skipped = {c.name: c.reason for c in choices if not c.load}
        for name, reason in self.skipped.items():
            log.warning("skipping model %s: %s", name, reason)
        if not self.loaded:
            detail = "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "it holds no model folders"
            raise ServerError(f"nothing in {self.repository} can be served in {self.mode} mode ({detail}); "
                              "export a model with `dnx export`")
        check_ports(self.host, {"grpc": self.grpc_port, "http": self.http_port, "metrics": self.metrics_port})
        self._launch(choices, gpu, view)
        self._wait_ready()

    def _launch(self, choices: list[ModelChoice], gpu: bool, view: Path) -> None:
        if self.log_file is None:
            self.log_file = self._workdir / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        repository = self.remote.triton_uri if self.remote else self.repository
        if self.remote:
            env.update(self.remote.env)
        ports = {"host": self.host, "grpc_port": self.grpc_port, "http_port": self.http_port,
                 "metrics_port": self.metrics_port}
        if self.mode == "local":
            self.argv = local_command(self.tritonserver, repository, self._workdir, self.loaded, env, **ports)
        else:
            self.argv = self._docker_argv(repository, choices, gpu, view, ports)
        log.info("starting: %s", " ".join(self.argv))
        with open(self.log_file, "wb") as out:
            self._proc = subprocess.Popen(
                die_with_parent(self.argv) if self.mode == "local" else self.argv, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        if self.mode == "local":
            self._watchdog = start_watchdog(self._proc.pid)

    def _docker_argv(self, repository, choices: list[ModelChoice], gpu: bool, view: Path, ports: dict) -> list[str]:
        """``docker run`` of the NGC image whose TensorRT matches the repository's plans."""
        tag = self.image_tag or docker_mode.select_image_tag(
            load_manifest(view, required=False), [c.name for c in choices if c.load and c.backend in TENSORRT])
        if self.remote:
            check_reachable_from_container(self.remote)
        self._container = f"dnx-tritonserver-{os.getpid()}-{self.grpc_port}"
        return docker_mode.docker_run_argv(
            repository, tag=tag, env_names=sorted(self.remote.env) if self.remote else (), models=self.loaded, gpu=gpu,
            name=self._container, python_models=any(c.load and c.backend == "python" for c in choices), **ports,
        ) + list(SERVER_METRICS_FLAGS)

    def cpu_warnings(self) -> list[str]:
        """One line per loaded model whose numerics this CPU does not meet (:mod:`dnx.cpu`), from the manifest."""
        view = self.remote.view if self.remote else self.repository
        try:
            manifest = load_manifest(view, required=False)
        except InputError:
            return []  # an unreadable manifest has its own error where it matters
        if manifest is None:
            return []
        return unsafe_variants({n: r for n, r in manifest.models.items() if n in self.loaded}, this_cpu())

    def _get(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self._client_host}:{self.http_port}{path}", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in self.loaded]
        while pending:
            if self._proc.poll() is not None:
                self._keep_log = True
                raise ServerError(
                    f"tritonserver exited with code {self._proc.returncode} while starting: "
                    f"{log_tail(self.log_file)} (full log: {self.log_file})"
                )
            if time.monotonic() > deadline:
                self._keep_log = True
                waiting = ", ".join(p.split("/")[3] if "/models/" in p else "server" for p in pending)
                raise ServerError(
                    f"tritonserver not ready after {self.ready_timeout:.0f}s (waiting for: {waiting}): "
                    f"{log_tail(self.log_file)}; raise --timeout or read {self.log_file}"
                )
            if self._get(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.25)

    def wait(self) -> int:
        """Block until the server exits; raise :class:`ServerError` (with the log tail) if it fails."""
        code = self._proc.wait()
        if code != 0:
            self._keep_log = True
            raise ServerError(f"tritonserver exited with code {code}: {log_tail(self.log_file)} (full log: {self.log_file})")
        return code

    def stop(self, timeout: float = 8.0) -> None:
        """Stop the server: SIGTERM (graceful unload), then SIGKILL to its whole process group.

        Waits at most ``timeout`` seconds for the graceful part, less once a second SIGINT or
        SIGTERM arrived (:func:`dnx.signals.hurry`); the group kill always runs, so nothing is
        left behind within ``timeout`` + a moment (the 15 s promised in docs/RELIABILITY.md).
        The private work folder goes too, unless the server failed and its log is in there.
        """
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                if self._container:
                    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                        subprocess.run(docker_mode.docker_stop_argv(self._container, timeout_s=max(1, int(timeout) - 2)),
                                       capture_output=True, timeout=timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while proc.poll() is None and time.monotonic() < deadline and not hurry():
                    time.sleep(0.05)
                if proc.poll() is None:
                    log.warning("tritonserver did not stop within %.0fs; killing it", timeout)
        finally:
            if proc is not None:
                # Whatever is left of the group (the server, Python backend stubs) goes now.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if self._container:
                    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                        subprocess.run(["docker", "rm", "-f", self._container], capture_output=True, timeout=10)
                proc.wait()
            watchdog, self._watchdog = getattr(self, "_watchdog", None), None
            if watchdog is not None:
                watchdog.kill()
                watchdog.wait()
            if self._workdir is not None:
                if getattr(self, "_keep_log", False) and self.log_file and self._workdir in self.log_file.parents:
                    shutil.rmtree(self._workdir / "backends", ignore_errors=True)
                else:
                    shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None


def exposure_warning(host: str) -> str | None:
    """A warning when ``host`` exposes the server beyond this machine (Triton has no authentication)."""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    return (f"--host {host} exposes Triton beyond this machine, and Triton has no authentication: anyone who "
            "reaches the ports can run, load and unload models. Put a reverse proxy with authentication in front, "
            "or use the Kubernetes deployment (a ClusterIP Service behind your ingress).")


def serve(server: TritonServer, on_ready: Callable[[TritonServer], None] | None = None) -> None:
    """Start ``server``, call ``on_ready``, and block until Ctrl-C / SIGTERM (or the server dies).

    The server is always stopped on the way out, a second signal only makes that faster
    (:mod:`dnx.signals`). A signal then propagates as :class:`~dnx.signals.Interrupted` saying
    the server was stopped, so the command ends with 128 + signal like every other. Signals are
    handled only when called from the main thread.
    """
    try:
        with terminating():
            try:
                server.start()
                if on_ready:
                    on_ready(server)
                server.wait()
            finally:
                server.stop()
    except Interrupted as exc:
        raise exc.with_detail("tritonserver stopped") from None
