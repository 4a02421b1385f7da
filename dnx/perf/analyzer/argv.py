"""The perf_analyzer command line (pure)."""

from __future__ import annotations

import os
import shlex

from dnx.hosts import is_local_host, url_host  # noqa: F401 - re-exported
from dnx.errors import InputError
from dnx.perf.levels import ConcurrencyRange

# perf_analyzer's --shared-memory: "none" sends tensors in the gRPC/HTTP messages; "system" puts them
# in POSIX shared memory (/dev/shm) that client and server map, so only a server on this machine can use it.
SHARED_MEMORY = ("none", "system")


def build_argv(
    binary: str | os.PathLike,
    model: str,
    *,
    url: str,
    protocol: str,
    batch_size: int,
    concurrency: ConcurrencyRange,
    measurement_interval_ms: int,
    csv_path: str | os.PathLike,
    percentile: int | None = None,
    stability_percentage: float | None = None,
    max_trials: int | None = None,
    collect_metrics: bool = False,
    metrics_url: str | None = None,
    verbose_csv: bool = False,
    input_data: str | os.PathLike | None = None,
    measurement_mode: str = "time_windows",
    measurement_request_count: int | None = None,
    shared_memory: str = "none",
) -> list[str]:
    """The perf_analyzer command line for one (model, batch size) over a concurrency range (pure).

    ``measurement_mode="count_windows"``: each window holds at least ``measurement_request_count``
    requests instead of lasting ``measurement_interval_ms``, so windows adapt to the model's speed.
    ``shared_memory="system"``: inputs and outputs travel through system shared memory.
    """
    argv = [
        str(binary), "-m", model, "-u", url, "-i", protocol, "-b", str(batch_size),
        "--concurrency-range", str(concurrency),
        "--measurement-interval", str(int(measurement_interval_ms)),
    ]
    if measurement_mode == "count_windows":
        argv += ["--measurement-mode", "count_windows"]
        if measurement_request_count is not None:
            argv += ["--measurement-request-count", str(int(measurement_request_count))]
    if percentile is not None:
        argv += ["--percentile", str(percentile)]
    if stability_percentage is not None:
        argv += ["--stability-percentage", f"{stability_percentage:g}"]
    if max_trials is not None:
        argv += ["--max-trials", str(max_trials)]
    if shared_memory != "none":
        argv += ["--shared-memory", shared_memory]
    if input_data is not None:
        argv += ["--input-data", str(input_data)]
    if collect_metrics:
        argv.append("--collect-metrics")
        if metrics_url:
            argv += ["--metrics-url", metrics_url]
    if verbose_csv:
        argv.append("--verbose-csv")
    return argv + ["-f", str(csv_path)]


def check_shared_memory(mode: str, url: str) -> None:
    """Raise :class:`InputError` for an unknown mode, or ``system`` for a server on another machine."""
    if mode not in SHARED_MEMORY:
        raise InputError(f"--shared-memory {mode!r} is unknown; use none or system")
    host = url_host(url)
    if mode == "system" and not is_local_host(host):
        raise InputError(f"--shared-memory system needs a server on this machine, but --url {url} points at {host}; "
                         "use --shared-memory none, or run dnx on the server's machine (or --launch)")


def shell_line(argv: list[str], env: dict | None = None) -> str:
    """A copy-pastable shell line for ``argv`` (with the LD_LIBRARY_PATH it needs)."""
    prefix = f"LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])} " if env and env.get("LD_LIBRARY_PATH") else ""
    return prefix + shlex.join(argv)
