"""scripts/install-system-deps.sh asks apt for prometheus only where apt exists and promtool is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "install-system-deps.sh"


def _apt(tmp_path, *fakes: str) -> list[str]:
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("grep", "ldconfig"):
        (folder / tool).symlink_to(shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"))
    for name in fakes:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    out = subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": str(folder), "DRY_RUN": "1"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    return [] if line == "apt: (none)" else line[len("apt: "):].split()


@pytest.mark.parametrize("fakes, wants", [
    (("apt-get",), True),  # Debian without prometheus
    (("apt-get", "promtool"), False),  # already installed
    ((), False),  # no apt: the tests that need it skip, saying why
])
def test_prometheus_only_where_apt_exists(tmp_path, fakes, wants):
    assert ("prometheus" in _apt(tmp_path, *fakes)) is wants
