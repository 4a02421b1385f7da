"""What ``dnx bench`` runs (:class:`BenchOptions`) and what it measured (:class:`BenchResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from dnx.perf.bench.ratios import Ratio
from dnx.perf.bench.runners import InProcessRunner
from dnx.perf.bench.timing import Timing
from dnx.perf.levels import ConcurrencyRange


@dataclass
class BenchOptions:
    """What ``dnx bench`` runs."""

    repository: Path = Path("model_repository")
    out_md: Path = Path("perf/BENCHMARKS.md")
    results_dir: Path | None = None  # None: perf/results/bench-<timestamp>/
    duration_s: float = 10.0  # per in-process (runner, batch)
    warmup: int = 3
    min_iterations: int = 5
    concurrency: ConcurrencyRange = field(default_factory=lambda: ConcurrencyRange(1, 4, 1))
    fill_cap: int = 32  # each model is also measured where its batches fill, up to this level
    measurement_interval_ms: int = 5000
    stability_percentage: float | None = None
    max_trials: int | None = 6  # perf_analyzer's 10 windows x retries is long on a noisy machine
    retries: int = 1
    served_models: list[str] | None = None  # None: every model the local server loads
    torch_batches: tuple[int, ...] = (1, 4, 8)
    ort_threads: int = 2
    include_torch: bool = True
    extra_runners: list[InProcessRunner] = field(default_factory=list)
    include_openvino: bool = True  # OpenVINO in-process per precision (openvino_runners)
    command: str = ""  # how the bench was invoked, for the record
    progress: bool = True
    notes: str = ""
    shared_memory: str = "none"  # perf_analyzer --shared-memory of the main served sweep
    other_pass: bool = True  # sweep once more with the other --shared-memory mode
    other_concurrency: ConcurrencyRange | None = None  # that pass's levels; None: the main sweep's, and fill levels

    @property
    def other_shared_memory(self) -> str:
        """The mode of the second served pass."""
        return "none" if self.shared_memory == "system" else "system"


@dataclass
class BenchResult:
    """Everything measured, the ratios, and where they were written."""

    machine: dict
    versions: dict
    in_process: list[Timing]
    served: list[dict]  # tidy perf rows
    served_configs: dict
    ratios: list[Ratio]
    commands: list[str]
    out_md: Path
    results_dir: Path
    photo: str = ""
    untuned: list[dict] = field(default_factory=list)  # tidy perf rows with config.pbtxt.orig loaded (dnx tune)
    shared_memory: str = "none"  # of ``served`` (the main sweep)
    served_other: list[dict] = field(default_factory=list)  # tidy rows of the pass with the other shared-memory mode
    warnings: list[str] = field(default_factory=list)  # e.g. tuned on another CPU (machine.tuned_elsewhere)

    def to_json(self) -> dict:
        """``bench.json``: every field, paths as strings, ratios as :meth:`Ratio.to_dict`."""
        doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        doc["ratios"] = [r.to_dict() for r in self.ratios]
        return doc
