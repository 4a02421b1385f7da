"""dnx.locks: the repository folder's lock (flock beside the folder)."""

import subprocess
import sys

import pytest

from dnx.errors import RepositoryBusyError
from dnx.locks import holder, lock_path, repository_lock


def test_second_writer_fails_at_once_naming_the_holder(tmp_path):
    repo = tmp_path / "model_repository"
    repo.mkdir()
    # The holder is another process: flock locks belong to open file descriptions, so hold it there.
    code = ("import sys, time\nfrom dnx.locks import repository_lock\n"
            f"with repository_lock({str(repo)!r}, 'dnx export'):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RepositoryBusyError, match=rf"in use by pid {proc.pid} \(dnx export\).*--wait"):
            with repository_lock(repo, "dnx tune"):
                pass
        assert holder(repo) == {"pid": proc.pid, "command": "dnx export"}
    finally:
        proc.kill()
        proc.wait()
    with repository_lock(repo, "dnx tune"):  # the dead holder's lock is gone with it
        assert lock_path(repo).exists()
