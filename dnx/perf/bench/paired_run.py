"""``dnx bench --paired``: served vs in-process in paired, interleaved rounds, with an interval and a verdict.

For each ONNX Runtime and OpenVINO model of the repository and each batch size it serves (1 and
its ``max_batch_size``), rounds alternate (:func:`dnx.perf.bench.paired.paired_rounds`):

* in-process: the model file opened with its served config's parameters (the same session
  options or OpenVINO properties as the backend, so the same threads and spinning), one request
  at a time for ``window_s``; CPU milliseconds per image from this process's CPU time;
* served: perf_analyzer at concurrency 1 with requests of that batch for about ``window_s``,
  with the server's CPU per inference (:class:`dnx.perf.sweep.cost.CpuProbe`) and perf_analyzer's
  server-side breakdown (queue, compute input / infer / output).

The ratio served / in-process of CPU per inference is judged against :data:`CPU_TARGET` (met only
when the whole interval is at or below it); throughput's ratio is reported beside it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dnx.cpu import this_cpu
from dnx.errors import InputError
from dnx.manifest import ModelRecord
from dnx.model_repository.layout import atomic_write_text
from dnx.perf.analyzer import Analyzer, LevelSettings
from dnx.perf.bench.paired import MIN_ROUNDS, Interval, Paired, paired_rounds, verdict
from dnx.perf.results import new_results_dir
from dnx.perf.served import inspect_server, launched_server, model_file, repository_manifest
from dnx.perf.sweep.cost import CpuProbe
from dnx.preprocess import photo_batch
from dnx.runtimes import onnxruntime
from dnx.runtimes.openvino import OpenVinoModel
from dnx.spec import spec_from_manifest

CPU_TARGET = 1.10  # served CPU per inference at most 1.10x in-process
BREAKDOWN = ("server_queue_ms", "server_compute_input_ms", "server_compute_infer_ms", "server_compute_output_ms")


@dataclass
class PairedOptions:
    """What ``dnx bench --paired`` compares and for how long."""

    repository: Path = Path("model_repository")
    models: list[str] | None = None  # None: every ONNX Runtime and OpenVINO model of the repository
    budget_s: float = 600.0  # shared by all pairs
    margin: float = 0.05  # stop a pair once every interval is within +-margin
    window_s: float = 3.0  # per side and round
    results_dir: Path | None = None
    min_rounds: int = MIN_ROUNDS


@dataclass
class PairResult:
    """One (model, batch) pair: its rounds, intervals and verdict."""

    model: str
    runtime: str
    precision: str
    batch: int
    paired: Paired
    cpu: Interval | None
    throughput: Interval | None
    verdict: str
    breakdown: dict = field(default_factory=dict)  # median served ms per request per phase

    def to_dict(self) -> dict:
        return {
            "model": self.model, "runtime": self.runtime, "precision": self.precision, "batch": self.batch,
            "rounds": len(self.paired.a), "seconds": round(self.paired.seconds, 1), "stopped": self.paired.stopped,
            "in_process": self.paired.a, "served": self.paired.b,
            "cpu_ratio": self.cpu.to_dict() if self.cpu else None,
            "throughput_ratio": self.throughput.to_dict() if self.throughput else None,
            "cpu_target": f"<= {CPU_TARGET:g}x", "verdict": self.verdict, "breakdown_ms": self.breakdown,
        }


def _in_process(repo: Path, record: ModelRecord, batch: int, image: np.ndarray, window_s: float,
                pace: dict) -> Callable[[], dict]:
    path = model_file(repo, record.name)
    if record.runtime == "openvino":
        run = OpenVinoModel(path, record.parameters, record.max_batch_size)
    else:
        sess = onnxruntime.session(path, record.parameters)
        name = sess.get_inputs()[0].name
        run = lambda x: sess.run(None, {name: x})  # noqa: E731
    x = np.ascontiguousarray(np.repeat(image[None], batch, axis=0))
    start = time.perf_counter()
    for _ in range(2):
        run(x)
    pace["request_s"] = (time.perf_counter() - start) / 2  # sizes the served side's windows

    def measure() -> dict:
        calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
        while calls < 2 or time.perf_counter() - wall0 < window_s:
            run(x)
            calls += 1
        images = calls * batch
        return {"cpu_ms": (time.process_time() - cpu0) * 1000 / images,
                "throughput": images / (time.perf_counter() - wall0)}
    return measure


def _served(analyzer: Analyzer, settings: LevelSettings, probe: CpuProbe, model, batch: int, window_s: float,
            pace: dict) -> Callable[[], dict]:
    rounds = [0]

    def measure() -> dict:
        rounds[0] += 1
        # perf_analyzer's windows (three at least) counted in requests, so a slow batch still fills them.
        per_window = max(3, round(window_s / 3 / max(pace["request_s"], 1e-3)))
        level = dataclasses.replace(settings, measurement_mode="count_windows", measurement_request_count=per_window)
        mark = probe.start(model)
        m = analyzer.measure_level(model.name, 1, level, batch, stem=f"{model.name}_b{batch}_paired{rounds[0]}")
        cost = probe.finish(mark)
        return {"cpu_ms": cost["server_cpu_ms_per_inference"], "throughput": m.throughput,
                "client_cpu_ms": cost["client_cpu_ms_per_request"], **{k: getattr(m, k) for k in BREAKDOWN}}
    return measure


def pairs_of(repo: Path, records: dict[str, ModelRecord], models: list[str] | None) -> list[tuple[ModelRecord, int]]:
    """``(record, batch)`` for each CPU model asked for, at batch 1 and its ``max_batch_size``."""
    cpu = {n: r for n, r in records.items() if r.runtime in ("onnxruntime", "openvino") and r.target != "gpu"
           and model_file(repo, n) is not None}
    if models:
        unknown = [m for m in models if m not in cpu]
        if unknown:
            raise InputError(f"--models {unknown[0]!r} is not an ONNX Runtime or OpenVINO model of {repo}; "
                             f"choose from {', '.join(cpu)}")
        cpu = {n: cpu[n] for n in models}
    return [(r, b) for r in cpu.values() for b in sorted({1, r.max_batch_size})]


def run_paired(opts: PairedOptions, on_step: Callable[[str], None] | None = None) -> tuple[list[PairResult], Path]:
    """Every pair of :func:`pairs_of`, measured in paired rounds; writes ``paired.json`` and ``paired.md``."""
    step = on_step or (lambda msg: None)
    repo = Path(opts.repository)
    manifest = repository_manifest(repo)
    if manifest is None:
        raise InputError(f"{repo} has no dnx-manifest.json; --paired compares the models dnx exported there")
    pairs = pairs_of(repo, manifest.models, opts.models)
    if not pairs:
        raise InputError(f"{repo} has no ONNX Runtime or OpenVINO model to compare; export one with `dnx export`")
    results = Path(opts.results_dir or new_results_dir("bench"))
    results.mkdir(parents=True, exist_ok=True)
    image = photo_batch(spec_from_manifest(manifest))[0]
    out: list[PairResult] = []
    names = sorted({r.name for r, _ in pairs})
    with launched_server(repo, names, results / "tritonserver.log") as server:
        served = {m.name: m for m in inspect_server(server.grpc_url, "grpc", names)}
        probe = CpuProbe(server.metrics_url, server_pid=server.pid)
        analyzer = Analyzer(results)
        settings = LevelSettings(url=server.grpc_url, stability_percentage=999.0, max_trials=3, retries=0)
        started = time.monotonic()
        for i, (record, batch) in enumerate(pairs):
            # What the pairs before left unspent goes to the ones after: the budget is shared, not split.
            share = (opts.budget_s - (time.monotonic() - started)) / (len(pairs) - i)
            step(f"paired: {record.name} batch {batch}, up to {share:.0f} s")
            pace: dict = {}
            p = paired_rounds(_in_process(repo, record, batch, image, opts.window_s, pace),
                              _served(analyzer, settings, probe, served[record.name], batch, opts.window_s, pace),
                              ("cpu_ms", "throughput"), margin=opts.margin, budget_s=share, min_rounds=opts.min_rounds)
            cpu = p.interval("cpu_ms")
            out.append(PairResult(
                record.name, record.runtime, record.precision, batch, p, cpu, p.interval("throughput"),
                verdict(cpu, CPU_TARGET, higher_is_better=False) if cpu else "undecided",
                {k: round(statistics.median(r[k] for r in p.b), 3) for k in BREAKDOWN}))
    here = this_cpu()
    doc = {"cpu": here.to_dict(), "options": {"budget_s": opts.budget_s, "margin": opts.margin,
                                             "window_s": opts.window_s}, "pairs": [r.to_dict() for r in out]}
    atomic_write_text(results / "paired.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(results / "paired.md", render_paired(out, here.describe(), opts))
    return out, results


def _iv(i: Interval | None) -> str:
    return "-" if i is None else f"{i.point:.3f} [{i.low:.3f}, {i.high:.3f}]"


def render_paired(results: list[PairResult], cpu: str, opts: PairedOptions) -> str:
    """The Markdown table of :func:`run_paired`."""
    lines = [f"## Served / in-process, paired rounds ({cpu})", "",
             f"Rounds of {opts.window_s:g} s per side, alternating order, until every 95 % interval is within "
             f"+-{opts.margin:.0%} or {opts.budget_s:.0f} s are spent (shared by the pairs). Served: perf_analyzer "
             "at concurrency 1, the server's CPU (tritonserver + the model's stubs) over Triton's inference count; "
             "in-process: the served config's parameters, this process's CPU time. Ratio = geometric mean of "
             "per-round served / in-process, bootstrap 95 % interval.", "",
             "| model | batch | rounds | in-process CPU ms/img | served CPU ms/inf | CPU ratio [95 %] | verdict "
             f"(<= {CPU_TARGET:g}x) | throughput ratio [95 %] | served queue / infer ms | stopped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        a = statistics.median(x["cpu_ms"] for x in r.paired.a)
        b = statistics.median(x["cpu_ms"] for x in r.paired.b if x["cpu_ms"] is not None) if r.cpu else float("nan")
        lines.append(f"| `{r.model}` | {r.batch} | {len(r.paired.a)} | {a:.2f} | {b:.2f} | {_iv(r.cpu)} | "
                     f"**{r.verdict}** | {_iv(r.throughput)} | {r.breakdown['server_queue_ms']:.2f} / "
                     f"{r.breakdown['server_compute_infer_ms']:.2f} | {r.paired.stopped} |")
    return "\n".join(lines) + "\n"
