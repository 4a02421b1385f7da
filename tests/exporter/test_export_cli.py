"""`dnx export` end to end through the CLI: real torch export, ONNX Runtime parity, configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dnx.cli import cli
from dnx.model_repository.render import parse_config


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_fp32_builds_a_valid_repository(tmp_path):
    out = tmp_path / "model_repository"
    r = CliRunner().invoke(cli, ["export", "--weights", "random", "--precision", "fp32", "--target", "cpu",
                                 "--runtime", "onnxruntime", "--max-batch", "4", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "densenet121_onnx" in r.output and "max_abs=" in r.output and "weights: random" in r.output
    cfg = parse_config((out / "densenet121_onnx" / "config.pbtxt").read_text())
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 4
    assert cfg.output[0].label_filename == "labels.txt"
    labels = (out / "densenet121_onnx" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0] == "tench"
    manifest = json.loads((out / "dnx-manifest.json").read_text())
    m = manifest["models"]["densenet121_onnx"]
    assert manifest["weights"]["random"] is True and manifest["weights"]["seed"] == 0
    assert manifest["preprocessing"]["resize"] == 256 and manifest["preprocessing"]["center_crop"] == 224
    assert m["precision"] == "fp32" and m["opset"] == 17 and len(m["files"]["1/model.onnx"]) == 64
    assert m["parity"]["passed"] is True and m["parity"]["max_abs"] < 1e-3
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert [s["status"] for s in manifest["stages"]][0] == "OK"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "/nonexistent/w.pth"], "not found"),
        (["--out", "/proc/dnx-repo"], "pass another --out"),
    ],
)
def test_export_errors_are_one_line(args, message, tmp_path):
    base = ["export", "--weights", "random", "--target", "cpu", "--out", str(tmp_path / "r"), "-q"]
    r = CliRunner().invoke(cli, base + args)
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and message in r.output
    assert "Traceback" not in r.output and r.output.count("\n") == 1


def test_export_corrupt_weights(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    before = bad.read_bytes()
    r = CliRunner().invoke(cli, ["export", "--weights", str(bad), "--target", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "Error: cannot load weights" in r.output
    assert bad.read_bytes() == before
    assert not (tmp_path / "r").exists()


def test_failed_run_leaves_previous_repository_intact(fp32_repository, tmp_path, monkeypatch):
    import shutil

    from dnx.errors import DnxError
    from dnx.pipeline import Stage, stages

    repo = tmp_path / "model_repository"
    shutil.copytree(fp32_repository, repo)
    # As `dnx tune` leaves a model it rewrote: the failed re-export must keep the tuned config too.
    shutil.copy(repo / "densenet121_onnx" / "config.pbtxt", repo / "densenet121_onnx" / "config.pbtxt.orig")
    before = _tree(repo)

    def boom(ctx):
        raise DnxError("injected failure in the middle of the pipeline")

    # Fault injection: a stage that fails after the export stage has written into staging.
    monkeypatch.setattr(stages, "STAGES", stages.STAGES[:1] + [Stage("boom", boom)])
    r = CliRunner().invoke(cli, ["export", "--weights", "random", "--target", "cpu", "--runtime", "onnxruntime",
                                 "--out", str(repo), "-q"])
    assert r.exit_code == 1 and "left unchanged" in r.output and "injected failure" in r.output
    assert f"Warning: {repo} has configs tuned by `dnx tune` (densenet121_onnx)" in r.stderr
    assert _tree(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model_repository.dnx-lock", "model_repository"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_previous_repository_intact(fp32_repository, tmp_path, sig):
    import shutil

    repo = tmp_path / "model_repository"
    shutil.copytree(fp32_repository, repo)
    before = _tree(repo)
    proc = subprocess.Popen([sys.executable, "-m", "dnx", "export", "--weights", "random", "--target", "cpu",
                             "--runtime", "onnxruntime", "--out", str(repo), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob("model_repository.dnx-staging-*")):
        time.sleep(0.05)
    assert list(tmp_path.glob("model_repository.dnx-staging-*")), "export never started staging"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert _tree(repo) == before
    if sig == signal.SIGTERM:  # clean unwind removes the staging folder
        assert sorted(p.name for p in tmp_path.iterdir()) == [".model_repository.dnx-lock", "model_repository"]
    else:  # the next run sweeps the dead run's staging folder away
        from dnx.model_repository.layout import StagedRepository

        with StagedRepository(repo):
            assert len(list(tmp_path.glob("model_repository.dnx-staging-*"))) == 1


def test_export_wrong_state_dict_keys(tmp_path):
    import torch
    import torchvision

    pth = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), pth)
    r = CliRunner().invoke(cli, ["export", "--weights", str(pth), "--target", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "does not fit torchvision densenet121" in r.output
    assert r.output.count("\n") == 1 and not (tmp_path / "r").exists()


def test_export_imagenet_without_network(tmp_path, monkeypatch):
    from dnx.serving.server import free_port

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # an empty hub cache forces a download
    # The download goes through a proxy that is not there: offline on every machine, even one with a network.
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    r = CliRunner().invoke(cli, ["export", "--weights", "imagenet", "--target", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and r.output.startswith("Error: could not get torchvision's")
    assert "--weights random" in r.output and "Traceback" not in r.output


def test_card_command_int8_as_typed(tmp_path, monkeypatch):
    """The card's `dnx export --precision int8` as typed (random weights: no network here).

    It calibrates on the bundled photographs, says so in one warning line, and the manifest,
    `dnx validate` and `make bench`'s report all name that calibration source.
    """
    from dnx.exporter.calibration import BUNDLED_SOURCE, bundled_photographs
    from dnx.perf.bench import BenchOptions, BenchResult, render_markdown

    monkeypatch.chdir(tmp_path)  # --out and --cache-dir keep their defaults, as typed
    r = CliRunner().invoke(cli, ["export", "--precision", "int8", "--weights", "random"])
    assert r.exit_code == 0, r.output
    n = len(bundled_photographs())
    warnings = [line for line in r.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1, r.stderr
    assert f"the {n} generic sample photographs bundled with scikit-image" in warnings[0]
    assert "not for production; pass --calib-dir <folder of your own images>" in warnings[0]
    assert r.stderr.index("Warning:") < r.stderr.index("torch_to_onnx")  # before the slow work

    repo = tmp_path / "model_repository"
    manifest = json.loads((repo / "dnx-manifest.json").read_text())
    calib = manifest["calibration"]
    assert calib["source"] == BUNDLED_SOURCE == "bundled scikit-image photographs (generic, not production)"
    assert calib["kind"] == "bundled" and calib["production"] is False and calib["synthetic"] is False
    assert calib["count"] == n and calib["method"] == "max"
    int8 = [name for name, m in manifest["models"].items() if m["precision"] == "int8"]
    assert "densenet121_onnx_int8" in int8 and all(manifest["models"][m]["parity"]["passed"] for m in int8)
    assert "INT8 calibrated on bundled generic photographs (not production)" in r.stdout  # parity notes

    expected = (f"Calibration: INT8 calibrated on {n} bundled scikit-image photographs (generic, not production), "
                "max ranges; re-export with --calib-dir <your images> for production")
    v = CliRunner().invoke(cli, ["validate", "--models", "densenet121_onnx_int8"])
    assert v.exit_code == 0, v.output
    assert v.stdout.splitlines()[0] == expected
    machine = {"cpu": "x", "cores": 2, "bf16": False, "ram_gib": 1, "load_average": [0.0], "os": "x", "python": "3"}
    res = BenchResult(machine=machine, versions={}, in_process=[], served=[], served_configs={}, ratios=[],
                      commands=[], out_md=tmp_path / "B.md", results_dir=tmp_path)
    assert expected in render_markdown(res, BenchOptions(repository=repo)).splitlines()


def test_variant_failing_its_gate_is_not_written(tmp_path, monkeypatch):
    from dnx.spec import DEFAULT_MODEL, Gate

    # A gate no FP16 graph can meet (cosine exactly 1) makes the real FP16 variant fail.
    monkeypatch.setitem(DEFAULT_MODEL.gates, "fp16", Gate(min_cosine=1.0))
    out = tmp_path / "model_repository"
    args = ["export", "--weights", "random", "--target", "cpu", "--runtime", "onnxruntime", "--precision", "fp32",
            "--precision", "fp16", "--out", str(out), "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "densenet121_onnx_fp16" in r.output and "--keep-failing" in r.output
    assert not out.exists()

    r = CliRunner().invoke(cli, args + ["--keep-failing"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "dnx-manifest.json").read_text())
    assert manifest["models"]["densenet121_onnx_fp16"]["parity"]["passed"] is False
    assert manifest["models"]["densenet121_onnx"]["parity"]["passed"] is True
    assert (out / "densenet121_onnx_fp16" / "1" / "model.onnx").is_file()
    # The ensemble serves a variant that passed, not the written-anyway failing one.
    assert manifest["ensemble"]["variant"] == "densenet121_onnx"


# ---------------------------------------------------------------- one writer per --out (dnx.locks)

FAST = ["--weights", "random", "--precision", "fp32", "--target", "cpu", "--runtime", "onnxruntime",
        "--max-batch", "4", "-q"]


def _dnx_export(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dnx", "export", *FAST, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def _locked(out: Path) -> bool:
    from dnx.errors import RepositoryBusyError
    from dnx.locks import repository_lock

    try:
        with repository_lock(out, "test probe"):
            return False
    except RepositoryBusyError:
        return True


@pytest.mark.slow
def test_two_exports_to_one_out_one_writes_the_other_fails_at_once_naming_it(tmp_path):
    out = tmp_path / "model_repository"
    procs = [_dnx_export(out), _dnx_export(out)]
    _wait_for(lambda: any(p.poll() is not None for p in procs), "either export to end")
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    assert winner.poll() is None, "the second export waited for the first instead of failing at once"
    _, err = loser.communicate()
    assert loser.returncode == 1
    assert err.strip().splitlines() == [
        f"Error: {out} is in use by pid {winner.pid} (dnx export); wait for it to finish, or pass --wait to queue behind it"]
    stdout, err = winner.communicate(timeout=900)
    assert winner.returncode == 0, err
    assert stdout.startswith(f"Wrote {out} (1 models;")
    assert parse_config((out / "densenet121_onnx" / "config.pbtxt").read_text()).max_batch_size == 4


@pytest.mark.slow
def test_a_lock_left_by_a_killed_export_is_taken_over(tmp_path):
    out = tmp_path / "model_repository"
    holder = _dnx_export(out)
    _wait_for(lambda: _locked(out) or holder.poll() is not None, "the export to take the lock")
    assert holder.poll() is None, holder.communicate()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (tmp_path / ".model_repository.dnx-lock").is_file()  # the file stays; the kernel dropped the flock
    r = CliRunner().invoke(cli, ["export", *FAST, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "densenet121_onnx" / "config.pbtxt").is_file()


@pytest.mark.slow
def test_export_wait_queues_behind_the_holder(tmp_path):
    from dnx.locks import repository_lock

    out = tmp_path / "model_repository"
    with repository_lock(out, "dnx tune"):
        proc = _dnx_export(out, "--wait")
        line = proc.stderr.readline().strip()
        assert line == f"waiting for pid {os.getpid()} (dnx tune) to finish with {out}"
        assert proc.poll() is None and not out.exists()
    stdout, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert stdout.startswith(f"Wrote {out} ")
