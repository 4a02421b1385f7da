"""LoadGen with an in-process system under test: the served runtime and precision, no server.

:class:`InProcessTarget` answers each LoadGen sample from one of ``workers`` threads (one per
served instance, each with its own loaded model, as Triton runs one execution per instance), so
the Server scenario measures the same queue the served model has, minus the server and the network.
:func:`run_slo_bench` puts the two SLO rates side by side (``dnx bench --p99-ms``).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_text
from dnx.model_repository.render import parse_config
from dnx.perf.bench.runners import InProcessRunner, onnxruntime_runner, openvino_runner
from dnx.perf.results import machine_info, new_results_dir
from dnx.perf.served import manifest_entry, model_file, repository_manifest, variant_of
from dnx.perf.slo.options import SloOptions
from dnx.perf.slo.run import ModelSlo, run_slo, search_slo, single_stream
from dnx.preprocess import photo_batch


class InProcessTarget:
    """``workers`` threads, each with ``load()``'s infer function, serving one FIFO queue."""

    def __init__(self, load: Callable[[], Callable], samples: list, workers: int = 1):
        self.samples, self.sample_count = samples, len(samples)
        self.queue: queue.Queue = queue.Queue()
        self.fns = [load() for _ in range(max(1, workers))]  # loaded before the test: no load in the timing
        self.threads = [threading.Thread(target=self._work, args=(fn,), daemon=True) for fn in self.fns]
        for t in self.threads:
            t.start()

    def _work(self, fn) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            index, done = item
            try:
                fn(self.samples[index % self.sample_count])
            except Exception as exc:  # noqa: BLE001 - reported by the LoadGen run as a failed sample
                done(f"{type(exc).__name__}: {exc}")
                continue
            done(None)

    def send(self, index: int, done: Callable[[str | None], None]) -> None:
        self.queue.put((index, done))

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)


def model_runner(repository: Path, model: str, manifest) -> tuple[InProcessRunner, int]:
    """The in-process runner of a repository model as served (runtime, precision, parameters) and its
    instance count."""
    precision, runtime = variant_of(model, manifest)
    path = model_file(repository, model)
    config_path = Path(repository) / model / "config.pbtxt"
    if path is None or not config_path.is_file():
        raise InputError(f"{model}: no ONNX/OpenVINO model file or config.pbtxt in {repository}; pass --models with a "
                         "CPU variant of the repository")
    cfg = parse_config(config_path.read_text())
    instances = sum(g.count or 1 for g in cfg.instance_group) or 1
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    if runtime == "onnxruntime":
        threads = int(params.get("intra_op_thread_count", "0") or 0) or 2
        return onnxruntime_runner(path, (1,), threads=threads, precision=precision), instances
    if runtime == "openvino":
        entry = manifest_entry(manifest, model)
        parameters = (entry.config.get("parameters") if entry else None) or params
        return openvino_runner(path, precision, (1,), parameters=parameters), instances
    raise InputError(f"{model} runs on {runtime}; dnx bench --p99-ms compares ONNX Runtime and OpenVINO models")


@dataclass
class SloBench:
    models: dict[str, dict] = field(default_factory=dict)  # model -> {in_process, served, ratio}
    paths: dict[str, Path] = field(default_factory=dict)


def run_slo_bench(repository: str | Path, models: list[str], p99_ms: float, results: Path | None = None,
                  base: SloOptions | None = None) -> SloBench:
    """Each model's SLO rate in-process (LoadGen over :class:`InProcessTarget`) and served (a launched
    local server, :func:`dnx.perf.slo.run_slo`); writes ``slo-bench.json`` and ``slo-bench.md``."""
    repository = Path(repository)
    if not repository.is_dir():
        raise InputError(f"model repository {repository} does not exist; build it with `dnx export` or pass --repository")
    if not models:
        raise InputError("dnx bench --p99-ms needs --models (e.g. densenet121_onnx,densenet121_openvino_int8)")
    base = base or SloOptions()
    opts = SloOptions(**{**base.__dict__, "scenario": "server", "p99_ms": p99_ms, "closed_loop": False})
    opts.check()
    out = Path(results or new_results_dir("bench"))
    manifest = repository_manifest(repository)
    bench = SloBench()
    images = photo_batch()
    samples = [images[i:i + 1] for i in range(len(images))]
    for name in models:
        runner, instances = model_runner(repository, name, manifest)
        target = InProcessTarget(lambda r=runner: r.load(1), samples, workers=instances)
        rec = ModelSlo(f"{name}", *variant_of(name, manifest))
        try:
            if opts.progress:
                print(f"{name}: in-process ({runner.name} x{instances}), single-stream then the Server search",
                      file=sys.stderr, flush=True)
            rec.single_stream = single_stream(target, name, opts, out / "in-process")
            search_slo(rec, target, instances, opts, out / "in-process")
        finally:
            target.close()
        bench.models[name] = {"in_process": rec.to_dict(opts), "runner": runner.name, "runner_notes": runner.notes,
                              "instances": instances}
    served = run_slo(SloOptions(**{**opts.__dict__, "launch": True, "repository": repository, "models": models,
                                   "out": out / "served", "url": ""}))
    for m in served.models:
        rec = bench.models[m.name]
        rec["served"] = m.to_dict(opts)
        inproc = rec["in_process"].get("slo_rate")
        rec["ratio"] = (m.slo_rate / inproc) if m.slo_rate and inproc else None
    report = {"p99_bound_ms": p99_ms, "machine": machine_info(), "models": bench.models}
    bench.paths = {"json": out / "slo-bench.json", "md": out / "slo-bench.md"}
    atomic_write_text(bench.paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(bench.paths["md"], slo_markdown(report))
    return bench


def slo_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"## Served vs in-process at the SLO (p99 <= {report['p99_bound_ms']:g} ms, MLPerf LoadGen Server)", "",
             f"CPU: {m.get('cpu')} ({m.get('cores')} cores; ISA: {', '.join(m.get('isa') or [])}); load average "
             f"{m.get('load_average')}.", "",
             "| model | in-process runner | single-stream p99 ms (in-process / served) | SLO rate in-process | "
             "SLO rate served | served / in-process |", "|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        ip, sv = r["in_process"], r.get("served") or {}

        def f(x, fmt=".2f"):
            return "-" if x is None else format(x, fmt)

        lines.append(f"| {name} | {r['runner']} x{r['instances']} | {f((ip.get('single_stream') or {}).get('p99_ms'), '.1f')}"
                     f" / {f((sv.get('single_stream') or {}).get('p99_ms'), '.1f')} | {f(ip.get('slo_rate'))} | "
                     f"{f(sv.get('slo_rate'))} | {f(r.get('ratio'))} |")
    return "\n".join(lines) + "\n"
