"""What ``dnx tune`` searches and how it measures (:class:`TuneOptions`), and what it found (:class:`TuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnx.errors import InputError
from dnx.perf.analyzer import check_shared_memory
from dnx.perf.tune.decision import OBJECTIVES, Candidate, Decision

DEFAULT_BUDGET_MINUTES = 14.0  # two variants + baselines of the 4-5 model CPU repository, 2 cores: <= 15 min
LOAD_ESTIMATE_S = 8.0  # load_model with an OpenVINO compile and warm-up, before anything was measured


@dataclass
class TuneOptions:
    """What ``dnx tune`` searches and how it measures."""

    repository: Path = Path("model_repository")
    models: list[str] | None = None  # None: baseline every served model, tune the `top` best
    objective: str = "throughput"
    latency_budget_ms: float | None = None
    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    url: str | None = None  # None: launch a local server on the repository
    dry_run: bool = False
    top: int = 2
    concurrency: tuple[int, ...] = (1, 2, 4)
    max_concurrency: int = 32  # cap of the fill level added per candidate (levels.levels_for)
    window_ms: int = 1500
    max_trials: int = 6
    stability_percentage: float = 15.0
    cores: int | None = None  # search space sized for this many cores (default: this machine's)
    out: Path | None = None
    progress: bool = True
    wait: bool = False  # wait for another dnx writing the repository instead of failing
    shared_memory: str = "none"  # perf_analyzer --shared-memory (system: a server on this machine only)

    def check(self) -> None:
        """Raise :class:`InputError` for values that cannot work."""
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective {self.objective!r} is unknown; choose {' or '.join(OBJECTIVES)}")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise InputError(f"--latency-budget-ms {self.latency_budget_ms:g} must be > 0, e.g. 50")
        check_shared_memory(self.shared_memory, self.url or "127.0.0.1")  # None: a launched, local server
        if self.top < 1:
            raise InputError("--top must be >= 1")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise InputError(f"--concurrency {list(self.concurrency)} must list levels >= 1, e.g. 1,2,4")
        if self.max_concurrency < max(self.concurrency):
            raise InputError(f"--max-concurrency {self.max_concurrency} is below --concurrency's highest level "
                             f"{max(self.concurrency)}; raise it (default 32)")
        if not Path(self.repository).is_dir():
            raise InputError(f"model repository {self.repository} does not exist; build it with `dnx export` or pass --repository")
        need = candidate_estimate_s(self)
        if self.budget_minutes * 60 < need:
            raise InputError(f"--budget-minutes {self.budget_minutes:g} is too small to measure one candidate "
                             f"(about {need:.0f} s here); give at least {need / 60:.1f}")

    @property
    def levels(self) -> tuple[int, ...]:
        """Concurrency levels measured per candidate (c1 only for the latency objective)."""
        return (1,) if self.objective == "latency" else tuple(sorted(set(self.concurrency)))


def candidate_estimate_s(opts: TuneOptions) -> float:
    """A first guess of one candidate's cost: a load plus at least 3 windows per level (and a fill level)."""
    return LOAD_ESTIMATE_S + (len(opts.levels) + 1) * (3 * opts.window_ms / 1000.0 + 2.0)


@dataclass
class TuneResult:
    """Every candidate, the decision per model, the report paths."""

    out_dir: Path
    options: TuneOptions
    candidates: list[Candidate] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    interrupted: bool = False
    url: str = ""
