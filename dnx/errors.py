"""The one exception root for user errors.

Every message says what went wrong *and* how to fix it. The CLI catches
:class:`DnxError` in one place and prints ``Error: <message>`` without a traceback.
"""


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
