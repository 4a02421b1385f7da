"""``dnx export`` under faults: full disks, signals at several points, SIGKILL, a runtime error in a stage.

Each case checks: non-zero exit, one ``Error:`` line (no traceback), the previous repository
byte-identical, no staging folder beside it, nothing left in the temp folder.
"""

from __future__ import annotations

import re
import shutil
import signal

import pytest

from tests.faults.conftest import LIBRARY_FILES, finish, one_error_line, send, tree_digest, wait_for

pytestmark = pytest.mark.faults

EXPORT = ["export", "--weights", "random", "--target", "cpu", "--runtime", "onnxruntime", "--precision", "fp32",
          "--max-batch", "8", "-q"]


@pytest.fixture
def previous(fp32_repository, tmp_path):
    """A copy of a real repository at ``<tmp>/out/model_repository``; the export under test replaces it."""
    out = tmp_path / "out" / "model_repository"
    shutil.copytree(fp32_repository, out)
    return out


def listing(folder):
    """Names in ``folder`` but the repository lock files (dnx.locks: kept beside the folder by design)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".dnx-lock"))


def beside(repo):
    return [n for n in listing(repo.parent) if n != repo.name]


def test_disk_too_small_for_the_repository_fails_before_any_work(dnx, tmpfs, previous):
    disk = tmpfs("110m")
    repo = disk / "model_repository"
    shutil.copytree(previous, repo)
    size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    free = shutil.disk_usage(disk).free
    (disk / "ballast").write_bytes(b"\0" * (free - size // 3))  # leaves a third of what a rebuild needs
    before = tree_digest(repo)

    r = dnx.run(*EXPORT, "--out", repo, timeout=300)

    assert r.returncode == 1
    line = one_error_line(r.stderr)
    print(line)
    assert "no space left on device" in line and str(disk) in line
    assert f"needs about {size / 2**20:.0f} MiB (measured from the previous repository" in line
    assert "free some space" in line
    assert "FAILED   disk_space" in r.stderr and "SKIPPED  torch_to_onnx" in r.stderr
    assert tree_digest(repo) == before
    assert listing(disk) == ["ballast", "model_repository"]


def test_full_temp_folder_is_a_failed_stage_naming_the_path(dnx, tmpfs, tmp_path):
    """TMPDIR on a 16 MB tmpfs: the 31 MB ONNX graph cannot be written (a real ENOSPC inside torch)."""
    disk = tmpfs("16m")
    dnx.tmpdir = disk
    dnx.env["TMPDIR"] = str(disk)
    out = tmp_path / "fresh" / "model_repository"
    out.parent.mkdir()

    r = dnx.run(*EXPORT, "--out", out, timeout=600)

    assert r.returncode == 1
    line = one_error_line(r.stderr)
    print(line)
    assert "no space left on device writing" in line and str(disk) in line, line
    # DenseNet-121 has 8.0 M weights: ~30 MiB as one FP32 graph.
    assert re.search(r"this run needs about 3\d MiB \(8\.0 M FP32 weights of densenet121", line), line
    failed = [ln for ln in r.stderr.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and "torch_to_onnx" in failed[0]
    assert "SKIPPED  write_repository" in r.stderr
    assert not out.exists() and listing(out.parent) == []
    assert dnx.leftovers() == []


def _work_file(dnx, name):
    def found():
        for work in dnx.tmpdir.glob("dnx-work-*"):
            if name is None or (work / name).is_file():
                return work
        return None
    return found


@pytest.mark.parametrize("sig,times,point", [
    (signal.SIGTERM, 1, None),  # while torch loads, right after the work folder appears
    (signal.SIGINT, 2, "model.fp32.onnx"),  # mid-stage (ONNX written, parity running), Ctrl-C twice
], ids=["sigterm-at-start", "sigint-twice-mid-stage"])
def test_signal_during_export_leaves_the_previous_repository(dnx, previous, sig, times, point):
    before = tree_digest(previous)
    proc = dnx.start(*EXPORT, "--out", previous)
    wait_for(_work_file(dnx, point), 300, f"the work folder{' with ' + point if point else ''}", proc, poll=0.05)
    send(proc, sig, times)
    code, _, err = finish(proc, timeout=60)

    assert code == 128 + sig
    line = one_error_line(err)
    assert line == f"Error: interrupted by {signal.Signals(sig).name}; {previous} left unchanged, temporary folders removed"
    assert tree_digest(previous) == before
    assert beside(previous) == []


@pytest.mark.parametrize("stage", ["torch_to_onnx", "write_repository"])
def test_a_swallowed_signal_still_stops_the_export_before_the_swap(dnx, previous, stage):
    """SIGTERM whose exception a library swallows (dnx.faults' SIGTERM-swallowed, a real signal):
    the stage goes on, but no later stage starts and the repository is not swapped in.

    Seen once in the suite: a SIGTERM right after the work folder appeared, an export that
    finished and exited 0 (the handler's exception raised where it was dropped)."""
    before = tree_digest(previous)
    r = dnx.run(*EXPORT, "--out", previous, DNX_FAULT=f"export-stage:{stage}:SIGTERM-swallowed", timeout=600)

    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
    assert one_error_line(r.stderr) == (f"Error: interrupted by SIGTERM; {previous} left unchanged, "
                                        "temporary folders removed")
    assert tree_digest(previous) == before
    assert beside(previous) == [] and dnx.leftovers() == []


def test_sigkill_leftovers_are_removed_by_the_next_run(dnx, previous):
    before = tree_digest(previous)
    proc = dnx.start(*EXPORT, "--out", previous)
    wait_for(_work_file(dnx, "model.fp32.onnx"), 300, "the ONNX graph in the work folder", proc, poll=0.05)
    proc.kill()
    proc.wait()
    assert tree_digest(previous) == before
    left = [p.name for p in dnx.tmpdir.iterdir() if not p.name.startswith(LIBRARY_FILES)]
    assert [p.split("-")[:2] for p in left] == [["dnx", "work"]]
    assert [p.split("-")[0] for p in beside(previous)] == ["model_repository.dnx"]  # the staging folder

    # The next run, even one that stops at once on a bad flag, removes both.
    r = dnx.run("export", "--target", "cpu", "--runtime", "tensorrt", "--out", previous)
    assert r.returncode == 1 and "--runtime tensorrt needs --target gpu" in one_error_line(r.stderr)
    assert tree_digest(previous) == before and beside(previous) == []


def test_runtime_error_inside_a_stage_is_its_failed_line(dnx, previous):
    """torch cannot export opset 99: the exception becomes torch_to_onnx's FAILED line, not a traceback."""
    before = tree_digest(previous)
    r = dnx.run(*EXPORT, "--opset", "99", "--out", previous, timeout=600)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert line.startswith(f"Error: export failed, {previous} left unchanged: ") and "99" in line
    stages = [ln.split()[:2] for ln in r.stderr.splitlines() if ln.split()[:1] in (["OK"], ["FAILED"], ["SKIPPED"])]
    assert stages[0] == ["FAILED", "torch_to_onnx"]
    assert ["SKIPPED", "parity"] in stages and stages[-1] == ["SKIPPED", "write_repository"]
    assert tree_digest(previous) == before and beside(previous) == []


def test_corrupt_weights_are_a_user_error(dnx, previous, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a state dict")
    before = tree_digest(previous)
    r = dnx.run(*EXPORT[:1], *EXPORT[3:], "--weights", bad, "--out", previous, timeout=600)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert str(bad) in line
    assert tree_digest(previous) == before and beside(previous) == []
