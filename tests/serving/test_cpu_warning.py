"""`dnx serve` of a repository whose numerics the serving CPU does not meet: one warning line.

The CPU is named through ``DNX_CPUINFO`` (a recorded /proc/cpuinfo of each kind), so the test
asks the same question on whatever machine runs it; the server itself is real.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnx.cpu import numerics_record, parse_cpuinfo

ROOT = Path(__file__).resolve().parents[2]
CPUINFO = ROOT / "tests" / "fixtures" / "cpuinfo"


@pytest.fixture(scope="module")
def full_range_int8_repository(fp32_repository, tmp_path_factory) -> Path:
    """A copy whose manifest says its model is int8 with full-range weights, built on a VNNI CPU."""
    repo = tmp_path_factory.mktemp("full-range") / "repo"
    shutil.copytree(fp32_repository, repo)
    path = repo / "dnx-manifest.json"
    manifest = json.loads(path.read_text())
    vnni = parse_cpuinfo((CPUINFO / "intel-xeon-amx.txt").read_text())
    record = manifest["models"]["densenet121_onnx"]
    record["precision"] = "int8"
    record["cpu"] = numerics_record("int8", "onnxruntime", vnni, max_abs_weight=127)
    path.write_text(json.dumps(manifest, indent=2))
    return repo


def _serve_stderr(repo: Path, cpuinfo: str, tmp_path: Path) -> str:
    env = {**os.environ, "DNX_CPUINFO": str(CPUINFO / cpuinfo), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnx.cli", "serve", "--repository", str(repo), "--mode", "local",
         "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0",
         "--log-file", str(tmp_path / "triton.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # "log: ..." is the last line once the server is ready
            if line.startswith("log:") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err  # interrupted by SIGINT, as documented
    return err


@pytest.mark.server
@pytest.mark.parametrize("cpuinfo,warned", [("amd-epyc-zen3-avx2.txt", True), ("intel-xeon-avx512-vnni.txt", False)])
def test_serve_warns_when_a_full_range_int8_model_is_served_on_a_cpu_without_vnni(full_range_int8_repository,
                                                                                   tmp_path, cpuinfo, warned):
    err = _serve_stderr(full_range_int8_repository, cpuinfo, tmp_path)
    lines = [ln for ln in err.splitlines() if ln.startswith("Warning: densenet121_onnx was built on")]
    if not warned:
        assert lines == [], err
        return
    (line,) = lines
    assert "Intel(R) Xeon(R) Processor and needs VNNI" in line and "AMD EPYC (avx2) lacks" in line
    assert "re-export here" in line
