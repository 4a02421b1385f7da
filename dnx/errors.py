"""The one exception root for user errors.

Every message says what went wrong *and* how to fix it. The CLI catches
:class:`DnxError` in one place and prints ``Error: <message>`` without a traceback.
"""

import errno


class DnxError(Exception):
    """A problem the user can fix (bad input, missing file, server down, ...)."""


class MissingDependencyError(DnxError):
    """An optional heavy package is not installed."""


class InputError(DnxError):
    """A file, folder or flag value given by the user is unusable."""


class WeightsError(InputError):
    """Model weights are missing, corrupt or do not fit the model."""


class ParityError(DnxError):
    """A model variant failed its parity gate."""


class ServerError(DnxError):
    """The Triton server could not be started, reached or queried."""


class PerfError(DnxError):
    """perf_analyzer could not run or its output could not be read."""


class RepositoryBusyError(DnxError):
    """Another dnx process holds the repository folder's lock."""


def disk_full(exc: BaseException) -> bool:
    """True for the ``OSError`` of a full file system or an exhausted quota (ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``exc``'s message (its class name if it has none), cut to ``limit``."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return exc.__class__.__name__


def tail(text: str, lines: int = 2, sep: str = " | ") -> str:
    """The last ``lines`` non-empty lines of a process's output, joined on one line."""
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return sep.join(kept[-lines:])
