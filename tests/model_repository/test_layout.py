"""Atomic writes and the staged repository swap."""

from __future__ import annotations

import os

import pytest

from dnx.errors import InputError
from dnx.model_repository.layout import StagedRepository, atomic_write_text


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temp files left


def test_commit_swaps_and_keeps_readme(tmp_path):
    target = tmp_path / "repo"
    (target / "old_model").mkdir(parents=True)
    (target / "old_model" / "config.pbtxt").write_text("old")
    (target / "README.md").write_text("tracked readme")
    with StagedRepository(target) as staged:
        (staged.path / "new_model").mkdir()
        (staged.path / "new_model" / "config.pbtxt").write_text("new")
        staged.commit()
    assert _tree(target) == {"README.md": b"tracked readme", "new_model/config.pbtxt": b"new"}
    assert sorted(os.listdir(tmp_path)) == ["repo"]  # no staging or old folders left


def test_failure_leaves_previous_repository_untouched(tmp_path):
    target = tmp_path / "repo"
    (target / "m").mkdir(parents=True)
    (target / "m" / "config.pbtxt").write_text("good")
    before = _tree(target)
    with pytest.raises(RuntimeError):
        with StagedRepository(target) as staged:
            (staged.path / "m").mkdir()
            (staged.path / "m" / "config.pbtxt").write_text("half")
            raise RuntimeError("stage blew up")
    assert _tree(target) == before
    assert sorted(os.listdir(tmp_path)) == ["repo"]


def test_unwritable_parent(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        StagedRepository(tmp_path / "missing" / "repo")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        StagedRepository(f)


def test_read_only_filesystem(tmp_path):
    # /proc refuses new folders even for root.
    with pytest.raises(InputError, match="pass another --out"):
        StagedRepository("/proc/dnx-repo")
