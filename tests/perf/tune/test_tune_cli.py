"""``dnx tune`` end to end against a real local tritonserver, its bad-input paths, and its write-back."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.model_repository.config_edit import read_config
from dnx.perf.tune import space as t
from dnx.perf.tune.decision import Candidate
from dnx.perf.tune.options import TuneOptions, TuneResult
from dnx.perf.tune.report import write_tune_report
from dnx.perf.tune.write_back import write_back
from dnx.serving.server import free_port
from tests.fixtures_server import _link_tree
from tests.perf.sweep.test_perf_cli import one_line_error

MODEL = "densenet121_onnx"
# Short windows and a loose stability check: a tiny budget on a shared 2-core machine.
FAST = ["--concurrency", "1", "--measurement-interval", "500", "--stability-percentage", "100", "--max-trials", "3", "-q"]


def _digest(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(repo.rglob("*")) if p.is_file() and p.suffix != ".onnx"}


@pytest.fixture
def repo_copy(fp32_repository, tmp_path) -> Path:
    repo = tmp_path / "model_repository"
    _link_tree(fp32_repository, repo)
    return repo


# ------------------------------------------------------------------ bad input (no server started)


def test_unknown_model_is_one_line_and_repository_unchanged(repo_copy, tmp_path):
    before = _digest(repo_copy)
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--models", "nope", "--out", str(tmp_path / "o")])
    one_line_error(r, "'nope'", MODEL)
    assert _digest(repo_copy) == before


def test_budget_too_small_for_one_candidate(repo_copy):
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--budget-minutes", "0.05"])
    one_line_error(r, "--budget-minutes 0.05 is too small", "give at least")


def test_unreachable_server(repo_copy, tmp_path):
    before = _digest(repo_copy)
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--models", MODEL, "--url",
                                 f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "o"), *FAST])
    one_line_error(r, "no Triton server answers")
    assert _digest(repo_copy) == before


def test_a_repository_another_dnx_writes_fails_at_once_naming_it(repo_copy, tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from dnx.locks import repository_lock\n"
         f"with repository_lock({str(repo_copy)!r}, 'dnx export'):\n    print('held', flush=True); sys.stdin.read()"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _digest(repo_copy)
        r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--models", MODEL,
                                     "--out", str(tmp_path / "o")])
        one_line_error(r, f"is in use by pid {holder.pid} (dnx export)", "--wait")
        assert _digest(repo_copy) == before and not (tmp_path / "o").exists()
    finally:
        holder.communicate("", timeout=30)


def test_url_and_launch_exclude_each_other(repo_copy):
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--url", "127.0.0.1:1", "--launch"])
    one_line_error(r, "--url and --launch")


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses file permissions, so a read-only folder cannot be made")
def test_read_only_repository(repo_copy):
    (repo_copy / MODEL).chmod(0o555)
    try:
        r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--models", MODEL])
        one_line_error(r, "no write permission", "--dry-run")
    finally:
        (repo_copy / MODEL).chmod(0o755)


# ------------------------------------------------------------------ write-back (pure: measured figures given)


def _cand(model, idx, knobs, thr, *, baseline=False):
    pts = [{"concurrency": 1, "throughput": thr, "p50_ms": 10.0, "p99_ms": 12.0, "stable": True}]
    return Candidate(model, idx, knobs, t.describe(knobs), points=pts, score=thr, baseline=baseline)


def test_winner_is_written_through_the_template_with_orig_and_manifest(repo_copy, tmp_path):
    base = read_config(repo_copy / MODEL)
    start = t.knobs_of(base)
    better = {**start, "layout": (2, 1)}
    orig_text = (repo_copy / MODEL / "config.pbtxt").read_text()
    res = TuneResult(tmp_path / "out", TuneOptions(repository=repo_copy), machine={"cores": 2},
                     versions={"onnxruntime": "1.x"})
    res.out_dir.mkdir()
    res.candidates = [_cand(MODEL, 0, start, 30.0, baseline=True), _cand(MODEL, 1, better, 40.0),
                      _cand(MODEL, 2, {**start, "inter": 2}, 30.5)]
    write_back(res, {MODEL: base}, repo_copy)
    assert (repo_copy / MODEL / "config.pbtxt.orig").read_text() == orig_text
    now = read_config(repo_copy / MODEL)
    assert now.instance_count == 2 and now.parameters["intra_op_thread_count"] == "1"
    manifest = json.loads((repo_copy / "dnx-manifest.json").read_text())
    assert manifest["models"][MODEL]["config"]["instance_count"] == 2
    # The figure `dnx export` reads to choose the ensemble's variant (dnx.model_repository.ensemble).
    assert manifest["models"][MODEL]["tune"]["throughput"] == 40.0
    tuning = manifest["tuning"]
    assert tuning["objective"] == "throughput" and tuning["machine"] == {"cores": 2} and "onnxruntime" in tuning["versions"]
    assert tuning["models"][MODEL]["gain"] == pytest.approx(40 / 30 - 1)
    paths = write_tune_report(res)
    md = paths["md"].read_text()
    assert "+33.3%" in md and "inst=2 intra=1" in md
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 4 and ",True," in rows[2]  # the winner row is marked


def test_a_gain_within_noise_keeps_the_previous_config(repo_copy, tmp_path):
    base = read_config(repo_copy / MODEL)
    start = t.knobs_of(base)
    before = _digest(repo_copy)
    res = TuneResult(tmp_path / "out", TuneOptions(repository=repo_copy))
    res.candidates = [_cand(MODEL, 0, start, 30.0, baseline=True), _cand(MODEL, 1, {**start, "inter": 2}, 30.5)]
    write_back(res, {MODEL: base}, repo_copy)
    after = _digest(repo_copy)
    # Every config stays as it was; the manifest records what the kept config measured.
    assert {k: v for k, v in after.items() if k != "dnx-manifest.json"} == {
        k: v for k, v in before.items() if k != "dnx-manifest.json"}
    assert "noise margin" in res.decisions[MODEL].reason
    assert json.loads((repo_copy / "dnx-manifest.json").read_text())["models"][MODEL]["tune"]["throughput"] == 30.0


# ------------------------------------------------------------------ a real short tune


@pytest.mark.server
@pytest.mark.slow
def test_real_short_tune_of_one_model(repo_copy, tmp_path):
    out = tmp_path / "tune"
    before = _digest(repo_copy)
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--models", MODEL, "--budget-minutes", "2.5",
                                 "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert MODEL in r.output and str(out / "report.md") in r.output
    report = json.loads((out / "report.json").read_text())
    cands = report["candidates"]
    assert cands[0]["baseline"] and cands[0]["status"] == "ok" and cands[0]["throughput"] > 0
    assert len(cands) >= 2, "the budget fits more than the previous config"
    assert sum(c["winner"] for c in cands) == 1
    assert all(c["status"] == "ok" or c["error"] for c in cands)
    assert list(out.glob("raw/*_cand0_c1*.csv"))
    d = report["decisions"][MODEL]
    if d["write"]:
        assert (repo_copy / MODEL / "config.pbtxt.orig").is_file()
        assert json.loads((repo_copy / "dnx-manifest.json").read_text())["tuning"]["models"][MODEL]["winner"] == d["winner"]
        assert t.describe(t.knobs_of(read_config(repo_copy / MODEL))).split(" q=")[0] in d["winner"]
    else:
        after = _digest(repo_copy)
        assert {k: v for k, v in after.items() if k != "dnx-manifest.json"} == {
            k: v for k, v in before.items() if k != "dnx-manifest.json"} and d["reason"]


@pytest.mark.server
@pytest.mark.slow
def test_sigterm_leaves_the_repository_unchanged_and_keeps_the_candidates(repo_copy, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "tune"
    before = _digest(repo_copy)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    proc = subprocess.Popen([sys.executable, "-m", "dnx.cli", "tune", "--repository", str(repo_copy), "--models", MODEL,
                             "--budget-minutes", "10", "--out", str(out), *FAST],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("raw/*_cand1_c1*.csv")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output  # 128 + SIGTERM
    assert "interrupted" in output and "is unchanged" in output, output
    assert _digest(repo_copy) == before
    md = (out / "report.md").read_text()
    assert "interrupted" in md and "| `densenet121_onnx` | 0 |" in md  # candidate 1 may be cut mid-measurement
    # The launched server is gone: its gRPC port no longer answers.
    url = json.loads((out / "report.json").read_text())["url"]
    from dnx.errors import ServerError
    from dnx.perf.served import inspect_server

    with pytest.raises(ServerError):
        inspect_server(url)


@pytest.mark.server
@pytest.mark.slow
def test_dry_run_against_a_running_server_restores_its_models(triton_server, serving_repository, tmp_path):
    import tritonclient.grpc as grpcclient

    before = _digest(serving_repository)
    r = CliRunner().invoke(cli, ["tune", "--url", triton_server.grpc_url, "--repository", str(serving_repository),
                                 "--models", MODEL, "--dry-run", "--budget-minutes", "1.5", "--out", str(tmp_path / "o"),
                                 *FAST])
    assert r.exit_code == 0, r.output
    assert _digest(serving_repository) == before
    cands = json.loads((tmp_path / "o" / "report.json").read_text())["candidates"]
    assert len(cands) >= 2 and cands[0]["baseline"]
    # The server serves the repository's config again (the fixture's 5 ms queue delay, one instance).
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        cfg = client.get_model_config(MODEL, as_json=True)["config"]
        assert client.is_model_ready(MODEL)
    finally:
        client.close()
    assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 5000
    assert int(cfg["instance_group"][0]["count"]) == 1
