"""LoadGen's ``mlperf_log_summary.txt`` read into a typed record (pure).

The summary is LoadGen's own verdict: ``Result is : VALID`` needs the latency constraint met
(Server: the target percentile under ``target_latency``), the minimum duration and query count,
and LoadGen's early-stopping estimate. dnx keeps the three apart, because "the p99 is over the
bound" and "the run was too short to tell" call for different actions (a lower rate, a longer run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VALID, OVER, TOO_SHORT = "valid", "over", "too_short"

_PERCENTILE = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)\s*:\s*(\d+)")
_NEED_MORE = re.compile(r"Would need to run at least (\d+) more queries")
_PROCESSED = re.compile(r"Processed (?:at least \d+ queries \()?(\d+)")


@dataclass
class LoadGenSummary:
    """One LoadGen run as its summary states it; latencies in milliseconds."""

    scenario: str
    result_valid: bool
    constraints_met: bool | None  # Server: the latency percentile under the bound; None when not stated
    early_stopping_met: bool | None
    min_duration_met: bool | None
    min_queries_met: bool | None
    scheduled_qps: float | None  # Server: the Poisson arrival rate LoadGen actually offered
    completed_qps: float | None  # Server: "Completed samples per second"; Offline: "Samples per second"
    percentiles_ms: dict[str, float] = field(default_factory=dict)  # "50", "90", "99", "99.9" -> ms
    mean_ms: float | None = None
    max_ms: float | None = None
    processed: int | None = None  # queries in the run (from the early-stopping section)
    more_queries_needed: int | None = None  # early stopping: how many more queries could decide
    early_stopping_lines: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``valid``; ``over`` (the latency constraint failed); ``too_short`` (nothing failed, but LoadGen's
        early stopping, minimum duration or minimum query count could not confirm the run)."""
        if self.result_valid:
            return VALID
        if self.constraints_met is False:
            return OVER
        return TOO_SHORT

    def p(self, percentile: str) -> float | None:
        return self.percentiles_ms.get(percentile)

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario, "verdict": self.verdict, "result_valid": self.result_valid,
            "constraints_met": self.constraints_met, "early_stopping_met": self.early_stopping_met,
            "min_duration_met": self.min_duration_met, "min_queries_met": self.min_queries_met,
            "scheduled_qps": self.scheduled_qps, "completed_qps": self.completed_qps,
            "percentiles_ms": self.percentiles_ms, "mean_ms": self.mean_ms, "max_ms": self.max_ms,
            "processed": self.processed, "more_queries_needed": self.more_queries_needed,
            "early_stopping": self.early_stopping_lines,
        }


def _yes(value: str) -> bool:
    return value.strip().lower().startswith("yes")


def _key_values(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("*"):
            k, v = line.split(":", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def parse_summary(text: str) -> LoadGenSummary:
    """Read ``mlperf_log_summary.txt``; a text with no ``Result is`` line raises ValueError."""
    kv = _key_values(text)
    if "Result is" not in kv:
        raise ValueError("not a LoadGen summary (no 'Result is' line)")

    def flag(key: str) -> bool | None:
        return _yes(kv[key]) if key in kv else None

    def num(key: str) -> float | None:
        try:
            return float(kv[key])
        except (KeyError, ValueError):
            return None

    percentiles = {}
    for line in text.splitlines():
        m = _PERCENTILE.match(line.strip())
        if m:
            key = m.group(1).rstrip("0").rstrip(".")
            percentiles[key] = int(m.group(2)) / 1e6
    lines = text.splitlines()
    early: list[str] = []
    if "Early Stopping Result:" in text:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Early Stopping Result:"))
        for ln in lines[start + 1:]:
            if not ln.strip() or ln.startswith("="):
                break
            early.append(ln.strip())
    joined = " ".join(early)
    need, processed = _NEED_MORE.search(joined), _PROCESSED.search(joined)
    mean, mx = num("Mean latency (ns)"), num("Max latency (ns)")
    return LoadGenSummary(
        scenario=kv.get("Scenario", "?"), result_valid=kv["Result is"].upper().startswith("VALID"),
        constraints_met=flag("Performance constraints satisfied"), early_stopping_met=flag("Early stopping satisfied"),
        min_duration_met=flag("Min duration satisfied"), min_queries_met=flag("Min queries satisfied"),
        scheduled_qps=num("Scheduled samples per second"),
        completed_qps=num("Completed samples per second") if "Completed samples per second" in kv
        else num("Samples per second"),
        percentiles_ms=percentiles, mean_ms=mean / 1e6 if mean is not None else None,
        max_ms=mx / 1e6 if mx is not None else None,
        processed=int(processed.group(1)) if processed else None,
        more_queries_needed=int(need.group(1)) if need else None, early_stopping_lines=early,
    )
