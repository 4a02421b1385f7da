"""``dnx bench`` warns when the repository was tuned on another CPU (model or ISA flags) than this one."""

from __future__ import annotations

import json

from dnx.perf.bench import BenchOptions
from dnx.perf.bench.machine import tuned_elsewhere
from dnx.perf.bench.markdown import render_markdown
from dnx.perf.bench.result import BenchResult
from dnx.perf.results import machine_info
from dnx.perf.served import repository_manifest


def _repo(tmp_path, tuned_on: dict | None):
    repo = tmp_path / "model_repository"
    repo.mkdir()
    manifest = {"model": "densenet121", "models": {}}
    if tuned_on is not None:
        manifest["tuning"] = {"machine": tuned_on, "objective": "load", "models": {}}
    (repo / "dnx-manifest.json").write_text(json.dumps(manifest))
    return repo


def test_a_repository_tuned_on_another_cpu_is_named_in_one_warning_and_in_benchmarks_md(tmp_path):
    here = machine_info()
    older = {"cpu": "Intel(R) Xeon(R) CPU @ 2.50GHz", "cores": 2, "isa": ["avx2", "avx512f"]}
    assert older["cpu"] != here["cpu"] or sorted(older["isa"]) != sorted(here["isa"])
    repo = _repo(tmp_path, older)
    warning = tuned_elsewhere(repository_manifest(repo), here)
    assert warning and "\n" not in warning
    assert f"tuned on {older['cpu']} (avx2, avx512f)" in warning and str(here["cpu"]) in warning
    assert "rerun `dnx tune`" in warning
    res = BenchResult(machine=here, versions={}, in_process=[], served=[], served_configs={}, ratios=[], commands=[],
                      out_md=tmp_path / "B.md", results_dir=tmp_path, warnings=[warning])
    assert f"- **Warning**: {warning}" in render_markdown(res, BenchOptions(repository=repo)).splitlines()


def test_the_same_cpu_with_other_isa_flags_is_another_machine(tmp_path):
    here = machine_info()
    fewer = {**here, "isa": [f for f in here["isa"] if f not in ("amx_int8", "amx_bf16")] + ["avx512_4fmaps"]}
    warning = tuned_elsewhere(repository_manifest(_repo(tmp_path, fewer)), here)
    assert warning and "missing here: avx512_4fmaps" in warning


def test_no_warning_on_the_machine_it_was_tuned_on_or_for_an_untuned_repository(tmp_path):
    here = machine_info()
    assert tuned_elsewhere(repository_manifest(_repo(tmp_path, {**here, "load_average": [9.9]})), here) is None
    (tmp_path / "untuned").mkdir()
    assert tuned_elsewhere(repository_manifest(_repo(tmp_path / "untuned", None)), here) is None
    assert tuned_elsewhere(None, here) is None
