"""On-disk layout ``<repo>/<model>/<version>/<file>`` and atomic file/folder writes.

A repository is assembled in a staging folder beside the target and swapped into place,
so a failed or interrupted run leaves the previous repository untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from dnx.errors import InputError
from dnx.workdirs import make_dir, remove_stale

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


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths atomically with ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15, glibc >= 2.28).

    Returns False where the call is not available (other systems, old kernels, file systems
    without support); raises ``OSError`` for real failures.
    """
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def remove_orphans(target: Path) -> list[Path]:
    """Remove staging and old folders beside ``target`` left by killed runs (owner process gone)."""
    parent = target.resolve().parent
    return remove_stale(parent, f"{target.name}.dnx-staging") + remove_stale(parent, f"{target.name}.dnx-old")


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


class StagedRepository:
    """A staging folder beside ``target`` that replaces it on :meth:`commit`.

    Use as a context manager: on an exception the staging folder is removed and the
    existing repository is left exactly as it was.
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        check_writable_parent(self.target)
        parent = self.target.resolve().parent
        remove_orphans(self.target)
        try:
            self.path = make_dir(f"{self.target.name}.dnx-staging", parent)
        except OSError as exc:
            raise InputError(f"cannot write {self.target}: {exc.strerror} in {parent}; pass another --out") from None
        self._committed = False

    def __enter__(self) -> "StagedRepository":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> Path:
        """Swap the staging folder into place; the previous repository is removed afterwards.

        With ``renameat2(RENAME_EXCHANGE)`` the two folders trade places in one step, so
        ``target`` always names a complete repository (the old one until the exchange, the
        new one after). Where the call is missing (not Linux, old kernel) it falls back to
        two renames, with a moment in between where ``target`` does not exist.
        """
        self.swap = "rename"
        # The staging folder was made private (0700); the repository gets the usual mode
        # (0777 less the umask) so a server running as another user, e.g. in a container, reads it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o777 & ~umask)
        if self.target.exists():
            keep = [p.name for p in self.target.iterdir() if p.name == "README.md"]
            for name in keep:  # a tracked README in ./model_repository survives rebuilds
                shutil.copy2(self.target / name, self.path / name)
            if exchange(self.path, self.target):
                self.swap = "exchange"
                self._committed = True
                shutil.rmtree(self.path, ignore_errors=True)  # now the previous repository
                return self.target
            self.swap = "two renames"
            old = make_dir(f"{self.target.name}.dnx-old", self.target.resolve().parent)
            os.rmdir(old)
            os.replace(self.target, old)
            try:
                os.replace(self.path, self.target)
            except BaseException:
                os.replace(old, self.target)
                raise
            self._committed = True
            shutil.rmtree(old, ignore_errors=True)
            return self.target
        os.replace(self.path, self.target)
        self._committed = True
        return self.target
