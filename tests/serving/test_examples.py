"""The README's curl call and examples/classify_bytes.py against the real local server (bytes in)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.server


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def readme_curl_block() -> str:
    text = (ROOT / "docs" / "CLIENTS.md").read_text()
    m = re.search(r"<!-- curl-bytes -->\s*```sh\n(.*?)```\s*<!-- /curl-bytes -->", text, re.S)
    assert m, "docs/CLIENTS.md lost its curl example (between <!-- curl-bytes --> markers)"
    return m.group(1)


def test_readme_curl_classifies_a_jpeg(triton_server, photo_paths, reference_logits, served_labels):
    # The README's example is a curl command: testing it needs curl (a failure where it is missing, not a skip).
    assert shutil.which("curl"), "curl is not installed; the README's curl example cannot be checked (apt-get install curl)"
    block = readme_curl_block()
    first, rest = block.split("\n", 1)
    assert first.startswith("IMG=cat.jpg URL=127.0.0.1:8000 MODEL=densenet121")
    jpeg = photo_paths[3]  # rocket.jpg, a real JPEG file
    assert jpeg.suffix == ".jpg"
    script = f"IMG={jpeg} URL={triton_server.http_url} MODEL=densenet121\n{rest}"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    (output,) = reply["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [1, 5]
    probs = _softmax(reference_logits[3])
    top = np.argsort(probs)[::-1][:5]
    got = [e.split(":", 2) for e in output["data"]]
    assert [int(i) for _, i, _ in got] == top.tolist()
    assert [label for _, _, label in got] == [served_labels[i] for i in top]
    np.testing.assert_allclose([float(p) for p, _, _ in got], probs[top], atol=1e-5)


def test_classify_bytes_example(triton_server, photo_paths, reference_logits, served_labels):
    script = ROOT / "examples" / "classify_bytes.py"
    text = script.read_text()
    assert "dnx" not in text.replace("dnx ensemble", "") and len(text.strip().splitlines()) <= 10
    out = subprocess.run([sys.executable, str(script), str(photo_paths[0]), triton_server.http_url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    probs = _softmax(reference_logits[0])
    top = np.argsort(probs)[::-1][:5]
    assert [line.split("%  ", 1)[1] for line in lines] == [f"{served_labels[i]} ({i})" for i in top]
    np.testing.assert_allclose([float(line.split("%")[0]) for line in lines], 100 * probs[top], atol=0.006)
