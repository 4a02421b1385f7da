"""One measured concurrency level: perf_analyzer runs, with retries, until the level has a row.

One perf_analyzer process measures one (model, batch size, concurrency level): it writes its
CSV only when its whole range is done, so one level per process puts every completed level on
disk at once. When a level never gets a stable measurement, perf_analyzer leaves it out of
the CSV (exit code 2). Such a level is measured again with a doubled window; only when the
retries are spent is it measured once more with the stability check relaxed, and its row
flagged ``stable=False``. This is the only code in dnx that starts perf_analyzer.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dnx.errors import PerfError, tail
from dnx.perf.analyzer.argv import build_argv, shell_line
from dnx.perf.analyzer.binary import find_perf_analyzer, perf_analyzer_env
from dnx.perf.analyzer.parse import (
    WINDOW_TOO_SHORT, Measurement, level_reported, level_started, parse_csv, unstable_levels,
)
from dnx.perf.levels import ConcurrencyRange
from dnx.signals import die_with_parent

# perf_analyzer's exit code when a measurement never stabilises.
STABILITY_EXIT_CODE = 2
# Relaxed stability used for the last attempt at a level that stays unstable (percent).
RELAXED_STABILITY = 1000.0
# Raw file names: sweep levels by default; tune names them after its candidates.
SWEEP_STEM = "{model}_b{batch}_c{level}_w{window}"


@dataclass
class LevelSettings:
    """How perf_analyzer measures each level (the flags every level of a run shares)."""

    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
    measurement_interval_ms: int = 5000
    measurement_mode: str = "time_windows"
    measurement_request_count: int = 50
    percentile: int | None = None
    stability_percentage: float | None = None
    max_trials: int | None = None
    retries: int = 1  # longer windows (x2 each) for a level that is unstable
    collect_metrics: bool = False
    metrics_url: str | None = None
    verbose_csv: bool = False
    input_data: str | None = None
    shared_memory: str = "none"  # perf_analyzer --shared-memory: none (tensors in the messages) or system
    timeout_s: float | None = None  # per perf_analyzer run; None: no limit


@dataclass
class Run:
    """One perf_analyzer invocation as it happened."""

    model: str
    batch_size: int
    concurrency: str
    window_ms: int
    command: str
    csv: str | None
    log: str
    returncode: int
    unstable_at: int | None = None


@dataclass(frozen=True)
class Segment:
    """Consecutive concurrency levels for one perf_analyzer run."""

    levels: tuple[int, ...]
    window_ms: int
    attempt: int = 0  # how many times the window was doubled
    relaxed: bool = False  # last resort: stability check relaxed, rows flagged unstable


def _contiguous(levels: list[int], step: int) -> list[list[int]]:
    """Split sorted levels into runs perf_analyzer can sweep with one ``start:end:step``."""
    runs: list[list[int]] = []
    for c in levels:
        if runs and c - runs[-1][-1] == step:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def plan_retries(seg: Segment, measured: set[int], unstable: set[int], step: int, retries: int) -> list[Segment]:
    """The runs still needed after ``seg`` produced ``measured`` levels and reported ``unstable`` ones (pure).

    An unstable level is retried alone with a doubled window, ``retries`` times, then once
    relaxed; other levels missing from the CSV are measured again with the same window.
    """
    missing = [c for c in seg.levels if c not in measured]
    out = []
    for c in missing:
        if c in unstable:
            out.append(Segment((c,), seg.window_ms * 2, seg.attempt + 1) if seg.attempt < retries
                       else Segment((c,), seg.window_ms, seg.attempt, relaxed=True))
    for run in _contiguous([c for c in missing if c not in unstable], step):
        out.append(Segment(tuple(run), seg.window_ms, seg.attempt, seg.relaxed))
    return out


class Analyzer:
    """The perf_analyzer binary and environment, and the folder its CSVs and logs go to (``<out>/raw``)."""

    def __init__(self, out_dir: str | Path):
        self.binary, self.env = find_perf_analyzer(), perf_analyzer_env()
        self.out_dir = Path(out_dir)
        self.raw = self.out_dir / "raw"

    def _run(self, argv: list[str], log_path: Path, timeout_s: float | None,
             on_progress: Callable[[int, bool], None] | None) -> tuple[int, str, bool]:
        """Run perf_analyzer, streaming its output to ``log_path``; ``(exit code, output, timed out)``."""
        lines: list[str] = []
        level = None
        try:
            # die_with_parent: a dnx killed outright (SIGKILL, OOM) must not leave perf_analyzer loading the server.
            proc = subprocess.Popen(die_with_parent(argv), env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        except OSError as exc:
            raise PerfError(f"cannot start {argv[0]}: {exc}; check the perf_analyzer install") from None
        fired: list[bool] = []
        timer = threading.Timer(timeout_s, lambda: (fired.append(True), proc.kill())) if timeout_s else None
        if timer:
            timer.start()
        try:
            with log_path.open("w") as log:
                for line in proc.stdout:
                    log.write(line)
                    lines.append(line)
                    started = level_started(line)
                    if started is not None:
                        level = started
                        if on_progress:
                            on_progress(level, False)
                    elif level_reported(line) and level is not None and on_progress:
                        on_progress(level, True)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
        return rc, "".join(lines), bool(fired)

    def measure_level(self, model: str, level: int, s: LevelSettings, batch: int = 1, runs: list[Run] | None = None,
                      stem: str = SWEEP_STEM, on_run: Callable[[], None] | None = None,
                      on_progress: Callable[[int, bool], None] | None = None) -> Measurement:
        """Measure ``model`` at concurrency ``level`` with requests of ``batch``: retried with doubled windows,
        then once relaxed.

        Every perf_analyzer run is appended to ``runs`` (and ``on_run`` called) as it ends, so a
        caller keeps the record when this raises :class:`PerfError` (no row after the retries,
        perf_analyzer failed, the server is gone). ``stem`` names the raw files (``{model}``,
        ``{batch}``, ``{level}``, ``{window}``; ``_relaxed`` is added for the last resort).
        """
        self.raw.mkdir(parents=True, exist_ok=True)
        runs = [] if runs is None else runs
        pending = [Segment((level,), s.measurement_interval_ms)]
        while pending:
            seg = pending.pop(0)
            name = stem.format(model=model, batch=batch, level=level, window=seg.window_ms)
            name += "_relaxed" if seg.relaxed else ""
            csv_path, log_path = self.raw / f"{name}.csv", self.raw / f"{name}.log"
            rng = ConcurrencyRange(level, level, 1)
            argv = build_argv(
                self.binary, model, url=s.url, protocol=s.protocol, batch_size=batch, concurrency=rng,
                measurement_interval_ms=seg.window_ms, csv_path=csv_path, percentile=s.percentile,
                stability_percentage=RELAXED_STABILITY if seg.relaxed else s.stability_percentage,
                max_trials=s.max_trials, collect_metrics=s.collect_metrics, metrics_url=s.metrics_url,
                verbose_csv=s.verbose_csv, input_data=s.input_data, measurement_mode=s.measurement_mode,
                shared_memory=s.shared_memory,
                # A retry doubles the window: in count mode, the request count.
                measurement_request_count=s.measurement_request_count * seg.window_ms // s.measurement_interval_ms,
            )
            csv_path.unlink(missing_ok=True)
            rc, text, timed_out = self._run(argv, log_path, s.timeout_s, on_progress)
            # perf_analyzer aborts (exit 2, no CSV) when the first level is unstable, but
            # exits 0 and leaves a later unstable level out of the CSV: both are handled alike.
            unstable = unstable_levels(text)
            retryable = rc in (0, STABILITY_EXIT_CODE)
            if WINDOW_TOO_SHORT in text and not seg.relaxed:
                unstable |= set(seg.levels)
                retryable = True
            wrote = retryable and csv_path.is_file()
            got = {m.concurrency: m for m in parse_csv(csv_path)} if wrote else {}
            runs.append(Run(model, batch, str(rng), seg.window_ms, shell_line(argv, self.env),
                            str(csv_path.relative_to(self.out_dir)) if wrote else None,
                            str(log_path.relative_to(self.out_dir)), rc, min(unstable) if unstable else None))
            if on_run:
                on_run()
            if level in got:
                meas = got[level]
                meas.window_ms, meas.stable = seg.window_ms, not seg.relaxed
                return meas
            if timed_out:
                raise PerfError(f"perf_analyzer did not finish within {s.timeout_s:.0f} s for {model} at concurrency "
                                f"{level}; see {log_path}")
            if not retryable or level not in unstable or seg.relaxed:
                raise PerfError(
                    f"perf_analyzer measured no result for {model} batch {batch} concurrency [{level}] "
                    f"(exit {rc}): {tail(text, 3)}; see {log_path}"
                )
            pending[:0] = plan_retries(seg, set(got), unstable, 1, s.retries)
        raise PerfError(f"perf_analyzer measured no result for {model} at concurrency {level}")  # not reached
