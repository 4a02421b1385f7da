"""Several configs of one model measured side by side: one server, the levels interleaved, rounds, medians.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/side_by_side.py --repository model_repository \
        --model densenet121_openvino_int8 --config exported=model_repository/densenet121_openvino_int8/config.pbtxt.orig \
        --config tuned=model_repository/densenet121_openvino_int8/config.pbtxt --levels 1,2,4,8,16 --rounds 3

Each ``--config TAG=PATH`` becomes its own model ``<model>__<TAG>`` (the same model files, that
config, renamed) in a scratch repository, all served by one local tritonserver; only one is ever
under load (an idle OpenVINO or ONNX Runtime model uses no CPU). For every round, at every level,
every config is measured once by perf_analyzer (dnx's Analyzer, time windows, stability check),
the order of the configs rotating from round to round, so the machine's drift (these VMs
vary by 2x over an hour) hits all alike. ``side-by-side.md`` / ``.json`` hold per level the
median infer/s and p99 over the rounds and each config's ratio to the first one.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

from dnx.perf.analyzer import Analyzer, LevelSettings
from dnx.perf.results import machine_info
from dnx.perf.served import launched_server
from dnx.perf.tune.report import machine_words


def scratch_repository(repo: Path, model: str, configs: dict[str, Path], dest: Path) -> dict[str, str]:
    """``dest`` with one copy of ``model`` per config (files linked); ``{tag: served name}``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = {}
    for tag, cfg in configs.items():
        name = f"{model}__{tag}"
        shutil.copytree(repo / model, dest / name, ignore=shutil.ignore_patterns("config.pbtxt*"),
                        copy_function=lambda s, d: Path(d).symlink_to(Path(s).resolve()))
        text = re.sub(r'^name: ".*"$', f'name: "{name}"', Path(cfg).read_text(), count=1, flags=re.M)
        (dest / name / "config.pbtxt").write_text(text)
        names[tag] = name
    if (repo / "dnx-manifest.json").is_file():
        shutil.copy2(repo / "dnx-manifest.json", dest / "dnx-manifest.json")
    return names


def side_by_side(repo: Path, model: str, configs: dict[str, Path], levels: list[int], rounds: int, out: Path,
                 window_ms: int = 3000, shared_memory: str = "none") -> dict:
    """Measure every config at every level, ``rounds`` times, interleaved; the medians and the raw points."""
    out.mkdir(parents=True, exist_ok=True)
    names = scratch_repository(repo, model, configs, out / "repository")
    points: dict[str, dict[int, list[dict]]] = {tag: {c: [] for c in levels} for tag in configs}
    with launched_server(out / "repository", list(names.values()), out / "tritonserver.log") as server:
        analyzer = Analyzer(out)
        settings = LevelSettings(url=server.grpc_url, measurement_interval_ms=window_ms, stability_percentage=15,
                                 max_trials=8, retries=1, shared_memory=shared_memory)
        tags = list(configs)
        for r in range(rounds):
            order = tags[r % len(tags):] + tags[:r % len(tags)]
            for c in levels:
                for tag in order:
                    m = analyzer.measure_level(names[tag], c, settings, stem=f"{tag}_r{r}_c{{level}}")
                    points[tag][c].append({"throughput": m.throughput, "p99_ms": m.p99_ms, "stable": m.stable})
                    print(f"round {r + 1} c{c} {tag}: {m.throughput:.1f} infer/s, p99 {m.p99_ms:.1f} ms", flush=True)
    medians = {tag: {c: {"throughput": statistics.median(p["throughput"] for p in pts),
                         "p99_ms": statistics.median(p["p99_ms"] for p in pts)} for c, pts in by_level.items()}
               for tag, by_level in points.items()}
    doc = {"machine": machine_info(), "model": model, "configs": {k: str(v) for k, v in configs.items()},
           "levels": levels, "rounds": rounds, "window_ms": window_ms, "shared_memory": shared_memory,
           "median": medians, "points": points}
    (out / "side-by-side.json").write_text(json.dumps(doc, indent=2) + "\n")
    first = next(iter(configs))
    lines = [f"machine: {machine_words(doc['machine'])}; `{model}`, {rounds} rounds interleaved, windows {window_ms} ms, "
             f"shared memory `{shared_memory}`; median infer/s (p99 ms) over the rounds, ratio to `{first}`", "",
             "| config | " + " | ".join(f"c{c}" for c in levels) + " |", "|---|" + "---|" * len(levels)]
    for tag in configs:
        cells = []
        for c in levels:
            m, base = medians[tag][c], medians[first][c]
            ratio = "" if tag == first else f", {m['throughput'] / base['throughput']:.2f}x"
            cells.append(f"{m['throughput']:.1f} ({m['p99_ms']:.0f} ms{ratio})")
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    (out / "side-by-side.md").write_text("\n".join(lines) + "\n")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", action="append", required=True, help="TAG=PATH of a config.pbtxt (repeat)")
    ap.add_argument("--levels", default="1,2,4,8,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--shared-memory", default="none", choices=("none", "system"))
    ap.add_argument("--out", type=Path, default=Path("perf/results/side-by-side"))
    a = ap.parse_args()
    configs = dict(item.split("=", 1) for item in a.config)
    side_by_side(a.repository, a.model, {k: Path(v) for k, v in configs.items()},
                 [int(x) for x in a.levels.split(",")], a.rounds, a.out, a.window_ms, a.shared_memory)
    print((a.out / "side-by-side.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
