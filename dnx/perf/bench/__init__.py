"""``dnx bench``: served Triton vs in-process baselines, one run, ratios vs targets.

:mod:`.runners` (in-process baselines), :mod:`.timing`, :mod:`.ratios` (typed :class:`Ratio`),
:mod:`.untuned` (untuned vs tuned in the same server), :mod:`.markdown` (BENCHMARKS.md),
:mod:`.run` (:func:`run_bench`, what the command calls).
"""

from dnx.perf.bench.markdown import KEEP_MARKER, kept_sections, render_markdown
from dnx.perf.bench.ratios import Ratio, compute_ratios, tuned_ratios
from dnx.perf.bench.result import BenchOptions, BenchResult
from dnx.perf.bench.run import run_bench, write_input_dir
from dnx.perf.bench.runners import (
    InProcessRunner, onnxruntime_runner, openvino_async_runner, openvino_async_runners, openvino_runner,
    openvino_runners, precision_parameters, sync_parameters, torch_eager_runner,
)
from dnx.perf.bench.timing import Timing, batch_of, time_runner
from dnx.perf.bench.untuned import sweep_untuned, untuned_configs

__all__ = [
    "KEEP_MARKER", "BenchOptions", "BenchResult", "InProcessRunner", "Ratio", "Timing", "batch_of", "compute_ratios",
    "kept_sections", "onnxruntime_runner", "openvino_async_runner", "openvino_async_runners", "openvino_runner",
    "openvino_runners", "precision_parameters", "render_markdown", "run_bench", "sweep_untuned", "sync_parameters",
    "time_runner", "torch_eager_runner", "tuned_ratios", "untuned_configs", "write_input_dir",
]
