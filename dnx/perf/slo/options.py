"""What ``dnx perf --scenario server|single-stream|offline`` measures and how (LoadGen's settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnx.errors import InputError
from dnx.perf.slo.loadgen import SCENARIOS

# LoadGen's early stopping needs about 460 consecutive queries under the bound before it can
# confirm a p99 (seen in its summary: "Would need to run at least 388 more queries" after 71).
# Fewer queries only give "too short to decide", so each Server run asks for at least this many.
P99_QUERIES = 600


@dataclass
class SloOptions:
    """Everything the open-loop measurement needs; mirrors the ``dnx perf`` scenario flags."""

    scenario: str = "server"
    p99_ms: float | None = None
    url: str = "127.0.0.1:8001"
    models: list[str] | None = None
    out: Path | None = None
    launch: bool = False
    repository: Path | str = Path("model_repository")
    endpoint_url: str | None = None
    photos: str | None = None
    min_duration_ms: int = 10_000
    min_query_count: int = P99_QUERIES  # Server runs; single-stream uses max(min_query_count // 4, 64)
    max_runs: int = 8  # Server rate search: LoadGen runs per model
    precision: float = 0.1  # stop once the failing rate is within 10 % above the VALID one
    max_rerun_s: float = 60.0  # the one longer rerun of an undecided rate may last this long (queries = rate x s)
    confirm: bool = True  # rerun the found rate with another arrival schedule before reporting it
    closed_loop: bool = True  # perf_analyzer at the concurrency of the same mean rate, for the comparison
    progress: bool = True
    protocol: str = "grpc"  # LoadGen drives gRPC only (async_infer with a callback)
    resume: Path | None = None  # refused: --resume continues a concurrency sweep

    def check(self) -> None:
        if self.resume is not None:
            raise InputError(f"--resume continues a concurrency sweep; drop --scenario/--p99-ms to continue {self.resume}, "
                             "or start a new open-loop run without --resume")
        if self.scenario == "concurrency":
            raise InputError("--p99-ms bounds the open-loop --scenario server; for the closed-loop sweep use "
                             "--latency-budget-ms")
        if self.protocol != "grpc":
            raise InputError(f"--scenario {self.scenario} sends over gRPC only; drop --protocol {self.protocol}")
        if self.scenario not in SCENARIOS:  # (concurrency is dnx perf's closed-loop sweep, not LoadGen's)
            raise InputError(f"--scenario {self.scenario!r} is unknown; use concurrency, {', '.join(SCENARIOS)}")
        if self.scenario == "server" and self.p99_ms is None:
            raise InputError("--scenario server needs --p99-ms (the p99 latency bound, e.g. --p99-ms 50)")
        if self.p99_ms is not None and self.p99_ms <= 0:
            raise InputError(f"--p99-ms {self.p99_ms:g} must be > 0, e.g. 50")
        if self.min_duration_ms < 100:
            raise InputError(f"--loadgen-min-duration-ms {self.min_duration_ms} is too short; use 100 or more")
        if self.min_query_count < 1:
            raise InputError(f"--loadgen-min-query-count {self.min_query_count} must be >= 1")
        if self.max_runs < 2:
            raise InputError(f"--max-rate-runs {self.max_runs} must be >= 2 (one VALID and one failing rate)")
