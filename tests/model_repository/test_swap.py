"""The repository swap: one atomic exchange, README kept, orphans of killed runs removed."""

import os
import shutil

import numpy as np
import pytest

from dnx.model_repository import layout
from dnx.model_repository.layout import StagedRepository, exchange
from dnx.workdirs import owner_tag


def _repo(path, text):
    (path / "m" / "1").mkdir(parents=True)
    (path / "m" / "1" / "model.onnx").write_text(text)
    return path


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = _repo(tmp_path / "a", "A"), _repo(tmp_path / "b", "B")
    ino_a = a.stat().st_ino
    assert exchange(a, b)  # Linux >= 3.15 here; other systems take the two-rename fallback
    assert (a / "m/1/model.onnx").read_text() == "B" and (b / "m/1/model.onnx").read_text() == "A"
    assert b.stat().st_ino == ino_a


def test_commit_replaces_the_repository_and_keeps_its_readme(tmp_path):
    target = _repo(tmp_path / "model_repository", "old")
    (target / "README.md").write_text("tracked\n")
    with StagedRepository(target) as staged:
        _repo(staged.path, "new")
        staged.commit()
    assert staged.swap == "exchange"
    assert (target / "m/1/model.onnx").read_text() == "new" and (target / "README.md").read_text() == "tracked\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]  # old version removed


def test_two_rename_fallback_where_exchange_is_missing(tmp_path, monkeypatch):
    """Simulates a kernel without renameat2 (cannot be had here): the old two-rename path still works."""
    monkeypatch.setattr(layout, "exchange", lambda a, b: False)
    target = _repo(tmp_path / "model_repository", "old")
    with StagedRepository(target) as staged:
        _repo(staged.path, "new")
        staged.commit()
    assert staged.swap == "two renames"
    assert (target / "m/1/model.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]


def test_orphans_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    target = _repo(tmp_path / "model_repository", "old")
    dead = tmp_path / "model_repository.dnx-staging-999999999-1-abc"
    old = tmp_path / "model_repository.dnx-old-999999999-1-def"
    live = tmp_path / f"model_repository.dnx-staging-{owner_tag(os.getppid())}-ghi"
    for p in (dead, old, live):
        p.mkdir()
    StagedRepository(target).__exit__(None, None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model_repository", live.name])


@pytest.mark.server
def test_local_tritonserver_serves_the_swapped_repository(fp32_repository, tmp_path, photo_array, torch_reference):
    """The swap leaves a plain folder at the same path: the real local tritonserver loads it and answers."""
    from dnx.serving.client import infer_logits
    from dnx.serving.server import TritonServer

    target = _repo(tmp_path / "model_repository", "an older build")
    with StagedRepository(target) as staged:
        shutil.copytree(fp32_repository, staged.path, dirs_exist_ok=True)
        staged.commit()
    assert staged.swap == "exchange" and not target.is_symlink() and not (target / "m").exists()
    with TritonServer(target, mode="local", grpc_port=0, http_port=0, metrics_port=0, ready_timeout=300) as server:
        assert "densenet121_onnx" in server.loaded and not server.skipped
        out = infer_logits(photo_array[:2], url=server.grpc_url, model="densenet121_onnx")
    assert float(np.abs(out - torch_reference[:2]).max()) < 1e-3


def test_committed_repository_is_readable_by_other_users(tmp_path):
    """Staging folders are private (0700); the repository they become gets 0777 less the umask."""
    old = os.umask(0o022)
    try:
        with StagedRepository(tmp_path / "model_repository") as staged:
            assert staged.path.stat().st_mode & 0o777 == 0o700
            _repo(staged.path, "new")
            staged.commit()
    finally:
        os.umask(old)
    assert (tmp_path / "model_repository").stat().st_mode & 0o777 == 0o755
