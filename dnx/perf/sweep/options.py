"""What ``dnx perf`` measures and how: :class:`SweepOptions` (the perf_analyzer settings),
:class:`PerfOptions` (the run around them), and the duration estimate printed before a sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dnx.errors import InputError
from dnx.perf.analyzer import SHARED_MEMORY, LevelSettings
from dnx.perf.levels import ConcurrencyRange

# `dnx perf` visits about 3.5 windows a level (3 stable + ramp) plus ~1.5 s of start-up: 5 s time
# windows gave 18 s a point on a 2-core CPU.
WINDOWS_PER_POINT = 3.5
POINT_OVERHEAD_S = 1.5
# count_windows: the slowest CPU variants served 25-33 infer/s on a 2-core CPU (docs/PERFORMANCE.md).
ASSUMED_THROUGHPUT = 30.0


@dataclass
class SweepOptions(LevelSettings):
    """What to measure and how; mirrors the ``dnx perf`` flags (the per-level ones are :class:`LevelSettings`')."""

    concurrency: ConcurrencyRange = field(default_factory=lambda: ConcurrencyRange(1, 16, 1))
    batch_sizes: tuple[int, ...] = (1,)
    progress: bool = True
    skip_saturated: bool = False  # stop raising concurrency once throughput is flat (see levels.saturated())
    photos: str | None = None  # folder of photographs for bytes-in (ensemble) models; None: dnx.photos.photo_mix()

    def check(self) -> None:
        """Raise :class:`InputError` for values perf_analyzer would reject."""
        if self.protocol not in ("grpc", "http"):
            raise InputError(f"--protocol {self.protocol!r} is not supported; use grpc or http")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"--batch-size {list(self.batch_sizes)} must list sizes >= 1, e.g. 1,4")
        if self.measurement_interval_ms < 100:
            raise InputError(f"--measurement-interval {self.measurement_interval_ms} ms is too short; use 100 or more")
        if self.percentile is not None and not 1 <= self.percentile <= 99:
            raise InputError(f"--percentile {self.percentile} must be within 1..99")
        if self.measurement_mode not in ("time_windows", "count_windows"):
            raise InputError(f"--measurement-mode {self.measurement_mode!r} is unknown; use time_windows or count_windows")
        if self.measurement_request_count < 10:
            raise InputError(f"--measurement-request-count {self.measurement_request_count} is too small; use 10 or more")
        if self.shared_memory not in SHARED_MEMORY:
            raise InputError(f"--shared-memory {self.shared_memory!r} is unknown; use none or system")
        if self.stability_percentage is not None and self.stability_percentage <= 0:
            raise InputError(f"--stability-percentage {self.stability_percentage} must be > 0, e.g. 10")


@dataclass
class PerfOptions:
    """Everything ``dnx perf`` needs; ``sweep`` carries the perf_analyzer settings."""

    sweep: SweepOptions = field(default_factory=SweepOptions)
    models: list[str] | None = None  # None: every READY model on the server
    out: Path | None = None  # None: perf/results/<timestamp>/
    latency_budget_ms: float | None = None
    launch: bool = False  # start a local server for the run and stop it after
    repository: Path | str = Path("model_repository")  # or s3://BUCKET/PREFIX (see dnx.storage.remote)
    endpoint_url: str | None = None  # S3-compatible endpoint for an s3:// repository
    collect_metrics: bool | None = None  # None: on when a measured model runs on a GPU
    core_hour_cost: float | None = None  # USD per CPU core-hour: adds the cost per million inferences
    on_plan: Callable[[int, float], None] | None = None  # called with (points, estimated seconds) before the sweep


def estimate_sweep_seconds(points: int, s: SweepOptions, throughput: float = ASSUMED_THROUGHPUT) -> float:
    """Expected sweep duration without retries: time windows from their length, count windows from
    ``throughput`` (requests per second; a slower server takes proportionally longer)."""
    if s.measurement_mode == "count_windows":
        window_s = s.measurement_request_count / throughput
    else:
        window_s = s.measurement_interval_ms / 1000.0
    return points * (WINDOWS_PER_POINT * window_s + POINT_OVERHEAD_S)
