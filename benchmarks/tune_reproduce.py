"""Is what ``dnx tune`` wrote what the server does? An independent perf_analyzer run of each written config.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/tune_reproduce.py --repository model_repository --out perf/results/reproduce

For every model ``dnx tune`` recorded (``dnx-manifest.json``'s ``tuning``), the written config
and the untuned one (``config.pbtxt.orig``; a kept config alone) are served side by side
(benchmarks/side_by_side.py: one server, levels interleaved, rounds, medians) at the levels tune was
told (``tuning.concurrency``). Prints and writes ``reproduce.md``: per level, the figure tune
recorded (its confirm step's rerun), the independent figure of the written config and their
ratio, the untuned config and written / untuned.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from dnx.perf.results import machine_info
from dnx.perf.tune.report import machine_words

sys.path.insert(0, str(Path(__file__).parent))
from side_by_side import side_by_side  # noqa: E402 - perf/ is a folder of scripts, not a package


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("perf/results/reproduce"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="*", help="only these models (default: every model tune recorded)")
    ap.add_argument("--measurement-interval", type=int, default=3000)
    a = ap.parse_args()
    manifest = json.loads((a.repository / "dnx-manifest.json").read_text())
    tuning = manifest.get("tuning") or {}
    if not tuning:
        sys.exit(f"{a.repository} was not tuned (no `tuning` in its manifest); run `dnx tune` first")
    load = tuning.get("load", "1:16")
    levels = [int(c) for c in tuning.get("concurrency") or [1, 2, 4, 8, 16]]
    if a.out.exists():
        shutil.rmtree(a.out)
    a.out.mkdir(parents=True)
    lines = ["# Independent runs of the configs `dnx tune` wrote", "",
             f"machine: {machine_words(machine_info())}; tuned on: {machine_words(tuning.get('machine', {}))}; "
             f"load `{load}`, objective `{tuning.get('objective')}`, windows {a.measurement_interval} ms", ""]
    for model, rec in (tuning.get("models") or {}).items():
        orig = a.repository / model / "config.pbtxt.orig"
        recorded = {p["concurrency"]: p["throughput"] for p in (manifest["models"].get(model, {}).get("tune") or {}).get("curve", [])}
        if not recorded or (a.models and model not in a.models):
            continue
        written = bool(rec.get("written")) and orig.is_file()
        # A kept config is measured against itself: tune's figure for it is what is checked.
        configs = {"untuned": orig if written else a.repository / model / "config.pbtxt"}
        if written:
            configs["tuned"] = a.repository / model / "config.pbtxt"
        doc = side_by_side(a.repository, model, configs, levels, a.rounds, a.out / model, a.measurement_interval)
        med = doc["median"]
        tuned = med.get("tuned", med["untuned"])
        lines += [f"## `{model}`: {rec.get('previous')} -> {rec.get('winner')}"
                  + ("" if written else f" (kept: {rec.get('reason')})"), "",
                  f"{a.rounds} rounds, interleaved, one server (benchmarks/side_by_side.py); median infer/s", "",
                  "| level | tune recorded | independent, as written | ratio | independent, untuned | written / untuned |",
                  "|---|---|---|---|---|---|"]
        for c in levels:
            t, u, rec_c = tuned[c]["throughput"], med["untuned"][c]["throughput"], recorded.get(c)
            lines.append(f"| c{c} | {rec_c:.1f} | {t:.1f} | {t / rec_c:.3f} | {u:.1f} | {t / u:.3f} |" if rec_c
                         else f"| c{c} | - | {t:.1f} | - | {u:.1f} | {t / u:.3f} |")
        lines.append("")
    (a.out / "reproduce.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
