"""What a served inference costs in CPU time: the server's, the client's, and how many cores a rate needs.

perf_analyzer reports no CPU figures, Model Analyzer records only memory for CPU models, and
Triton's ``nv_cpu_utilization`` is host-wide (it counts the load generator on the same machine).
So for a server on this machine (launched by dnx, or found by its listening port) each measured
level reads, before and after:

* CPU seconds (``/proc/<pid>/stat`` utime + stime, every thread) of ``tritonserver`` and of the
  backend stubs serving the measured model (an ensemble's steps too);
* Triton's own counters for the model (its metrics endpoint): inferences and requests;
* the CPU seconds of the finished perf_analyzer (this process's reaped children).

The CPU over Triton's count covers exactly the same interval (warm-up and unstable windows
included, in both), so the ratio is the cost of one inference as served. A remote server's CPU
cannot be read from here, and Triton's metrics are host-wide: its figures are ``None`` and the
report says so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dnx.errors import ServerError
from dnx.ops.metrics import process_memory, scrape
from dnx.perf.analyzer.argv import is_local_host, url_host
from dnx.perf.served import ServedModel
from dnx.perf.sweep.memory import listening_pid

TICK = os.sysconf("SC_CLK_TCK")
FIELDS = ("server_cpu_ms_per_inference", "client_cpu_ms_per_request", "server_cores_busy",
          "cores_per_1000_infer_s", "client_bound", "usd_per_million", "preprocess_cpu_ms_per_request")
REMOTE = "CPU figures unavailable: the server is not on this machine (Triton's metrics give host-wide CPU only)"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (all its threads) in seconds; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    t = os.times()
    return t.children_user + t.children_system


def triton_counts(metrics_url: str, model: str) -> tuple[int, int]:
    """``(inferences, requests)`` Triton has completed for ``model`` (all versions), from its metrics endpoint.

    Plain HTTP on purpose: a gRPC client in this process would break the next fork of a child that
    runs Python before exec (perf_analyzer's parent-death signal), in gRPC's at-fork handler.
    """
    inferences = requests = 0.0
    for sample in scrape(metrics_url):
        if sample.labels.get("model") != model:
            continue
        if sample.name == "nv_inference_count":
            inferences += sample.value
        elif sample.name == "nv_inference_request_success":
            requests += sample.value
    return int(inferences), int(requests)


def own_metrics_url(pid: int) -> str | None:
    """``host:port/metrics`` of the endpoint a local ``tritonserver`` was started with (None: not stated)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    flags = {}
    for i, arg in enumerate(argv):
        for name in ("--metrics-port", "--metrics-address"):
            if arg.startswith(name + "="):
                flags[name] = arg.split("=", 1)[1]
            elif arg == name and i + 1 < len(argv):
                flags[name] = argv[i + 1]
    if "--metrics-port" not in flags:
        return None
    host = flags.get("--metrics-address", "127.0.0.1")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{flags['--metrics-port']}/metrics"


@dataclass
class _Mark:
    model: ServedModel
    wall: float
    server: dict[int, float]  # pid -> CPU seconds
    client: float
    inferences: int
    requests: int


class CpuProbe:
    """``start(model)`` before a level and ``finish(mark)`` after it give that level's CPU cost fields."""

    def __init__(self, metrics_url: str | None, *, server_pid: int | None = None, core_hour_cost: float | None = None):
        if metrics_url and "://" not in metrics_url:
            metrics_url = f"http://{metrics_url}"
        self.metrics_url, self.server_pid, self.core_hour_cost = metrics_url, server_pid, core_hour_cost
        if not metrics_url:
            self.server_pid = None
        self.notes: list[str] = [] if self.server_pid else [REMOTE]

    @classmethod
    def for_url(cls, url: str, metrics_url: str | None, core_hour_cost: float | None = None) -> "CpuProbe":
        """The probe of a server dnx did not launch: measured when ``url`` is on this machine, whose
        metrics port is then read off its command line (``metrics_url`` is the fallback)."""
        port = url.rsplit(":", 1)[-1]
        pid = listening_pid(int(port)) if is_local_host(url_host(url)) and port.isdigit() else None
        return cls(own_metrics_url(pid) or metrics_url if pid else metrics_url, server_pid=pid,
                   core_hour_cost=core_hour_cost)

    @property
    def sources(self) -> list[str]:
        """What this probe reads, for the report."""
        if not self.server_pid:
            return []
        return ["CPU seconds of tritonserver and the model's backend stubs (/proc), over Triton's inference count; "
                "the client's: perf_analyzer's CPU over the requests"]

    def _server_cpu(self, model: ServedModel) -> dict[int, tuple[str | None, float]]:
        """CPU seconds per process: tritonserver and the stubs of ``model`` (an ensemble's steps too).

        Per process, because a model reload (``dnx tune``) replaces its stubs: one that ends within a
        level must not take its whole past CPU out of the sum, and one that starts counts from zero.
        """
        names = {model.name, *model.ensemble_steps}
        out = {}
        for p in process_memory(self.server_pid):
            if p.role == "tritonserver" or p.model in names:
                seconds = cpu_seconds(p.pid)
                if seconds is not None:
                    out[p.pid] = (p.model, seconds)
        return out

    def start(self, model: ServedModel) -> _Mark | None:
        """Read the counters before a level; None when there is nothing to read (remote, server gone)."""
        if not self.server_pid:
            return None
        try:
            inferences, requests = triton_counts(self.metrics_url, model.name)
            return _Mark(model, time.monotonic(), self._server_cpu(model), children_cpu_seconds(), inferences, requests)
        except ServerError as exc:
            self.notes.append(str(exc))
            return None

    def finish(self, mark: _Mark | None) -> dict:
        """The level's :data:`FIELDS` (all None when ``mark`` is None or nothing was served)."""
        out: dict = dict.fromkeys(FIELDS)
        if mark is None:
            return out
        try:
            inferences, requests = triton_counts(self.metrics_url, mark.model.name)
            now = self._server_cpu(mark.model)
            spent = {pid: (name, max(0.0, cpu - mark.server.get(pid, (name, 0.0))[1])) for pid, (name, cpu) in now.items()}
            server = sum(cpu for _, cpu in spent.values())
        except ServerError as exc:
            self.notes.append(str(exc))
            return out
        client = children_cpu_seconds() - mark.client
        wall = time.monotonic() - mark.wall
        done, asked = inferences - mark.inferences, requests - mark.requests
        if done <= 0 or asked <= 0:
            self.notes.append(f"{self.metrics_url} counted no {mark.model.name} inference over a level: check --metrics-url")
            self.notes = list(dict.fromkeys(self.notes))
            return out
        per_inference = server / done * 1000
        out.update(
            server_cpu_ms_per_inference=round(per_inference, 3),
            client_cpu_ms_per_request=round(client / asked * 1000, 3),
            server_cores_busy=round(server / wall, 3) if wall > 0 else None,
            # ms of CPU per inference x 1000 inferences/s = that many CPU-seconds per second: cores.
            cores_per_1000_infer_s=round(per_inference, 3),
            client_bound=client > server,
        )
        if self.core_hour_cost is not None:
            out["usd_per_million"] = round(server / done * 1e6 / 3600 * self.core_hour_cost, 4)
        if mark.model.ensemble_steps:
            # The first step takes the encoded bytes: its own processes' CPU is what decoding and
            # resizing cost, apart from the variant's (whose spinning thread pool charges idle time).
            first = mark.model.ensemble_steps[0]
            out["preprocess_cpu_ms_per_request"] = round(sum(c for n, c in spent.values() if n == first) / asked * 1000, 3)
        return out
