"""How fast `dnx export` fails on a bad input: seconds from a fresh interpreter to its one-line error.

    .venv/bin/python benchmarks/startup_bench.py            # 5 runs of each case, a Markdown table
    .venv/bin/python benchmarks/startup_bench.py --runs 10 --json

Each case is a real `python -m dnx.cli export ...` process with an input dnx must refuse before
the slow work (a missing or corrupt weights file, an unwritable --out, a precision the runtime
does not build, ...). The target is every such error in under 2 s; the figure depends on the
machine and its load, so it is measured here (on a quiet machine) rather than asserted in the
tests. ``tests/test_preflight.py`` checks what does not depend on load: each error is one line,
exit 1, and torch is never imported before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(label, export arguments) of each input that must be refused before torch loads."""
    garbage = tmp / "notes.pth"
    garbage.write_text("not a checkpoint")
    empty = tmp / "no-images"
    empty.mkdir(exist_ok=True)
    out = str(tmp / "repo")
    return [
        ("missing weights file", ["--weights", str(tmp / "missing.pth"), "--out", out]),
        ("corrupt weights file", ["--weights", str(garbage), "--out", out]),
        ("unwritable --out", ["--weights", "random", "--out", "/proc/dnx-repo"]),
        ("--calib-dir without int8", ["--weights", "random", "--out", out, "--calib-dir", str(empty)]),
        ("no calibration images", ["--weights", "random", "--out", out, "--precision", "int8", "--calib-dir", str(empty)]),
        ("bf16 on onnxruntime", ["--weights", "random", "--out", out, "--precision", "bf16", "--runtime", "onnxruntime"]),
        ("tensorrt on cpu", ["--weights", "random", "--out", out, "--target", "cpu", "--runtime", "tensorrt"]),
    ]


def measure(args: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dnx.cli", "export", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)
    took = time.perf_counter() - t0
    if proc.returncode != 1 or not proc.stderr.startswith("Error: "):
        raise SystemExit(f"export {' '.join(args)}: expected a one-line error, got exit {proc.returncode}: {proc.stderr}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per case (default 5)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dnx-startup-bench-") as d:
        tmp = Path(d)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "TORCH_HOME": str(tmp / "empty-torch-home")}
        rows = []
        for label, args in cases(tmp):
            times = [measure(args, env, tmp) for _ in range(a.runs)]
            rows.append({"case": label, "runs": a.runs, "median_s": statistics.median(times), "max_s": max(times)})
    load = os.getloadavg()
    if a.json:
        print(json.dumps({"target_s": TARGET_S, "load_average": load, "cases": rows}, indent=2))
    else:
        print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; target: every error < {TARGET_S:g} s\n")
        print("| case | runs | median s | max s | < 2 s |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['runs']} | {r['median_s']:.2f} | {r['max_s']:.2f} | "
                  f"{'yes' if r['max_s'] < TARGET_S else '**no**'} |")
    return 0 if all(r["max_s"] < TARGET_S for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
