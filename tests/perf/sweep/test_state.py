"""``sweep-state.json`` round trip: every option comes back without a hand-kept field list."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dnx.errors import InputError
from dnx.perf.levels import ConcurrencyRange
from dnx.perf.served import ServedModel
from dnx.perf.sweep import PerfOptions, SweepOptions, SweepResult, resume_options
from dnx.perf.sweep.state import save_state


def test_every_option_survives_a_resume(tmp_path):
    sweep = SweepOptions(url="h:1", protocol="http", concurrency=ConcurrencyRange(2, 8, 2), batch_sizes=(1, 4),
                         measurement_interval_ms=750, percentile=95, stability_percentage=20.0, max_trials=4, retries=3,
                         metrics_url="h:2/metrics", verbose_csv=True, input_data="/data", measurement_mode="count_windows",
                         measurement_request_count=77, skip_saturated=True)
    opts = PerfOptions(sweep=sweep, models=["m"], out=tmp_path, latency_budget_ms=40.0, launch=True,
                       repository="s3://bucket/repo", endpoint_url="http://minio:9000", collect_metrics=False)
    save_state(opts, SweepResult(tmp_path, [ServedModel("m", "1", {})], sweep))
    back, state = resume_options(tmp_path, progress=False)
    for f in dataclasses.fields(SweepOptions):
        if f.name not in ("progress", "collect_metrics"):  # how this process reports; derived again by run_perf
            assert getattr(back.sweep, f.name) == getattr(sweep, f.name), f.name
    for f in dataclasses.fields(PerfOptions):
        if f.name not in ("sweep", "on_plan"):
            assert getattr(back, f.name) == getattr(opts, f.name), f.name
    assert back.repository == "s3://bucket/repo" and state["measurements"] == []
    other, _ = resume_options(tmp_path, url="other:1")
    assert other.sweep.url == "other:1" and other.launch is False  # another server: nothing launched


def test_a_folder_without_state_is_one_line(tmp_path):
    with pytest.raises(InputError, match="holds no resumable sweep") as exc:
        resume_options(tmp_path)
    assert "\n" not in str(exc.value)
    (tmp_path / "sweep-state.json").write_text('{"perf": {}, "sweep": {"concurrency": "x"}}')
    with pytest.raises(InputError, match="holds no resumable sweep"):
        resume_options(Path(tmp_path))
