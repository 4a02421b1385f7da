"""What every perf command records beside its figures: the results folder, the machine, the best row.

``dnx perf``, ``dnx bench`` and ``dnx tune`` each write one timestamped folder under
``perf/results/`` (:func:`new_results_dir`), record the machine the figures belong to
(:func:`machine_info`: the CPU's ISA flags change which precision and backend win), and pick
the best row per model from tidy rows (:func:`best_row`, :func:`best_per_model`).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

from dnx._lazy import has_module
from dnx.cpu import ISA_FLAGS, this_cpu  # noqa: F401 - ISA_FLAGS re-exported
from dnx.runtimes.openvino import cpu_supports_bf16

RESULTS_ROOT = Path("perf/results")
# The folder name of each command's results (as they have always been named).
_FOLDER_FORMATS = {"perf": "%Y%m%dT%H%M%SZ", "bench": "bench-%Y%m%dT%H%M%SZ", "tune": "%Y%m%dT%H%M%SZ-tune"}
def new_results_dir(kind: str, root: str | os.PathLike = RESULTS_ROOT) -> Path:
    """``<root>/<UTC timestamp>`` named for ``kind`` (``perf``, ``bench`` or ``tune``); not created."""
    return Path(root) / _dt.datetime.now(_dt.timezone.utc).strftime(_FOLDER_FORMATS[kind])


def machine_info() -> dict:
    """CPU model, cores, ISA flags, RAM, load, OS and Python of this machine."""
    here, ram_gib = this_cpu(), None
    cpu, isa = here.model, list(here.flags)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "isa": isa, "ram_gib": ram_gib,
        # Native bfloat16 as OpenVINO reports it (the check the exporter uses); None without OpenVINO.
        "bf16": cpu_supports_bf16() if has_module("openvino") else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(), "python": platform.python_version(),
    }


def is_stable(row: dict) -> bool:
    """Whether a result row's window met perf_analyzer's stability check (rows that do not say count as stable)."""
    return row.get("stable", True)


def best_row(rows: list[dict], model: str | None = None, batch: int | None = None) -> dict | None:
    """The highest-throughput row (of ``model`` at ``batch`` when given; the first one on ties), or None.

    Rows whose window never met perf_analyzer's stability check (``stable`` false) count only when
    none of the others did: on a noisy machine the highest figure is often an unstable window, and
    a ratio or a "best" quoted from it would not be reproduced.
    """
    mine = [r for r in rows if (model is None or r["model"] == model) and (batch is None or r["batch"] == batch)]
    return max([r for r in mine if is_stable(r)] or mine, key=lambda r: r["throughput"], default=None)


def best_per_model(rows: list[dict]) -> dict[str, dict]:
    """``{model: its highest-throughput row}``, models in the order they first appear."""
    return {m: best_row(rows, m) for m in dict.fromkeys(r["model"] for r in rows)}
