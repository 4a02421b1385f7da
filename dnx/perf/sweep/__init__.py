"""``dnx perf``: perf_analyzer concurrency sweeps against a Triton server.

:mod:`.options` (what to measure), :mod:`.loop` (the sweep, level by level), :mod:`.state`
(``--resume``), :mod:`.report` (tidy CSV, report, plots), :mod:`.run` (:func:`run_perf`, what
the command calls)::

    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.sweep import PerfOptions, SweepOptions, run_perf

    run = run_perf(PerfOptions(sweep=SweepOptions(concurrency=ConcurrencyRange.parse("1:8")), launch=True))
    print(run.paths["md"])
"""

from dnx.perf.sweep.loop import SweepResult, sweep, sweep_with_fill
from dnx.perf.sweep.options import PerfOptions, SweepOptions, estimate_sweep_seconds
from dnx.perf.sweep.report import compare, tidy_rows, write_report
from dnx.perf.sweep.run import PerfRun, run_perf
from dnx.perf.sweep.state import resume_options

__all__ = [
    "PerfOptions", "PerfRun", "SweepOptions", "SweepResult", "compare", "estimate_sweep_seconds", "resume_options",
    "run_perf", "sweep", "sweep_with_fill", "tidy_rows", "write_report",
]
