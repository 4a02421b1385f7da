"""Golden-file comparison shared by the render tests: compared always, rewritten only on request, never on CI.

``DNX_UPDATE_GOLDEN=1 pytest ...`` rewrites a golden file whose text changed and then fails that
test ("rewritten: review the diff"), so an update run never passes by comparing a file with
itself; with ``CI=true`` the variable is refused outright.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UPDATE = "DNX_UPDATE_GOLDEN"


def check_golden(golden: Path, text: str) -> None:
    """Assert ``text`` equals the file ``golden`` (see the module docstring for updating it)."""
    if os.environ.get(UPDATE):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{UPDATE} is set with CI=true: golden files are compared on CI, never rewritten")
        if not golden.is_file() or golden.read_text() != text:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
            pytest.fail(f"{golden} rewritten ({UPDATE}); review the diff, then rerun without {UPDATE}")
    assert golden.is_file(), f"{golden} is missing; create it with {UPDATE}=1 and review it"
    assert text == golden.read_text(), f"rendering differs from {golden}; if intended, rerun with {UPDATE}=1"
