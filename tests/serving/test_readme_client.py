"""The README's plain-tritonclient example, run verbatim (image and address swapped) against the server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_client() -> str:
    section = README.read_text().split("## A plain gRPC client", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_client_is_short_and_needs_no_dnx():
    code = _readme_client()
    assert len(code.strip().splitlines()) <= 10
    assert "dnx" not in code and '"input"' in code and '"logits"' in code and "class_count" in code


@pytest.mark.server
def test_readme_client_gets_the_servers_top5(triton_server, served_model, photo_paths, reference_logits,
                                             served_labels):
    code = _readme_client().replace('"cat.jpg"', repr(str(photo_paths[1])))
    code = code.replace('"127.0.0.1:8001"', repr(triton_server.grpc_url))
    assert served_model in code and str(photo_paths[1]) in code and triton_server.grpc_url in code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    entries = re.findall(r"b'([^']*)'", out.stdout)  # numpy prints the array of b"score:index:label"
    assert len(entries) == 5, out.stdout
    top = np.argsort(reference_logits[1])[::-1][:5]
    assert [int(e.split(":")[1]) for e in entries] == top.tolist()
    assert [e.split(":", 2)[2] for e in entries] == [served_labels[i] for i in top]
