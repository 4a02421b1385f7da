"""``sweep-state.json``: everything ``dnx perf --resume`` needs, saved after every level.

The options are saved field by field from the dataclasses themselves (no hand-kept list), so a
new option is resumed without touching this file; fields a newer dnx dropped are ignored.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_text
from dnx.perf.analyzer import Measurement, Run
from dnx.perf.levels import ConcurrencyRange
from dnx.perf.sweep.loop import SweepResult
from dnx.perf.sweep.options import PerfOptions, SweepOptions

STATE_NAME = "sweep-state.json"
# Not saved: how this process reports (progress), where it writes (out), callbacks (on_plan),
# and what run_perf derives again (collect_metrics of the sweep: from PerfOptions.collect_metrics).
_NOT_SAVED = {"progress", "out", "on_plan", "sweep"}


def _fields(obj, skip: set[str]) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}


def state(opts: PerfOptions, result: SweepResult) -> dict:
    """The options as given, and every level measured so far (JSON-ready)."""
    perf = _fields(opts, _NOT_SAVED)
    perf.update(models=[m.name for m in result.models], repository=str(opts.repository))
    sweep = _fields(opts.sweep, _NOT_SAVED | {"collect_metrics"})
    sweep.update(concurrency=str(opts.sweep.concurrency), batch_sizes=list(opts.sweep.batch_sizes))
    return {
        "version": 1, "perf": perf, "sweep": sweep,
        "measurements": [{"model": model, "batch": batch, **asdict(m)}
                         for (model, batch), rows in result.measurements.items() for m in rows],
        "runs": [asdict(r) for r in result.runs],
    }


def save_state(opts: PerfOptions, result: SweepResult) -> None:
    """Write ``sweep-state.json`` into the result's folder, atomically."""
    atomic_write_text(Path(result.out_dir) / STATE_NAME, json.dumps(state(opts, result), indent=1) + "\n")


def _known(cls, values: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def resume_options(out: str | Path, url: str | None = None, progress: bool = True) -> tuple[PerfOptions, dict]:
    """The :class:`PerfOptions` of the interrupted sweep in ``out`` and its saved state.

    ``url`` points the rest of the sweep at another server (then nothing is launched).
    """
    path = Path(out) / STATE_NAME
    try:
        saved = json.loads(path.read_text())
        p, sw = dict(saved["perf"]), dict(saved["sweep"])
        sw["concurrency"] = ConcurrencyRange.parse(sw["concurrency"])
        sw["batch_sizes"] = tuple(sw["batch_sizes"])
    except (OSError, ValueError, KeyError, TypeError, InputError) as exc:
        raise InputError(f"{out} holds no resumable sweep ({path}: {exc.__class__.__name__}); pass the results folder "
                         "of an interrupted `dnx perf` run, or start a new sweep") from None
    sweep_opts = SweepOptions(**_known(SweepOptions, sw), progress=progress)
    if url is not None:
        sweep_opts.url = url
    p.update(launch=p.get("launch", False) and url is None, repository=_repository(p["repository"]))
    return PerfOptions(sweep=sweep_opts, out=Path(out), **_known(PerfOptions, p)), saved


def _repository(text: str) -> Path | str:
    """A repository as saved: an s3:// URI stays a string (Path would fold its "//")."""
    return text if text.startswith("s3://") else Path(text)


def restore(result: SweepResult, saved: dict) -> None:
    """Put the measurements and runs of a saved state back into ``result``."""
    for row in saved.get("measurements", []):
        row = dict(row)
        key = (row.pop("model"), int(row.pop("batch")))
        result.measurements.setdefault(key, []).append(Measurement(**row))
    result.runs.extend(Run(**r) for r in saved.get("runs", []))
