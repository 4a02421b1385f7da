"""Named fault-injection points for the reliability tests (docs/RELIABILITY.md); inert unless asked.

A test sets ``DNX_FAULT=<point>:<action>[,<point>:<action>...]`` in the environment of a real
``dnx`` process; when that process reaches :func:`point` with a listed name it either raises an
``OSError`` (``error``: a write that failed, as on a full disk) or sends itself a signal
(``SIGTERM``, ``SIGINT``, ``SIGKILL``; ``SIGTERM-swallowed``: sent and its exception swallowed
on the spot, as a library's bare ``except:`` would), exactly where the promise is at stake (say,
between the first rewritten config and the manifest). Production runs never set the variable.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "DNX_FAULT"


def _actions() -> dict[str, str]:
    out = {}
    for item in os.environ.get(ENV, "").split(","):
        # Point names may hold colons (``tune-write-back:before-manifest``): the action is the last part.
        name, _, action = item.strip().rpartition(":")
        if action != "error" and not action.upper().startswith("SIG"):
            name, action = item.strip(), "error"
        if name:
            out[name] = action
    return out


def point(name: str) -> None:
    """Fail here if ``DNX_FAULT`` names this point; otherwise do nothing."""
    action = _actions().get(name)
    if action is None:
        return
    if action == "error":
        raise OSError(errno.ENOSPC, f"injected write failure at {name} ({ENV})")
    sig, _, how = action.upper().partition("-")
    if how != "SWALLOWED":
        os.kill(os.getpid(), getattr(signal, sig))
        return
    # SIGTERM-swallowed: the signal arrives while a library swallows what its handler raises
    # (a bare ``except:``, a ``__del__``), so the run goes on unless dnx checks for it.
    try:
        os.kill(os.getpid(), getattr(signal, sig))
        time.sleep(0.05)  # the handler has run by now
    except KeyboardInterrupt:
        pass
