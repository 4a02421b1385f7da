"""One lock per repository folder, so two writers never interleave and a reader never sees a half swap.

``dnx export`` and ``dnx tune`` hold it exclusively while they write; ``dnx publish`` holds it
shared while it reads. The lock is an ``fcntl.flock`` on a file *beside* the folder
(``.<name>.dnx-lock``), not inside it: the folder itself is swapped whole by a rename, and a lock
held by a process that died is released by the kernel, so a stale lock is taken over for free.
The lock file records the holder (pid and command) so a second writer can name it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from dnx.errors import InputError, RepositoryBusyError


def lock_path(repository: str | os.PathLike) -> Path:
    """The lock file of a repository folder: ``<parent>/.<name>.dnx-lock``."""
    repo = Path(repository).absolute()
    return repo.parent / f".{repo.name}.dnx-lock"


def holder(repository: str | os.PathLike) -> dict | None:
    """What the lock file says about its last holder (``pid``, ``command``), or None."""
    try:
        return json.loads(lock_path(repository).read_text() or "null")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def repository_lock(
    repository: str | os.PathLike,
    command: str,
    *,
    shared: bool = False,
    wait: bool = False,
    poll_s: float = 0.2,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the repository folder's lock (exclusive, or ``shared`` for readers) for the block.

    Without ``wait`` a lock held by another live process raises :class:`RepositoryBusyError` at
    once, naming the holder; with ``wait`` it blocks until the holder is done, telling
    ``on_wait`` once (a line naming the holder) that it has to.
    """
    path = lock_path(repository)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if shared and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            # Nobody can write beside a read-only folder either, so no writer can swap it under a reader.
            yield path
            return
        raise InputError(f"cannot create the lock file {path} ({exc.strerror}); {Path(repository)} must sit in a "
                         "writable folder for dnx to change it: copy it somewhere writable or fix the permissions") from None
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                who = holder(repository) or {}
                named = f"pid {who.get('pid', '?')} ({who.get('command', 'dnx')})" if who else "another dnx process"
                if not wait:
                    raise RepositoryBusyError(
                        f"{Path(repository)} is in use by {named}; wait for it to finish, "
                        "or pass --wait to queue behind it"
                    ) from None
                if on_wait:
                    on_wait(f"waiting for {named} to finish with {Path(repository)}")
                    on_wait = None
                time.sleep(poll_s)
        # Readers sign too (the latest one), so a writer kept out names a live holder, not the last writer.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
