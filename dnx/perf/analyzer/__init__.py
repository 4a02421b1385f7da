"""The one layer that runs ``perf_analyzer``: the binary and its environment (:mod:`.binary`), the
command line (:mod:`.argv`, pure), its CSV (:mod:`.parse`), and one measured concurrency level with
its retries (:mod:`.level`). ``dnx perf``, ``dnx bench`` and ``dnx tune`` all measure through it."""

from dnx.perf.analyzer.argv import SHARED_MEMORY, build_argv, check_shared_memory, is_local_host, shell_line
from dnx.perf.analyzer.binary import cudart_lib_dir, find_perf_analyzer, perf_analyzer_env
from dnx.perf.analyzer.level import (
    RELAXED_STABILITY, STABILITY_EXIT_CODE, Analyzer, LevelSettings, Run, Segment, plan_retries,
)
from dnx.perf.analyzer.parse import Measurement, parse_csv, unstable_levels

__all__ = [
    "Analyzer", "LevelSettings", "Measurement", "RELAXED_STABILITY", "Run", "SHARED_MEMORY", "STABILITY_EXIT_CODE",
    "Segment", "build_argv", "check_shared_memory", "is_local_host", "cudart_lib_dir", "find_perf_analyzer", "parse_csv",
    "perf_analyzer_env", "plan_retries",
    "shell_line", "unstable_levels",
]
