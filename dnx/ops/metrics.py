"""Triton's Prometheus metrics as data: the server flags an SLO needs, and memory readings.

* :data:`SERVER_METRICS_FLAGS`: what ``dnx serve`` and the generated Deployment pass to
  ``tritonserver`` so the latency *summaries* (quantiles) exist; Triton only exports counters
  by default, and a p99 cannot be derived from counters.
* :func:`scrape` / :func:`parse_metrics`: the text exposition format into samples.
* :func:`triton_memory`: ``nv_cpu_memory_*`` and ``nv_gpu_memory_*`` of one scrape.
* :func:`process_memory`: RSS of a local server's processes: ``tritonserver`` itself and each
  Python backend stub (one per model instance; the stub's command line names its model).

Library only: :func:`memory_snapshot` is the per-level record for ``dnx perf`` / ``dnx bench`` reports.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dnx.errors import ServerError, one_line

QUANTILES = (0.5, 0.9, 0.95, 0.99)
# Allowed error of each quantile (Triton's "<quantile>:<error>" syntax); tighter at the tail.
_QUANTILE_ERRORS = {0.5: 0.05, 0.9: 0.01, 0.95: 0.005, 0.99: 0.001}
SERVER_METRICS_FLAGS = (
    "--allow-metrics=true",
    "--allow-cpu-metrics=true",
    "--allow-gpu-metrics=true",
    "--metrics-config=summary_latencies=true",
    "--metrics-config=summary_quantiles=" + ",".join(f"{q}:{_QUANTILE_ERRORS[q]}" for q in QUANTILES),
)

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    """One metric sample: name, labels, value."""

    name: str
    labels: dict
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (comments and malformed lines skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = {k: v.encode().decode("unicode_escape") for k, v in _LABEL.findall(m.group(2) or "")}
        out.append(Sample(m.group(1), labels, value))
    return out


def scrape(url: str, timeout: float = 10.0) -> list[Sample]:
    """GET ``url`` (``http://host:8002/metrics``) and parse it; :class:`ServerError` with one line otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse_metrics(resp.read().decode("utf-8", "replace"))
    except Exception as exc:  # noqa: BLE001 - refused, timeout, HTTP error: one line
        raise ServerError(f"cannot read Triton metrics at {url} ({one_line(exc)}); check --metrics-port") from None


@dataclass
class TritonMemory:
    """Memory figures Triton exports (bytes); GPU ones keyed by GPU UUID, empty without a GPU."""

    cpu_used: float | None = None
    cpu_total: float | None = None
    gpu_used: dict[str, float] = field(default_factory=dict)
    gpu_total: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form, MiB."""
        mib = lambda v: None if v is None else round(v / 2**20, 1)  # noqa: E731
        return {"cpu_used_mib": mib(self.cpu_used), "cpu_total_mib": mib(self.cpu_total),
                "gpu_used_mib": {k: mib(v) for k, v in self.gpu_used.items()},
                "gpu_total_mib": {k: mib(v) for k, v in self.gpu_total.items()}}


def triton_memory(samples: list[Sample]) -> TritonMemory:
    """The ``nv_cpu_memory_*_bytes`` and ``nv_gpu_memory_*_bytes`` samples of one scrape."""
    mem = TritonMemory()
    for s in samples:
        if s.name == "nv_cpu_memory_used_bytes":
            mem.cpu_used = s.value
        elif s.name == "nv_cpu_memory_total_bytes":
            mem.cpu_total = s.value
        elif s.name == "nv_gpu_memory_used_bytes":
            mem.gpu_used[s.labels.get("gpu_uuid", "?")] = s.value
        elif s.name == "nv_gpu_memory_total_bytes":
            mem.gpu_total[s.labels.get("gpu_uuid", "?")] = s.value
    return mem


@dataclass(frozen=True)
class ProcessMemory:
    """RSS of one process of a local server."""

    pid: int
    role: str  # "tritonserver" | "python-stub"
    model: str | None  # the model a backend stub serves
    rss_bytes: int


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out.extend(int(x) for x in text)
    except OSError:
        pass
    return out


def _stub_model(argv: list[str]) -> str | None:
    """The model of a ``triton_python_backend_stub`` command line.

    Triton runs ``stub <repo>/<model>/<version>/<model file> <shm region> ... <model>_<i>_<j> ...``:
    the model folder is read from the first argument (for dnx's Python-based ``onnxruntime`` and
    ``openvino`` backends too, whose stubs load the model's own file).
    """
    if len(argv) < 2:
        return None
    path = Path(argv[1])
    return path.parent.parent.name if path.parent.name.isdigit() else None


def process_memory(server_pid: int) -> list[ProcessMemory]:
    """RSS of ``server_pid`` (a local ``tritonserver``) and of every process below it (backend stubs).

    A stub's model is read from its command line (:func:`_stub_model`).
    """
    out = []
    rss = _rss(server_pid)
    if rss is None:
        raise ServerError(f"no process {server_pid}: the server is not running")
    out.append(ProcessMemory(server_pid, "tritonserver", None, rss))
    todo = _children(server_pid)
    while todo:
        pid = todo.pop()
        todo.extend(_children(pid))
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        rss = _rss(pid)
        if rss is None:
            continue
        model = _stub_model(argv)
        out.append(ProcessMemory(pid, "python-stub" if "stub" in Path(argv[0]).name else Path(argv[0]).name,
                                 model, rss))
    return out


def memory_by_model(processes: list[ProcessMemory]) -> dict[str, int]:
    """Total RSS per model (backend stubs) plus ``"tritonserver"`` (the server process itself)."""
    totals: dict[str, int] = {}
    for p in processes:
        key = p.model or p.role
        totals[key] = totals.get(key, 0) + p.rss_bytes
    return totals


def memory_snapshot(*, metrics_url: str | None = None, server_pid: int | None = None) -> dict:
    """One perf level's memory record: Triton's figures (``metrics_url``) and, for a local server
    (``server_pid``), RSS per model in MiB. What ``dnx perf`` / ``dnx bench`` store per level."""
    out: dict = {}
    if metrics_url:
        out["triton"] = triton_memory(scrape(metrics_url)).to_dict()
    if server_pid:
        out["rss_mib"] = {k: round(v / 2**20, 1) for k, v in sorted(memory_by_model(process_memory(server_pid)).items())}
    return out
