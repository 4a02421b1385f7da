"""``dnx tune``'s write-back is all or nothing: a failed write puts every config back (DNX_FAULT points)."""

from __future__ import annotations

import json

import pytest

from dnx.errors import DnxError
from dnx.model_repository.config_edit import read_config
from dnx.perf.tune import space as t
from dnx.perf.tune.options import TuneOptions, TuneResult
from dnx.perf.tune.write_back import write_back
from tests.perf.tune.test_tune_cli import MODEL, _cand, _confirmed, _digest, repo_copy  # noqa: F401 - the fixture


def _result(repo, tmp_path):
    base = read_config(repo / MODEL)
    start = t.knobs_of(base)
    res = TuneResult(tmp_path / "out", TuneOptions(repository=repo, concurrency=(1,)), machine={"cores": 2})
    res.out_dir.mkdir()
    res.candidates = [_cand(MODEL, 0, start, 30.0, baseline=True), _cand(MODEL, 1, {**start, "layout": (2, 1)}, 40.0)]
    _confirmed(res)
    return res, {MODEL: base}


@pytest.mark.parametrize("point", ["tune-write-back:after-first-config", "tune-write-back:before-manifest"])
def test_a_failed_write_puts_every_config_back(repo_copy, tmp_path, monkeypatch, point):
    before = _digest(repo_copy)
    res, bases = _result(repo_copy, tmp_path)
    monkeypatch.setenv("DNX_FAULT", f"{point}:error")
    with pytest.raises(DnxError, match="is unchanged .every config was put back."):
        write_back(res, bases, repo_copy)
    assert _digest(repo_copy) == before  # configs, no stray config.pbtxt.orig, the manifest
    assert not (repo_copy / MODEL / "config.pbtxt.orig").exists()
    assert res.decisions[MODEL].write and res.decisions[MODEL].written is None


def test_without_a_fault_the_same_write_back_changes_config_and_manifest_together(repo_copy, tmp_path):
    res, bases = _result(repo_copy, tmp_path)
    write_back(res, bases, repo_copy)
    assert read_config(repo_copy / MODEL).instance_count == 2
    tuning = json.loads((repo_copy / "dnx-manifest.json").read_text())["tuning"]
    assert tuning["models"][MODEL]["written"] == str(repo_copy / MODEL / "config.pbtxt") == res.decisions[MODEL].written


@pytest.mark.parametrize("point", ["tune-write-back:after-first-config", "tune-write-back:before-manifest"])
def test_a_signal_inside_the_write_back_waits_until_it_is_done(repo_copy, tmp_path, monkeypatch, point):
    import signal

    from dnx.signals import Interrupted, terminating

    res, bases = _result(repo_copy, tmp_path)
    monkeypatch.setenv("DNX_FAULT", f"{point}:SIGTERM")
    with pytest.raises(Interrupted) as exc, terminating():
        write_back(res, bases, repo_copy)
    assert exc.value.signum == signal.SIGTERM
    assert read_config(repo_copy / MODEL).instance_count == 2  # written in full, then the signal acted
    tuning = json.loads((repo_copy / "dnx-manifest.json").read_text())["tuning"]
    assert tuning["models"][MODEL]["written"] == str(repo_copy / MODEL / "config.pbtxt")


def test_a_tuned_preprocess_model_updates_the_ensemble_record_not_the_variants(repo_copy, tmp_path):
    """The preprocess model is the ensemble's step: its new instances, queue delay and config hash go into
    the manifest's ``ensemble``; ``models`` (the variants) gains no entry for it."""
    import hashlib

    pre = "densenet121_preprocess"
    base = read_config(repo_copy / pre)
    start = t.knobs_of(base)
    res = TuneResult(tmp_path / "out", TuneOptions(repository=repo_copy, concurrency=(1,)), machine={"cores": 2})
    res.out_dir.mkdir()
    res.candidates = [_cand(pre, 0, start, 20.0, baseline=True), _cand(pre, 1, {**start, "instances": 1}, 30.0)]
    _confirmed(res)
    write_back(res, {pre: base}, repo_copy)
    manifest = json.loads((repo_copy / "dnx-manifest.json").read_text())
    ens = manifest["ensemble"]
    assert read_config(repo_copy / pre).instance_count == 1 == ens["preprocess_instances"]
    assert ens["files"][f"{pre}/config.pbtxt"] == hashlib.sha256((repo_copy / pre / "config.pbtxt").read_bytes()).hexdigest()
    assert ens["tune"]["confirmed"] and ens["tune"]["throughput"] > 0
    assert pre not in manifest["models"] and manifest["tuning"]["models"][pre]["written"]


def _failed_current(model, start):
    from dnx.perf.tune.decision import Candidate

    return Candidate(model, 0, start, t.describe(start), points=[], status="failed", baseline=True,
                     error="[Errno 28] No space left on device")


def test_a_failed_current_config_measurement_leaves_the_manifest_untouched(repo_copy, tmp_path):
    """A run whose current-config measurement failed (a full results disk) writes nothing: the previous
    tune record stays byte for byte."""
    res, bases = _result(repo_copy, tmp_path)
    write_back(res, bases, repo_copy)  # a first, successful run: its records are the previous ones
    manifest = repo_copy / "dnx-manifest.json"
    before, configs = manifest.read_bytes(), _digest(repo_copy)
    assert json.loads(before)["models"][MODEL]["tune"]["throughput_median"] == 40.0

    again = TuneResult(tmp_path / "again", TuneOptions(repository=repo_copy, concurrency=(1,)), machine={"cores": 2})
    again.candidates = [_failed_current(MODEL, t.knobs_of(read_config(repo_copy / MODEL)))]
    write_back(again, {MODEL: read_config(repo_copy / MODEL)}, repo_copy)
    assert manifest.read_bytes() == before and _digest(repo_copy) == configs
    assert not again.decisions[MODEL].write


def test_a_failed_model_keeps_its_previous_record_beside_a_measured_one(repo_copy, tmp_path):
    pre = "densenet121_preprocess"
    res, bases = _result(repo_copy, tmp_path)
    write_back(res, bases, repo_copy)
    previous = json.loads((repo_copy / "dnx-manifest.json").read_text())

    base_pre = read_config(repo_copy / pre)
    again = TuneResult(tmp_path / "again", TuneOptions(repository=repo_copy, concurrency=(1,)), machine={"cores": 2})
    start = t.knobs_of(read_config(repo_copy / MODEL))
    again.candidates = [_failed_current(MODEL, start), _cand(pre, 0, t.knobs_of(base_pre), 20.0, baseline=True)]
    write_back(again, {MODEL: read_config(repo_copy / MODEL), pre: base_pre}, repo_copy)
    now = json.loads((repo_copy / "dnx-manifest.json").read_text())
    assert now["models"][MODEL]["tune"] == previous["models"][MODEL]["tune"]  # not "current config failed"
    assert now["tuning"]["models"][MODEL] == previous["tuning"]["models"][MODEL]
    assert now["tuning"]["models"][pre]["figure"] and now["ensemble"]["tune"]["throughput"] == 20.0
