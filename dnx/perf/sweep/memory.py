"""Memory per model and level: what ``dnx perf`` and ``dnx bench`` record beside each measured level.

A local server (one this run launched, or one listening on a loopback ``--url``: its process is
found by its listening port, :func:`listening_pid`) gives the RSS of each
model's own processes: the Python backend stubs of dnx's ``onnxruntime`` / ``openvino`` /
``python`` backends, one per instance, named by their command line
(:func:`dnx.ops.metrics.memory_snapshot`); an ensemble's figure sums its steps'. Any server with
a metrics endpoint adds Triton's own ``nv_cpu_memory_used_bytes`` (the host's used memory, which
is what Triton exports; per-model CPU memory it does not). A reading that fails leaves the
figure empty: memory is recorded beside the measurement, never a reason to lose it.
"""

from __future__ import annotations

import os
from pathlib import Path

from dnx.errors import ServerError
from dnx.ops.metrics import memory_snapshot
from dnx.perf.analyzer.argv import is_local_host, url_host
from dnx.perf.served import ServedModel

FIELDS = ("rss_mib", "server_rss_mib", "triton_cpu_memory_mib")
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == _LISTEN and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def listening_pid(port: int) -> int | None:
    """The ``tritonserver`` of this machine (and user) that listens on TCP ``port`` (Linux ``/proc``), else None
    (a docker-proxy's port, for one, is not the server's process)."""
    wanted = {f"socket:[{i}]" for i in _listening_inodes(port)}
    if not wanted:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                return int(proc.name) if (proc / "comm").read_text().strip() == "tritonserver" else None
        except OSError:  # gone, or another user's
            continue
    return None


class MemoryProbe:
    """Reads the memory figures of one model after a level; ``probe(model) -> {field: MiB or None}``."""

    def __init__(self, *, server_pid: int | None = None, metrics_url: str | None = None):
        self.server_pid = server_pid
        self.metrics_url = (metrics_url if not metrics_url or "://" in metrics_url else f"http://{metrics_url}")
        self.notes: list[str] = []  # why a source was given up (once each)

    @classmethod
    def for_url(cls, url: str, metrics_url: str | None) -> "MemoryProbe":
        """The probe of a server dnx did not launch: its process is found by port when ``url`` is on this machine."""
        port = url.rsplit(":", 1)[-1]
        local = is_local_host(url_host(url)) and port.isdigit()
        return cls(server_pid=listening_pid(int(port)) if local else None, metrics_url=metrics_url)

    @property
    def sources(self) -> list[str]:
        """What this probe reads, for the report."""
        return ((["RSS of the local server's processes"] if self.server_pid else [])
                + ([f"Triton metrics {self.metrics_url}"] if self.metrics_url else []))

    def _snapshot(self, **kw) -> dict:
        try:
            return memory_snapshot(**kw)
        except ServerError as exc:
            # A metrics endpoint that does not answer would cost its timeout at every level.
            if "metrics_url" in kw:
                self.metrics_url = None
            else:
                self.server_pid = None
            self.notes.append(str(exc))
            return {}

    def __call__(self, model: ServedModel) -> dict[str, float | None]:
        out: dict[str, float | None] = dict.fromkeys(FIELDS)
        if self.server_pid:
            rss = self._snapshot(server_pid=self.server_pid).get("rss_mib", {})
            mine = [rss[n] for n in [model.name, *model.ensemble_steps] if n in rss]
            out["rss_mib"] = round(sum(mine), 1) if mine else None
            out["server_rss_mib"] = rss.get("tritonserver")
        if self.metrics_url:
            triton = self._snapshot(metrics_url=self.metrics_url).get("triton", {})
            out["triton_cpu_memory_mib"] = triton.get("cpu_used_mib")
        return out
