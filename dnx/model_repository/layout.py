"""On-disk layout ``<repo>/<model>/<version>/<file>`` and atomic file/folder writes.

A repository is assembled in a staging folder beside the target and swapped into place,
so a failed or interrupted run leaves the previous repository untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from dnx.errors import InputError

MANIFEST_NAME = "dnx-manifest.json"
LABELS_NAME = "labels.txt"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text flavour of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def model_dir(repo: Path, model: str, version: int = 1) -> Path:
    """``<repo>/<model>/<version>``."""
    return Path(repo) / model / str(version)


def check_writable_parent(target: Path) -> None:
    """Raise :class:`InputError` unless a folder can be created next to ``target``."""
    parent = target.resolve().parent
    if not parent.exists():
        raise InputError(f"cannot write {target}: its parent folder {parent} does not exist; create it or pass another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {target}: no write permission in {parent}; pass another --out")
    if target.exists() and not target.is_dir():
        raise InputError(f"cannot write {target}: it is a file, not a folder; pass another --out")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(parent: Path, name: str) -> None:
    """Remove staging folders left by killed runs (their process is gone)."""
    for p in parent.glob(f"{name}.dnx-staging-*"):
        pid = p.name[len(name) + len(".dnx-staging-"):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


class StagedRepository:
    """A staging folder beside ``target`` that replaces it on :meth:`commit`.

    Use as a context manager: on an exception the staging folder is removed and the
    existing repository is left exactly as it was.
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        check_writable_parent(self.target)
        parent = self.target.resolve().parent
        _remove_orphans(parent, self.target.name)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f"{self.target.name}.dnx-staging-{os.getpid()}-", dir=parent))
        except OSError as exc:
            raise InputError(f"cannot write {self.target}: {exc.strerror} in {parent}; pass another --out") from None
        self._committed = False

    def __enter__(self) -> "StagedRepository":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> Path:
        """Swap the staging folder into place; the previous repository is removed afterwards."""
        old = None
        if self.target.exists():
            keep = [p.name for p in self.target.iterdir() if p.name == "README.md"]
            for name in keep:  # a tracked README in ./model_repository survives rebuilds
                shutil.copy2(self.target / name, self.path / name)
            old = Path(tempfile.mkdtemp(prefix=f"{self.target.name}.dnx-old-", dir=self.target.resolve().parent))
            os.rmdir(old)
            os.replace(self.target, old)
        try:
            os.replace(self.path, self.target)
        except BaseException:
            if old is not None:
                os.replace(old, self.target)
            raise
        self._committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target
