"""Helpers for fault injection: dnx as a real subprocess, real signals, process and temp-folder checks.

Every test here runs ``python -m dnx.cli`` with this checkout first on ``PYTHONPATH`` and a
private ``TMPDIR`` (so "nothing left in the temp folder" is checked without other runs' files).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# torch creates its compile cache in TMPDIR on import (one per user, reused by every run), and
# ONNX Runtime 1.32 writes a one-line session file ``$TMPDIR/.ses`` when imported: the libraries'
# own files, shared by every run, not per-run leftovers.
TORCH_CACHE = "torchinductor_"
LIBRARY_FILES = (TORCH_CACHE, ".ses")
# What docs/RELIABILITY.md promises: the child server is gone this long after the signal.
GONE_WITHIN_S = 15.0


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _live_where(field: int, value: int) -> list[int]:
    """Live (not zombie) processes whose /proc stat ``field`` (after the state) equals ``value``."""
    out = []
    for p in _pids():
        st = _stat(p)
        if st and st[0] != "Z" and int(st[field]) == value:
            out.append(p)
    return out


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (zombies excluded)."""
    return _live_where(1, pid)  # ppid


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    return _live_where(2, pgid)  # pgrp


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tritonserver_child(pid: int) -> int | None:
    """The tritonserver started by ``pid`` (dnx starts it in its own process group)."""
    return next((c for c in children(pid) if "tritonserver" in cmdline(c)), None)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.2):
    """Poll ``predicate`` until truthy; fail with ``what`` (and the dnx output) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"dnx exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(poll)
    if proc is not None:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out waiting for {what}:\n{out}\n{err}")
    pytest.fail(f"timed out waiting for {what}")


def assert_group_gone(pgid: int, since: float) -> float:
    """Wait (at most until ``since`` + 15 s) for every process of group ``pgid`` to be gone; return the seconds."""
    deadline = since + GONE_WITHIN_S
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_members(pgid)
    assert not left, f"processes of group {pgid} still running {GONE_WITHIN_S:.0f}s after the signal: " + \
        "; ".join(cmdline(p)[:120] for p in left)
    return time.monotonic() - since


def handles_sigterm(pid: int) -> bool:
    """Whether ``pid`` has a SIGTERM handler installed (its /proc status ``SigCgt`` mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((int(ln.split()[1], 16) for ln in status.splitlines() if ln.startswith("SigCgt:")), 0)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def tree_digest(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``path``."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(stderr: str) -> str:
    """The single ``Error: ...`` line of a failed dnx run (no traceback anywhere)."""
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


class Dnx:
    """Runs ``python -m dnx.cli`` as a subprocess with a private TMPDIR."""

    def __init__(self, tmpdir: Path, cwd: Path):
        self.tmpdir = tmpdir
        self.cwd = cwd
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")

    def start(self, *args: str, **env) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "dnx.cli", *map(str, args)], cwd=self.cwd,
                                env={**self.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, timeout: float = 600, **env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dnx.cli", *map(str, args)], cwd=self.cwd,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=timeout)

    def leftovers(self) -> list[str]:
        """What dnx left in its temp folder (the libraries' own shared files do not count)."""
        return sorted(p.name for p in self.tmpdir.iterdir() if not p.name.startswith(LIBRARY_FILES))


@pytest.fixture
def dnx(tmp_path) -> Dnx:
    """dnx as a subprocess; at the end its private temp folder must be empty."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp_path / "cwd").mkdir()
    runner = Dnx(tmp, tmp_path / "cwd")
    yield runner
    assert runner.leftovers() == [], "dnx left files in its temp folder"


def send(proc: subprocess.Popen, sig: int, times: int = 1, gap: float = 0.3) -> float:
    """Send ``sig`` ``times`` times; returns the monotonic time of the first."""
    t0 = time.monotonic()
    for i in range(times):
        if proc.poll() is None:
            proc.send_signal(sig)
        if i + 1 < times:
            time.sleep(gap)
    return t0


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)``: a fresh tmpfs of that size (``"110m"``); skipped where mounting is not allowed, failed on CI."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            why = f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()}); needs root or CAP_SYS_ADMIN"
            if os.environ.get("CI", "").lower() == "true":  # CI runs as root: a missing tmpfs there hides the disk-full tests
                pytest.fail(why + " (CI=true: the disk-full fault tests must run on CI)")
            pytest.skip(why)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def fill_disk(disk) -> None:
    """Write a file until the file system is full (raw writes: no buffer left to flush at close)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * (1 << 20)):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
