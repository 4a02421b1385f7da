"""The repository lock on a read-only file system (a real read-only tmpfs: it refuses root too)."""

import shutil
import subprocess

import pytest

from dnx.errors import InputError
from dnx.locks import lock_path, repository_lock

pytestmark = pytest.mark.faults


def test_lock_beside_a_read_only_folder_refuses_writers_and_lets_readers_in(tmpfs, tmp_path):
    where = tmpfs("1m")
    repo = where / "model_repository"
    repo.mkdir()
    (repo / "x").write_text("1")
    r = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(InputError, match="cannot create the lock file .*Read-only file system.*writable folder"):
        with repository_lock(repo, "dnx export"):
            pass
    # A reader (publish) may go on: nobody can swap a folder on a read-only file system either.
    with repository_lock(repo, "dnx publish", shared=True) as path:
        assert path == lock_path(repo) and not path.exists()
        shutil.copytree(repo, tmp_path / "copy")
    assert (tmp_path / "copy" / "x").read_text() == "1"
