"""SIGINT / SIGTERM handling shared by every command: stop cleanly, once, whatever arrives.

The first SIGINT or SIGTERM raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the main
thread, so ``finally`` blocks and context managers run: servers are stopped, partial results
written, temporary folders removed. Signals that arrive *while that cleanup runs* do not raise
again (a second Ctrl-C used to skip the process-group kill half-way through ``stop()``); they
set :func:`hurry`, which tells :meth:`dnx.serving.server.TritonServer.stop` to kill at once
instead of waiting for a graceful unload.

The CLI wraps every command in :func:`terminating`; library code that runs its own loop
(``dnx tune``, a notebook) can use it too::

    from dnx.signals import terminating

    with terminating():
        with TritonServer(repo, grpc_port=0) as server:
            ...   # SIGTERM here: the server is stopped, then Interrupted propagates
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import subprocess
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state = {"received": None, "count": 0, "depth": 0}


class Interrupted(KeyboardInterrupt):
    """Raised once per run on the first SIGINT / SIGTERM; ``detail`` says what was kept."""

    def __init__(self, signum: int = signal.SIGINT, detail: str = ""):
        super().__init__(signum, detail)
        self.signum = signum
        self.detail = detail

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def with_detail(self, detail: str) -> "Interrupted":
        """The same interruption, with what was kept (partial results, resume hint)."""
        return Interrupted(self.signum, detail)

    def __str__(self) -> str:
        return f"interrupted by {self.name}" + (f"; {self.detail}" if self.detail else "")


def received() -> int | None:
    """The signal number received inside the innermost :func:`terminating`, or None."""
    return _state["received"]


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived whose exception never reached this frame.

    The handler raises in whatever Python code the main thread runs at that instant: inside a
    ``__del__``, a weakref callback or a library's bare ``except:`` the exception is printed or
    dropped, and the run would go on (an export under SIGTERM once finished and exited 0 in the
    test suite, not reproduced since; this is the explanation that fits). Callers check between
    steps that must not start after a signal: the export's stages and its swap of the repository.
    """
    got = _state["received"]
    if got is not None:
        raise Interrupted(got)


def hurry() -> bool:
    """True once a second signal arrived: cleanup should kill instead of waiting."""
    return _state["count"] >= 2


def _handler(signum, frame):
    _state["count"] += 1
    if _state["received"] is None:
        _state["received"] = signum
        raise Interrupted(signum)
    # Later signals: cleanup is running; raising here would cut it short.


@contextlib.contextmanager
def terminating(restore: bool = True):
    """Turn the first SIGINT/SIGTERM into :class:`Interrupted`; later ones only set :func:`hurry`.

    A plain ``KeyboardInterrupt`` (e.g. from a signal that arrived before the handler was
    installed) is re-raised as :class:`Interrupted`. On exit the previous handlers come back;
    with ``restore=False`` (the CLI, whose process ends next) a run that was interrupted
    ignores further signals instead, so a late second Ctrl-C cannot kill the exiting process
    half-way. Nested uses pass what they received on to the outer one. Outside the main
    thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = dict(_state)
    _state.update(received=None, count=0, depth=saved["depth"] + 1)
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    try:
        yield
        if _state["received"] is not None and not saved["depth"]:
            # The outermost block ends normally after a signal: its Interrupted was swallowed on the
            # way (see check()), and the exit still says so. Inner blocks may end normally: dnx code
            # inside them (tune's report, perf's partial results) catches it and raises it later.
            raise Interrupted(_state["received"])
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        got, count = _state["received"], _state["count"]
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if got is not None and not restore else handler)
        if saved["depth"]:  # the outer one learns what arrived in here
            _state.update(received=saved["received"] or got, count=saved["count"] + count, depth=saved["depth"])
        else:
            _state.update(saved)




def die_with_parent(argv: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """``argv`` run so that the child gets ``sig`` when dnx dies, however it dies (SIGKILL included).

    Linux's ``PR_SET_PDEATHSIG``, set by util-linux's ``setpriv --pdeathsig`` in the child just
    before it execs ``argv``: no Python runs between fork and exec, where a library's at-fork
    handler (gRPC's aborted perf_analyzer's child that way) would. The kernel sends the signal when
    the *thread* that started the child ends, so start long-lived children from the thread that
    waits for them. Without ``setpriv``, ``argv`` is returned unchanged.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", signal.Signals(sig).name.removeprefix("SIG"), "--", *argv]


@functools.lru_cache(maxsize=1)
def _setpriv() -> str | None:
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:
        usage = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return found if "--pdeathsig" in usage else None
