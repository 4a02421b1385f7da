"""dnx.workdirs: private work folders removed on the way out; stale ones by owner process and age."""

import os
import subprocess
import sys
import time

from dnx.workdirs import is_stale, make_dir, owner_tag, remove_stale, work_dir


def test_work_dir_is_private_and_removed_on_error(tmp_path):
    try:
        with work_dir("dnx-test", tmp_path) as path:
            assert path.parent == tmp_path and oct(path.stat().st_mode & 0o777) == "0o700"
            assert path.name.startswith(f"dnx-test-{owner_tag()}-")
            (path / "f").write_text("x")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_folder_of_a_dead_process_is_stale_and_a_live_one_is_not(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead_owner = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                    capture_output=True, text=True).stdout.strip()
        dead = tmp_path / f"dnx-test-{dead_owner}-12345-abc"
        live = tmp_path / f"dnx-test-{owner_tag(child.pid)}-def"
        reused = tmp_path / f"dnx-test-{child.pid}-1-ghi"  # same pid, another start time: pid reused
        mine = make_dir("dnx-test", tmp_path)
        for p in (dead, live, reused):
            p.mkdir()
        assert is_stale(dead, "dnx-test") and is_stale(reused, "dnx-test")
        assert not is_stale(live, "dnx-test") and not is_stale(mine, "dnx-test")
        removed = remove_stale(tmp_path, "dnx-test")
        assert sorted(removed) == sorted([dead, reused])
        assert sorted(tmp_path.iterdir()) == sorted([live, mine])
    finally:
        child.kill()
        child.wait()


def test_unowned_folders_are_removed_by_age(tmp_path):
    old, new = tmp_path / "dnx-test-abc123", tmp_path / "dnx-test-def456"
    old.mkdir()
    new.mkdir()
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    assert remove_stale(tmp_path, "dnx-test") == [old]
    assert list(tmp_path.iterdir()) == [new]
