"""Private temporary folders that never outlive their run.

A folder is named ``<prefix>-<pid>-<start>-<random>``: the owner's process id and its start
time (clock ticks since boot, from ``/proc``), so a later run can tell a folder whose owner
is gone (killed with SIGKILL, power cut) from one still in use, even when the pid has been
reused. :func:`work_dir` removes its folder in ``finally`` and, before creating one, removes
stale folders of the same prefix: owned by this user, and either their owner process is gone
or (names without an owner, from older dnx versions) older than :data:`LEGACY_MAX_AGE_S`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

LEGACY_MAX_AGE_S = 24 * 3600
_OWNED = re.compile(r"-(\d+)-(\d+)-[^-]*$")


def _start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time), or None where there is no such process / no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def owner_tag(pid: int | None = None) -> str:
    """``<pid>-<start>`` of this (or ``pid``'s) process."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid) or 0}"


def owner_alive(pid: int, start: int) -> bool:
    """True while the process that wrote ``<pid>-<start>`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    now = _start_ticks(pid)
    return start == 0 or now is None or now == start


def is_stale(path: Path, prefix: str, now: float | None = None) -> bool:
    """True for a folder ``prefix-...`` of this user whose owner is gone (or, unowned, that is old)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    rest = path.name[len(prefix):]
    m = _OWNED.search(rest) if rest.startswith("-") else None
    if m and rest.count("-") == 3:
        return not owner_alive(int(m.group(1)), int(m.group(2)))
    return (now or time.time()) - st.st_mtime > LEGACY_MAX_AGE_S


def remove_stale(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the stale ``prefix-*`` folders in ``parent``; returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for p in Path(parent).glob(f"{prefix}-*"):
            if p.is_dir() and not p.is_symlink() and is_stale(p, prefix):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def make_dir(prefix: str, parent: str | os.PathLike | None = None) -> Path:
    """A new private (0700) folder ``<parent>/<prefix>-<pid>-<start>-XXXX``; stale ones are removed first."""
    parent = Path(parent or tempfile.gettempdir())
    remove_stale(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{owner_tag()}-", dir=parent))


@contextlib.contextmanager
def work_dir(prefix: str = "dnx-work", parent: str | os.PathLike | None = None):
    """A private temporary folder for one run, removed on the way out (also on errors and signals)."""
    path = make_dir(prefix, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
