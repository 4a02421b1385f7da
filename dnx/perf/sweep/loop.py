"""The ``dnx perf`` sweep: every (model, batch size) over the concurrency levels, level by level.

Each level is measured by :meth:`dnx.perf.analyzer.Analyzer.measure_level` (one perf_analyzer
run, retried when unstable), so a server that dies mid-sweep costs only the level in progress:
:func:`sweep` reports each level through ``on_level`` and ``dnx perf --resume`` continues from
there. With ``skip_saturated`` the levels above a flat throughput are left out
(:func:`dnx.perf.levels.saturated`). With a ``memory`` probe (:class:`dnx.perf.sweep.memory.MemoryProbe`)
each level also records the model's memory right after it was measured.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dnx._lazy import lazy_import
from dnx.errors import InputError
from dnx.perf.analyzer import Analyzer, Measurement, Run
from dnx.perf.levels import FILL_CAP, ConcurrencyRange, fill_level, saturated, saturation_floor
from dnx.perf.served import ServedModel
from dnx.perf.sweep.options import SweepOptions
from dnx.photos import MIX_INPUT_DATA, photo_mix, write_input_data


@dataclass
class SweepResult:
    """Measurements per (model, batch size) and every perf_analyzer run made to get them."""

    out_dir: Path
    models: list[ServedModel]
    options: SweepOptions
    measurements: dict[tuple[str, int], list[Measurement]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    perf_analyzer: str = ""
    incomplete: str | None = None  # why the sweep stopped before every level was measured
    # (model, batch) -> levels not measured because throughput had saturated below them
    saturated: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def points(self) -> int:
        """Measured (model, batch, concurrency) points."""
        return sum(len(v) for v in self.measurements.values())

    def planned(self) -> int:
        """Points the options ask for (plus fill levels already added by :func:`sweep_with_fill`)."""
        levels = set(self.options.concurrency.levels())
        extra = sum(len({m.concurrency for m in v} - levels) for v in self.measurements.values())
        skipped = sum(len(v) for v in self.saturated.values())
        return len(self.models) * len(self.options.batch_sizes) * len(levels) + extra - skipped


class Progress:
    """tqdm bar counting (model, batch, concurrency) points."""

    def __init__(self, total: int, enabled: bool):
        tqdm = lazy_import("tqdm").tqdm
        self.bar = tqdm(total=total, unit="pt", desc="perf", disable=not enabled, file=sys.stderr, leave=True)
        self.done: set[tuple[str, int, int]] = set()

    def level_done(self, model: str, batch: int, level: int) -> None:
        """Count ``(model, batch, level)`` once."""
        key = (model, batch, level)
        if key not in self.done:
            self.done.add(key)
            self.bar.update(1)

    def watcher(self, model: str, batch: int) -> Callable[[int, bool], None]:
        """A perf_analyzer progress callback: names the level running, counts it when reported."""
        def on_progress(level: int, done: bool) -> None:
            if done:
                self.level_done(model, batch, level)
            else:
                self.bar.set_postfix_str(f"{model} b={batch} c={level}", refresh=True)
        return on_progress

    def close(self) -> None:
        self.bar.close()


def _measure_batch(analyzer: Analyzer, model: ServedModel, batch: int, opts: SweepOptions, progress: Progress,
                   collected: dict[int, Measurement], runs: list[Run], on_level: Callable[[], None],
                   skipped: list[int], memory: Callable[[ServedModel], dict] | None = None, cpu=None) -> None:
    """Measure one (model, batch size) over ``opts.concurrency``; levels in ``collected`` are kept.

    ``collected`` and ``runs`` fill as each level finishes (``on_level`` after each run), so
    they hold every completed level when a later one raises :class:`PerfError`.
    """
    floor = saturation_floor(model.triton)
    input_data = opts.input_data
    if model.string_inputs and not str(input_data or "").endswith(".json"):
        # Random bytes are not images (every request would fail): send real photographs of real sizes,
        # the shipped ones plus a 12 MP phone JPEG unless --photos names a folder.
        input_data = str(write_input_data(analyzer.out_dir / MIX_INPUT_DATA, model.string_inputs[0],
                                          photo_mix(opts.photos)))
    settings = dataclasses.replace(opts, input_data=input_data)
    todo = [c for c in opts.concurrency.levels() if c not in collected]
    for i, c in enumerate(todo):
        if opts.skip_saturated and saturated({k: m.throughput for k, m in collected.items()}, floor):
            skipped[:] = todo[i:]
            return
        mark = cpu.start(model) if cpu is not None else None
        meas = analyzer.measure_level(model.name, c, settings, batch, runs, on_run=on_level,
                                      on_progress=progress.watcher(model.name, batch))
        if cpu is not None:
            for name, value in cpu.finish(mark).items():
                setattr(meas, name, value)
        if memory is not None:
            for name, value in memory(model).items():
                setattr(meas, name, value)
        collected[c] = meas
        progress.level_done(model.name, batch, c)
        on_level()


def sweep(models: list[ServedModel], opts: SweepOptions, out_dir: str | os.PathLike,
          result: SweepResult | None = None, on_level: Callable[[SweepResult], None] | None = None,
          memory: Callable[[ServedModel], dict] | None = None, cpu=None) -> SweepResult:
    """Run perf_analyzer for every (model, batch size) and concurrency level.

    Raw CSVs and logs go to ``<out_dir>/raw/``; :func:`dnx.perf.sweep.report.write_report` turns
    the result into the tidy CSV, report and plots. Pass a partly filled ``result`` to
    continue a sweep (its measured levels are skipped). ``result`` is filled level by level
    and ``on_level(result)`` called after each, so a caller holding it keeps every completed
    level when this raises (server gone, signal). ``memory(model)`` (optional) gives the
    :class:`~dnx.perf.analyzer.Measurement` memory fields read after each level; ``cpu`` (optional,
    :class:`dnx.perf.sweep.cost.CpuProbe`) its CPU cost fields, read around each level.
    """
    opts.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        too_big = [b for b in opts.batch_sizes if b > max(m.max_batch_size, 1)]
        if too_big:
            raise InputError(
                f"--batch-size {too_big} exceeds {m.name}'s max_batch_size {m.max_batch_size}; "
                "pick smaller sizes or re-export with a larger --max-batch"
            )
    analyzer = Analyzer(out_dir)
    if result is None:
        result = SweepResult(out_dir=out_dir, models=models, options=opts)
    result.perf_analyzer = str(analyzer.binary)
    progress = Progress(result.planned(), opts.progress)
    progress.bar.update(result.points())
    try:
        for m in models:
            for b in opts.batch_sizes:
                collected = {x.concurrency: x for x in result.measurements.get((m.name, b), [])}

                def saved(m=m, b=b, collected=collected):
                    result.measurements[(m.name, b)] = [collected[c] for c in sorted(collected)]
                    if on_level:
                        on_level(result)

                skipped: list[int] = []
                _measure_batch(analyzer, m, b, opts, progress, collected, result.runs, saved, skipped, memory, cpu)
                if skipped:
                    result.saturated[(m.name, b)] = skipped
                    progress.bar.update(len(skipped))
    finally:
        progress.close()
    return result


def sweep_with_fill(models: list[ServedModel], opts: SweepOptions, out_dir: str | os.PathLike,
                    cap: int = FILL_CAP, memory: Callable[[ServedModel], dict] | None = None, cpu=None) -> SweepResult:
    """:func:`sweep`, then each model once more at its fill level when that lies beyond ``opts.concurrency``.

    A model tuned to larger batches or more instances only shows its throughput once its
    batches fill (:func:`dnx.perf.levels.fill_level`); the extra level is one more point.
    """
    result = sweep(models, opts, out_dir, memory=memory, cpu=cpu)
    top = max(opts.concurrency.levels())
    for m in models:
        fill = fill_level(m.triton, cap)
        if fill > top:
            one = dataclasses.replace(opts, concurrency=ConcurrencyRange(fill, fill, 1))
            sweep([m], one, out_dir, result=result, memory=memory, cpu=cpu)
    return result
