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
from dnx.perf.results import machine_info
from dnx.perf.tune import space as t
from dnx.perf.tune.decision import Candidate, choices
from dnx.perf.tune.confirm import confirm
from dnx.perf.tune.objective import SLACK
from dnx.perf.tune.options import TuneOptions, TuneResult
from dnx.perf.tune.report import write_tune_report
from dnx.perf.tune.write_back import write_back
from dnx.photos import MIX_INPUT_DATA
from dnx.serving.server import free_port
from tests.faults.test_tune_faults import SLOW, _tiny_image_onnx
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


def test_the_objective_flag_reaches_the_options(repo_copy):
    """The estimate in the too-small-budget error counts a fill level only under saturation (and its old name)."""
    def need(*args):
        r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--budget-minutes", "0.05",
                                     "--concurrency", "1", *args])
        one_line_error(r, "is too small to measure one candidate")
        return r.output.split("(about ")[1].split(" s")[0]

    assert need() == need("--objective", "load") == "14"
    assert need("--objective", "saturation") == need("--objective", "throughput") == "21"
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--concurrency", "16:1"])
    one_line_error(r, "--concurrency '16:1'", "1:16 is 1,2,4,8,16")


# ------------------------------------------------------------------ write-back (pure: measured figures given)


def _cand(model, idx, knobs, thr, *, baseline=False):
    pts = [{"concurrency": 1, "throughput": thr, "p50_ms": 10.0, "p99_ms": 12.0, "stable": True}]
    return Candidate(model, idx, knobs, t.describe(knobs), points=pts, score=thr, baseline=baseline)


def _again(c):
    """The final round as if it measured what the search did, three runs within +-1 % per level."""
    from dnx.perf.tune.curves import Point, combine

    return combine(c.label, [Point(p.concurrency, p.throughput * f, p.p99_ms) for p in c.points for f in (0.99, 1.0, 1.01)],
                   knobs=c.knobs)


def _confirmed(res: TuneResult) -> None:
    """The confirm step as if the rerun measured what the search did (the decision holds)."""
    o = res.options
    for name, ch in choices(res.candidates, o.objective, o.load, o.latency_budget_ms).items():
        if ch.changes:
            res.confirmations[name] = confirm(_again(ch.current), _again(ch.winner), ch)


def test_winner_is_written_through_the_template_with_orig_and_manifest(repo_copy, tmp_path):
    base = read_config(repo_copy / MODEL)
    start = t.knobs_of(base)
    better = {**start, "layout": (2, 1)}
    orig_text = (repo_copy / MODEL / "config.pbtxt").read_text()
    res = TuneResult(tmp_path / "out", TuneOptions(repository=repo_copy, concurrency=(1,)), machine={"cores": 2},
                     versions={"onnxruntime": "1.x"})
    res.out_dir.mkdir()
    res.candidates = [_cand(MODEL, 0, start, 30.0, baseline=True), _cand(MODEL, 1, better, 40.0),
                      _cand(MODEL, 2, {**start, "inter": 2}, 30.5)]
    _confirmed(res)
    write_back(res, {MODEL: base}, repo_copy)
    assert (repo_copy / MODEL / "config.pbtxt.orig").read_text() == orig_text
    now = read_config(repo_copy / MODEL)
    assert now.instance_count == 2 and now.parameters["intra_op_thread_count"] == "1"
    manifest = json.loads((repo_copy / "dnx-manifest.json").read_text())
    assert manifest["models"][MODEL]["config"]["instance_count"] == 2
    # The recorded figure: the low end of the final round's runs (40.0 +-1 %), the median beside it.
    tune = manifest["models"][MODEL]["tune"]
    assert tune["throughput"] == pytest.approx(39.6) and tune["throughput_median"] == pytest.approx(40.0)
    tuning = manifest["tuning"]
    assert tuning["objective"] == "load" and tuning["machine"] == {"cores": 2} and "onnxruntime" in tuning["versions"]
    assert tuning["models"][MODEL]["gain"] == pytest.approx(40 / 30 - 1) and tuning["models"][MODEL]["confirmed"]
    paths = write_tune_report(res)
    md = paths["md"].read_text()
    assert "+33.3%" in md and "inst=2 intra=1" in md and "**Rerun**" in md
    assert paths[f"plot:{MODEL}"] == res.out_dir / f"tune-{MODEL}.png"
    assert paths[f"plot:{MODEL}"].read_bytes().startswith(b"\x89PNG") and f"](tune-{MODEL}.png)" in md
    doc = json.loads(paths["json"].read_text())["decisions"][MODEL]
    assert doc["decision"]["winner"] == t.describe(better)
    assert doc["decision"]["changes"] and doc["confirmation"]["holds"]
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 4 and ",True," in rows[2]  # the winner row is marked
    assert "the budget ended the search" not in md and json.loads(paths["json"].read_text())["budget_stopped"] is False
    res.budget_stopped = True  # a search the budget cut short says so
    md = write_tune_report(res)["md"].read_text()
    assert "**the budget ended the search**: 3 candidates measured" in md and "--budget-minutes" in md


def test_a_gain_within_noise_keeps_the_previous_config(repo_copy, tmp_path):
    base = read_config(repo_copy / MODEL)
    start = t.knobs_of(base)
    before = _digest(repo_copy)
    res = TuneResult(tmp_path / "out", TuneOptions(repository=repo_copy, concurrency=(1,)))
    res.candidates = [_cand(MODEL, 0, start, 30.0, baseline=True), _cand(MODEL, 1, {**start, "inter": 2}, 30.5)]
    write_back(res, {MODEL: base}, repo_copy)
    after = _digest(repo_copy)
    # Every config stays as it was; the manifest records what the kept config measured.
    assert {k: v for k, v in after.items() if k != "dnx-manifest.json"} == {
        k: v for k, v in before.items() if k != "dnx-manifest.json"}
    assert "noise margin" in res.decisions[MODEL].reason
    assert json.loads((repo_copy / "dnx-manifest.json").read_text())["models"][MODEL]["tune"]["throughput"] == 30.0


# ------------------------------------------------------------------ a real short tune


TINY = "dnx_tiny"


@pytest.fixture
def slow_tiny_repo(tmp_path) -> Path:
    """One tiny image-shaped ONNX model whose current config is deliberately slow (tests/faults/test_tune_faults.py):
    a preferred batch of 4 with a 200 ms queue delay, so at concurrency 1 and 2 every request waits the delay."""
    from dnx.model_repository.render import TritonConfig, render_config

    repo = tmp_path / "model_repository"
    _tiny_image_onnx(repo / TINY / "1" / "model.onnx", 0.5)
    cfg = TritonConfig(name=TINY, max_batch_size=4, input_name="input", output_name="logits", input_dims=(3, 224, 224),
                       output_dims=(1000,), backend="onnxruntime", default_model_filename="model.onnx",
                       label_filename=None, parameters={"intra_op_thread_count": "1", "inter_op_thread_count": "1"},
                       **SLOW)
    (repo / TINY / "config.pbtxt").write_text(render_config(cfg))
    (repo / "dnx-manifest.json").write_text(json.dumps({"model": "densenet121", "models": {TINY: {}}}) + "\n")
    return repo


@pytest.mark.server
@pytest.mark.slow
def test_real_short_tune_of_one_model(slow_tiny_repo, tmp_path):
    """The default (load) objective over c1, c2 writes a confirmed winner that is nowhere slower than the
    current config in its own rerun figures, and records the machine it was tuned on."""
    repo, out = slow_tiny_repo, tmp_path / "tune"
    orig = (repo / TINY / "config.pbtxt").read_text()
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo), "--models", TINY, "--budget-minutes", "3",
                                 "--out", str(out), "--concurrency", "1:2", "--measurement-interval", "300",
                                 "--stability-percentage", "100", "--max-trials", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert f"{TINY}" in r.output and "wrote config.pbtxt" in r.output and str(out / "report.md") in r.output
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["objective"] == "load" and report["load"] == "1:2"
    cands = report["candidates"]
    assert cands[0]["baseline"] and cands[0]["status"] == "ok" and len(cands) >= 2
    assert sum(c["winner"] for c in cands) == 1 and not cands[0]["winner"]
    assert list(out.glob("raw/*_cand0_c1*.csv")) and list(out.glob("raw/*rerun*"))
    # The server it launched is on this machine: every measured level has its CPU cost (this model
    # mostly sleeps, so a short level may round to 0 at the kernel's 10 ms accounting tick).
    points = [p for c in cands if c["status"] == "ok" for p in json.loads(c["points"])]
    assert points and all(p["server_cpu_ms_per_inference"] >= 0 and p["client_cpu_ms_per_request"] >= 0 for p in points)
    assert sum(p["server_cpu_ms_per_inference"] for p in points) > 0
    d = report["decisions"][TINY]
    assert d["write"] and d["written"] and d["decision"]["changes"] and d["confirmation"]["holds"]
    # In the rerun's own figures, the written config is at no level more than the slack slower.
    rerun = {c["label"]: {p["concurrency"]: p["throughput"] for p in c["points"]} for c in d["confirmation"]["rerun"]["curves"]}
    current, written = rerun[d["previous"]], rerun[d["winner"]]
    assert set(current) == set(written) == {1, 2}
    assert all(written[c] >= current[c] * (1 - SLACK) for c in current), (current, written)
    assert d["confirmation"]["written"]["label"] == d["winner"]
    # The final round: the current config, the search's winner and the runners-up within the band of it.
    from dnx.perf.tune.confirm import rerun_configs
    from dnx.perf.tune.objective import FINALIST_BAND

    def geomean_c1_c2(c):  # the load objective's aggregate, from the search's own points
        pts = {p["concurrency"]: p["throughput"] for p in json.loads(c["points"])}
        return (pts[1] * pts[2]) ** 0.5 if {1, 2} <= set(pts) else 0.0

    scores = {c["label"]: geomean_c1_c2(c) for c in cands}
    search_winner = d["decision"]["winner"]
    runners = set(rerun) - {d["previous"], search_winner}
    assert search_winner in rerun and len(rerun) <= rerun_configs(2, 2)
    assert all(scores[r] >= (1 - FINALIST_BAND) * scores[search_winner] - 1e-6 for r in runners), (scores, runners)
    assert bool(runners) == bool(list(out.glob("raw/*rerun*-runner_c*.csv"))), runners
    # Written: the config, its .orig, the manifest's rerun figures and the machine.
    assert (repo / TINY / "config.pbtxt.orig").read_text() == orig
    assert t.describe(t.knobs_of(read_config(repo / TINY))).split(" q=")[0] in d["winner"]
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    tuning = manifest["tuning"]
    assert tuning["models"][TINY]["winner"] == d["winner"] and tuning["models"][TINY]["confirmed"]
    here = machine_info()
    assert {k: tuning["machine"][k] for k in ("cpu", "cores", "isa")} == {k: here[k] for k in ("cpu", "cores", "isa")}
    assert tuning["load"] == "1:2" and tuning["objective"] == "load"
    rec = manifest["models"][TINY]["tune"]
    assert [p["throughput"] for p in rec["curve"]] == [written[1], written[2]] and rec["confirmed"]
    md = (out / "report.md").read_text()
    assert "**Rerun**" in md and (out / f"tune-{TINY}.png").read_bytes().startswith(b"\x89PNG")
    assert here["cpu"] in md


def test_naming_the_ensemble_points_at_its_steps(repo_copy):
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo_copy), "--models", "densenet121", *FAST])
    one_line_error(r, "densenet121 is an ensemble", "--models densenet121_preprocess")


@pytest.mark.server
@pytest.mark.slow
def test_the_preprocess_model_is_tuned_through_its_ensemble_with_photographs(repo_copy, tmp_path):
    """Its candidates are measured on the ensemble (perf_analyzer sent the photo mix), its answers checked on
    encoded bytes; what is written reads back as the template's and the ensemble's manifest record follows it."""
    repo, out, pre = repo_copy, tmp_path / "tune", "densenet121_preprocess"
    before = read_config(repo / pre)
    r = CliRunner().invoke(cli, ["tune", "--repository", str(repo), "--models", pre, "--budget-minutes", "4",
                                 "--out", str(out), "--concurrency", "1:2", "--measurement-interval", "400",
                                 "--stability-percentage", "100", "--max-trials", "3", "-q"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    cands = report["candidates"]
    assert len(cands) >= 2 and all(c["status"] == "ok" for c in cands), [c.get("error") for c in cands]
    assert {tuple(sorted(json.loads(c["knobs"]))) for c in cands} == {("instances", "queue_us")}
    # perf_analyzer measured the ensemble, fed the photographs (its BYTES input), not the preprocess model alone.
    data = json.loads((out / MIX_INPUT_DATA).read_text())
    assert len(data["data"]) >= 3 and "image" in data["data"][0]
    assert report["measured_through"] == {pre: "densenet121"}
    assert f"`{pre}` is measured through its ensemble `densenet121`" in (out / "report.md").read_text()
    d = report["decisions"][pre]
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    assert pre not in manifest["models"]  # the ensemble's step, not a variant
    now = read_config(repo / pre)
    if d["written"]:
        assert (repo / pre / "config.pbtxt.orig").is_file() and now != before
        ens = manifest["ensemble"]
        assert (ens["preprocess_instances"], ens["preprocess_queue_delay_us"]) == (now.instance_count, now.max_queue_delay_us)
        assert ens["files"][f"{pre}/config.pbtxt"] == hashlib.sha256((repo / pre / "config.pbtxt").read_bytes()).hexdigest()
    else:
        assert now == before and not (repo / pre / "config.pbtxt.orig").exists()
        # Kept (the search kept it, or its pick did not hold on the rerun): the current config was measured again
        # and its figure is from those runs.
        assert d["confirmation"] and list(out.glob("raw/*rerun*-current*")), d
        assert len(d["confirmation"]["written"]["points"][0]["repeats"]) >= 2, d["confirmation"]["written"]
    assert now.parameters == before.parameters  # the transform is never tune's


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
