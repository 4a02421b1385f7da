"""What ``dnx tune`` searches and how it measures (:class:`TuneOptions`), and what it found (:class:`TuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnx.errors import InputError
from dnx.perf.analyzer import check_shared_memory
from dnx.perf.slo.options import P99_QUERIES
from dnx.perf.tune.curves import Load
from dnx.perf.tune.decision import Candidate, Decision
from dnx.perf.tune.confirm import Confirmation, rerun_configs, rerun_rounds
from dnx.perf.tune.objective import DEFAULT_LOAD, OBJECTIVES

DEFAULT_BUDGET_MINUTES = 14.0  # two variants + baselines of the 4-5 model CPU repository, 2 cores: <= 15 min
LOAD_ESTIMATE_S = 8.0  # load_model with an OpenVINO compile and warm-up, before anything was measured
ALIASES = {"throughput": "saturation"}  # the previous name of the saturation objective
# slo: the closed-loop search, measured like saturation from c1 up, ranks candidates under the p99 bound
# (rules.RULES["slo"]), then the final round measures SLO rates in the open loop (:mod:`dnx.perf.tune.slo`).
SLO = "slo"
TUNE_OBJECTIVES = (*OBJECTIVES, SLO)


@dataclass
class TuneOptions:
    """What ``dnx tune`` searches and how it measures."""

    repository: Path = Path("model_repository")
    models: list[str] | None = None  # None: baseline every served model, tune the `top` best
    objective: str = "load"
    latency_budget_ms: float | None = None
    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    url: str | None = None  # None: launch a local server on the repository
    dry_run: bool = False
    top: int = 2
    concurrency: tuple[int, ...] = Load.parse(DEFAULT_LOAD).levels  # the load (--concurrency 1:16)
    max_concurrency: int = 32  # saturation: cap of the fill level added per candidate (levels.levels_for)
    window_ms: int = 1500
    max_trials: int = 6
    stability_percentage: float = 15.0
    cores: int | None = None  # search space sized for this many cores (default: this machine's)
    out: Path | None = None
    progress: bool = True
    wait: bool = False  # wait for another dnx writing the repository instead of failing
    shared_memory: str = "none"  # perf_analyzer --shared-memory (system: a server on this machine only)
    p99_ms: float | None = None  # slo: the p99 bound of LoadGen's Server scenario
    loadgen_min_duration_ms: int = 10_000  # slo: LoadGen min_duration_ms of each open-loop run
    max_rate_runs: int = 8  # slo: LoadGen Server runs per config in its rate search

    def check(self) -> None:
        """Raise :class:`InputError` for values that cannot work."""
        self.objective = ALIASES.get(self.objective, self.objective)
        if self.objective not in TUNE_OBJECTIVES:
            raise InputError(f"--objective {self.objective!r} is unknown; choose {', '.join(TUNE_OBJECTIVES)}")
        if self.objective == SLO and self.p99_ms is None:
            raise InputError("--objective slo needs --p99-ms (the p99 bound of the open-loop Server scenario, e.g. "
                             "--p99-ms 50)")
        if self.p99_ms is not None and self.objective != SLO:
            raise InputError(f"--p99-ms bounds the open-loop rate of --objective slo; with --objective {self.objective} "
                             "use --latency-budget-ms")
        if self.p99_ms is not None and self.p99_ms <= 0:
            raise InputError(f"--p99-ms {self.p99_ms:g} must be > 0, e.g. 50")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise InputError(f"--latency-budget-ms {self.latency_budget_ms:g} must be > 0, e.g. 50")
        check_shared_memory(self.shared_memory, self.url or "127.0.0.1")  # None: a launched, local server
        if self.top < 1:
            raise InputError("--top must be >= 1")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise InputError(f"--concurrency {list(self.concurrency)} must list levels >= 1, e.g. 1:16")
        if self.search_objective == "saturation" and self.max_concurrency < max(self.concurrency):
            raise InputError(f"--max-concurrency {self.max_concurrency} is below --concurrency's highest level "
                             f"{max(self.concurrency)}; raise it (default 32)")
        if not Path(self.repository).is_dir():
            raise InputError(f"model repository {self.repository} does not exist; build it with `dnx export` or pass --repository")
        need = candidate_estimate_s(self)
        if self.budget_minutes * 60 < need:
            raise InputError(f"--budget-minutes {self.budget_minutes:g} is too small to measure one candidate "
                             f"(about {need:.0f} s here); give at least {need / 60:.1f}")

    @property
    def load(self) -> Load:
        """The load tuned for (``--concurrency``)."""
        return Load(tuple(self.concurrency))

    @property
    def search_objective(self) -> str:
        """How the search measures each candidate's levels (slo: as saturation does, rising, with the p99 bound as
        budget; :attr:`rank_objective` ranks them)."""
        objective = ALIASES.get(self.objective, self.objective)
        return "saturation" if objective == SLO else objective

    @property
    def rank_objective(self) -> str:
        """The rules the search ranks candidates by: the objective's, ``slo`` ranking by :data:`RULES` ``"slo"``
        (measured like saturation, from c1 up, but refused from the first level over the bound)."""
        return SLO if ALIASES.get(self.objective, self.objective) == SLO else self.search_objective

    @property
    def search_budget_ms(self) -> float | None:
        """The closed-loop p99 budget of the search: a config whose closed-loop p99 is over the open-loop
        bound at every level cannot meet it with Poisson arrivals either."""
        budgets = [b for b in (self.latency_budget_ms, self.p99_ms if self.objective == SLO else None) if b is not None]
        return min(budgets) if budgets else None

    @property
    def levels(self) -> tuple[int, ...]:
        """Concurrency levels measured per candidate (the lowest only for the latency objective)."""
        lv = self.load.levels
        if self.objective == SLO:  # one request at a time is the load sparse Poisson arrivals see
            return tuple(sorted({1, *lv}))
        return lv[:1] if ALIASES.get(self.objective, self.objective) == "latency" else lv


def level_estimate_s(opts: TuneOptions) -> float:
    """A first guess of one measured level: at least 3 perf_analyzer windows and its start-up."""
    return 3 * opts.window_ms / 1000.0 + 2.0


def candidate_estimate_s(opts: TuneOptions) -> float:
    """A first guess of one candidate's cost: a load plus every level (saturation: and a fill level)."""
    fill = 1 if opts.search_objective == "saturation" else 0
    return LOAD_ESTIMATE_S + (len(opts.levels) + fill) * level_estimate_s(opts)


def confirm_estimate_s(opts: TuneOptions, level_s: float | None = None, load_s: float | None = None) -> float:
    """What the confirm step of one model costs: :func:`~dnx.perf.tune.confirm.rerun_rounds` runs of each config it
    measures (:func:`~dnx.perf.tune.confirm.rerun_configs`: current, winner, runners-up) per
    level, and about one load per config per level.

    ``level_s`` / ``load_s``: measured costs so far (default: the first guesses).
    """
    if opts.objective == SLO:
        # From the run length alone: the closed-loop figures of the current config say little of the rate the
        # winner will be measured at (a batching delay can cut them tenfold); a model slower than 600 queries
        # per run length makes the open-loop round last longer than this.
        return slo_estimate_s(opts, None)
    n = len(opts.levels) if opts.search_objective != "saturation" else 2
    rounds = rerun_rounds(n)
    k = rerun_configs(n, rounds)
    return n * (k * rounds * (level_s or level_estimate_s(opts)) + k * (load_s or LOAD_ESTIMATE_S))


def record_estimate_s(opts: TuneOptions, level_s: float | None = None, load_s: float | None = None) -> float:
    """What the final round of a model whose current config stays costs: that config alone, the same runs per level."""
    n = len(opts.levels) if opts.search_objective != "saturation" else 1
    return n * rerun_rounds(n) * (level_s or level_estimate_s(opts)) + (load_s or LOAD_ESTIMATE_S)


def slo_estimate_s(opts: TuneOptions, throughput: float | None) -> float:
    """What the open-loop final round of one model costs (:mod:`dnx.perf.tune.slo`): a single-stream run and
    a rate search with its confirmation for the current config and the winner, and the four A/B runs.
    ``throughput``: the model's closed-loop figure (a LoadGen run needs its 600 queries at about half that
    rate); None: only ``loadgen_min_duration_ms`` is known."""
    run_s = opts.loadgen_min_duration_ms / 1000.0
    if throughput:
        run_s = max(run_s, P99_QUERIES / (0.5 * throughput))
    return 2 * (opts.max_rate_runs + 2) * (run_s + 2.0) + 4 * (run_s + 2.0) + 2 * LOAD_ESTIMATE_S


@dataclass
class TuneResult:
    """Every candidate, the decision per model, the report paths."""

    out_dir: Path
    options: TuneOptions
    candidates: list[Candidate] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    confirmations: dict[str, Confirmation] = field(default_factory=dict)
    confirm_errors: dict[str, str] = field(default_factory=dict)  # model -> why its rerun failed
    paths: dict[str, Path] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    interrupted: bool = False
    url: str = ""
    through: dict[str, str] = field(default_factory=dict)  # preprocess model -> the ensemble it is measured on
    budget_stopped: bool = False  # the search ended because the next candidate would not fit the budget
    searched: tuple[str, ...] = ()  # the models the search was to tune (--models, or the --top best)
    slo: dict = field(default_factory=dict)  # model -> its open-loop final round (dnx.perf.tune.slo.SloRound)
