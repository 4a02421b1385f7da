"""What perf_analyzer writes: its ``-f`` CSV and the lines of its output that matter."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dnx.errors import PerfError

_UNSTABLE_RE = re.compile(r"Failed to obtain stable measurement within \d+ measurement windows for concurrency (\d+)")
_LEVEL_RE = re.compile(r"^Request concurrency: (\d+)")
# perf_analyzer's message (exit 3) when a window ended before any request finished (a slow or
# loaded server): retried like an unstable level, with a doubled window.
WINDOW_TOO_SHORT = "Please use a larger time window"

# perf_analyzer CSV column -> our field name; all times there are microseconds.
_TIME_COLUMNS = {
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
}
# perf_analyzer's own "Avg latency" is the sum of these (checked against its stdout).
_AVG_PARTS = ("client_send_ms", "network_ms", "server_queue_ms", "server_compute_input_ms",
              "server_compute_infer_ms", "server_compute_output_ms", "client_recv_ms")


@dataclass
class Measurement:
    """One perf_analyzer CSV row: one concurrency level, times in milliseconds."""

    concurrency: int
    throughput: float  # inferences (images) per second
    client_send_ms: float
    network_ms: float
    server_queue_ms: float
    server_compute_input_ms: float
    server_compute_infer_ms: float
    server_compute_output_ms: float
    client_recv_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    gpu_utilization: str = ""  # only with --collect-metrics --verbose-csv on a GPU server
    stable: bool = True
    window_ms: int = 0
    # Memory right after the level (dnx.perf.sweep.memory), MiB; None where it could not be read.
    rss_mib: float | None = None  # RSS of the model's own processes (its backend stubs; an ensemble's steps)
    server_rss_mib: float | None = None  # RSS of the tritonserver process itself
    triton_cpu_memory_mib: float | None = None  # Triton's nv_cpu_memory_used_bytes (the host's used memory)
    # CPU over the level (dnx.perf.sweep.cost); None for a server on another machine.
    server_cpu_ms_per_inference: float | None = None  # tritonserver + the model's stubs, over Triton's count
    client_cpu_ms_per_request: float | None = None  # perf_analyzer's CPU over the requests served
    server_cores_busy: float | None = None
    cores_per_1000_infer_s: float | None = None
    client_bound: bool | None = None  # the client used more CPU than the server
    usd_per_million: float | None = None  # with --core-hour-cost
    preprocess_cpu_ms_per_request: float | None = None  # an ensemble's first step (decode, resize), alone


def parse_csv(path: str | os.PathLike) -> list[Measurement]:
    """Read a perf_analyzer ``-f`` CSV; rows come back sorted by concurrency, times in ms.

    perf_analyzer sorts its rows by throughput and writes times in microseconds.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise PerfError(f"cannot read perf_analyzer CSV {path}: {exc}; rerun the sweep") from None
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            times = {name: float(row[col]) / 1000.0 for col, name in _TIME_COLUMNS.items()}
            out.append(Measurement(
                concurrency=int(row["Concurrency"]),
                throughput=float(row["Inferences/Second"]),
                avg_ms=sum(times[k] for k in _AVG_PARTS),
                gpu_utilization=(row.get("Avg GPU Utilization") or "").strip(),
                **times,
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise PerfError(
                f"{path} line {i} is not a perf_analyzer concurrency CSV row ({exc!r}); "
                "was it written by perf_analyzer --concurrency-range -f?"
            ) from None
    return sorted(out, key=lambda m: m.concurrency)


def unstable_levels(text: str) -> set[int]:
    """Levels perf_analyzer's output reports as never stable."""
    return {int(x) for x in _UNSTABLE_RE.findall(text)}


def level_started(line: str) -> int | None:
    """The level a ``Request concurrency: N`` line starts, else None."""
    m = _LEVEL_RE.match(line)
    return int(m.group(1)) if m else None


def level_reported(line: str) -> bool:
    """True for the line that closes a level's report (its client-side figures)."""
    return line.startswith("  Client:")
