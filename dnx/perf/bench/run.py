"""``make bench``: one run, one machine, the same photograph, served Triton vs in-process baselines.

In-process runners (PyTorch eager, ONNX Runtime, OpenVINO, plus any the caller adds in
:attr:`BenchOptions.extra_runners`) are timed first; then the repository is served by a local
Triton and swept with perf_analyzer (:mod:`dnx.perf.sweep`) at concurrency 1..N (and where
each model's batches fill); models ``dnx tune`` rewrote are swept again with their previous
config (:mod:`.untuned`). The ratios against the targets go to ``perf/BENCHMARKS.md``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from dnx.errors import InputError
from dnx.manifest import Manifest, library_versions
from dnx.model_repository.layout import atomic_write_text
from dnx.model_repository.render import parse_config
from dnx.cpu import this_cpu, unsafe_variants
from dnx.perf.bench.machine import tuned_elsewhere
from dnx.perf.bench.markdown import kept_sections, render_markdown
from dnx.perf.bench.ratios import compute_ratios, shared_memory_ratio, tuned_ratios
from dnx.perf.bench.result import BenchOptions, BenchResult
from dnx.perf.bench.runners import (
    InProcessRunner, onnxruntime_runner, openvino_async_runners, openvino_runners, torch_eager_runner,
)
from dnx.perf.bench.timing import Timing, time_runner
from dnx.perf.bench.untuned import sweep_untuned
from dnx.perf.results import machine_info, new_results_dir
from dnx.perf.served import ServedModel, inspect_server, launched_server, measurable, repository_manifest, variant_of
from dnx.perf.sweep import SweepOptions, sweep, sweep_with_fill, tidy_rows, write_report
from dnx.perf.sweep.cost import CpuProbe
from dnx.perf.sweep.memory import MemoryProbe
from dnx.preprocess import photo_batch, sample_photographs
from dnx.signals import Interrupted
from dnx.spec import ModelSpec, spec_from_manifest


def _ort_model(repository: Path, manifest: Manifest | None, spec: ModelSpec) -> tuple[str, Path, int]:
    for d in sorted(p for p in repository.iterdir() if p.is_dir()):
        if variant_of(d.name, manifest) == ("fp32", "onnxruntime") and (d / "1" / "model.onnx").is_file():
            return d.name, d / "1" / "model.onnx", max(parse_config((d / "config.pbtxt").read_text()).max_batch_size, 1)
    raise InputError(f"{repository} has no fp32 ONNX Runtime model ({spec.model_name('onnxruntime', 'fp32')}); build one with "
                     "`dnx export --precision fp32` or pass --repository")


def write_input_dir(image: np.ndarray, folder: Path, input_name: str = "input") -> Path:
    """perf_analyzer ``--input-data`` folder: one raw float32 file named after the input."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / input_name).write_bytes(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return folder


def _other_pass(models: list[ServedModel], sweep_opts: SweepOptions, opts: BenchOptions, results: Path, memory: MemoryProbe,
                step: Callable[[str], None]):
    """The served sweep once more with the other ``--shared-memory`` mode (its own results folder)."""
    mode = opts.other_shared_memory
    levels = opts.other_concurrency or opts.concurrency
    step(f"served: again with shared memory {mode}, concurrency {levels}")
    again = dataclasses.replace(sweep_opts, shared_memory=mode, concurrency=levels)
    out = results / f"shared-memory-{mode}"
    if opts.other_concurrency is not None:  # a short pass (--quick): the levels named, no fill level
        return sweep(models, again, out, memory=memory)
    return sweep_with_fill(models, again, out, opts.fill_cap, memory=memory)


def run_bench(opts: BenchOptions, on_step: Callable[[str], None] | None = None) -> BenchResult:
    """Time the in-process baselines, sweep the served repository, write BENCHMARKS.md."""
    step = on_step or (lambda msg: None)
    repo = Path(opts.repository)
    if not repo.is_dir():
        raise InputError(f"model repository {repo} does not exist; build it with `dnx export` or pass --repository")
    manifest = repository_manifest(repo)
    spec = spec_from_manifest(manifest)
    ort_name, ort_path, max_batch = _ort_model(repo, manifest, spec)
    results = Path(opts.results_dir or new_results_dir("bench"))
    results.mkdir(parents=True, exist_ok=True)
    machine, versions = machine_info(), library_versions()
    images = photo_batch(spec)
    photo = sample_photographs()[0].name

    runners: list[InProcessRunner] = []
    if opts.include_torch:
        runners.append(torch_eager_runner(opts.torch_batches, spec=spec))
    runners.append(onnxruntime_runner(ort_path, tuple(dict.fromkeys((1, max_batch))), opts.ort_threads))
    if opts.include_openvino:
        runners.extend(openvino_runners(repo, manifest, spec))
        runners.extend(openvino_async_runners(repo, manifest))
    runners.extend(opts.extra_runners)
    timings: list[Timing] = []
    # PyTorch last: once it has run, its thread pool slows the other runtimes in this process
    # (ONNX Runtime batch 1 went from 30.6 to 48.7 ms here after a few PyTorch calls).
    runners.sort(key=lambda r: r.family == "pytorch")
    try:
        for r in runners:
            step(f"in-process {r.name}, batch {', '.join(map(str, r.batch_sizes))}")
            timings.extend(time_runner(r, images, opts.duration_s, opts.warmup, opts.min_iterations))

        step(f"served: local Triton on {repo}, perf_analyzer concurrency {opts.concurrency}, shared memory "
             f"{opts.shared_memory}")
        # Kept with the results so the recorded perf_analyzer command lines can be rerun.
        input_dir = write_input_dir(images[0], results / "input-data", spec.input_name)
        with launched_server(repo, opts.served_models, results / "tritonserver.log") as server:
            # The bytes-in ensemble and its steps are not a runtime to compare with in-process ones
            # (dnx perf reports their preprocessing cost); named with --models they are measured.
            models, _ = measurable(inspect_server(server.grpc_url, "grpc", opts.served_models),
                                   named=opts.served_models is not None, ensembles=False)
            sweep_opts = SweepOptions(
                url=server.grpc_url, protocol="grpc", concurrency=opts.concurrency, batch_sizes=(1,),
                measurement_interval_ms=opts.measurement_interval_ms, stability_percentage=opts.stability_percentage,
                max_trials=opts.max_trials, retries=opts.retries, input_data=str(input_dir), progress=opts.progress,
                shared_memory=opts.shared_memory,
            )
            memory = MemoryProbe(server_pid=server.pid, metrics_url=server.metrics_url)
            cpu = CpuProbe(server.metrics_url, server_pid=server.pid)
            swept = sweep_with_fill(models, sweep_opts, results, opts.fill_cap, memory=memory, cpu=cpu)
            other = _other_pass(models, sweep_opts, opts, results, memory, step) if opts.other_pass else None
            step("served: models tuned by `dnx tune` again with their config.pbtxt.orig (untuned)")
            untuned = sweep_untuned(server.grpc_url, repo, models, sweep_opts, results, manifest, opts.fill_cap, memory)
    except Interrupted as exc:  # the server is stopped by now; keep what was measured
        atomic_write_text(results / "bench-partial.json", json.dumps(
            {"incomplete": str(exc), "in_process": [asdict(t) for t in timings]}, indent=2) + "\n")
        raise exc.with_detail(f"in-process timings in {results / 'bench-partial.json'}, served levels in "
                              f"{results / 'raw'}") from None
    memory_record = {"sources": memory.sources, "notes": memory.notes}
    cpu_record = {"sources": cpu.sources, "notes": cpu.notes}
    write_report(swept, manifest=manifest, memory=memory_record, cpu=cpu_record)
    served = tidy_rows(swept, manifest)
    served_other = []
    if other is not None:
        write_report(other, manifest=manifest, memory=memory_record)
        served_other = tidy_rows(other, manifest)
    configs = {m.name: m.summary() for m in models}
    ratios = (compute_ratios(timings, served, ort_name) + tuned_ratios(timings, served, ort_name, manifest)
              + shared_memory_ratio(timings, served + served_other, manifest))
    commands = ([opts.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])] + [r.command for r in swept.runs]
                + [r.command for r in (other.runs if other is not None else [])])
    warnings = [w for w in [tuned_elsewhere(manifest, machine)] if w]
    if manifest is not None:
        warnings += unsafe_variants({m.name: manifest.models[m.name] for m in models if m.name in manifest.models},
                                    this_cpu())
    result = BenchResult(machine, versions, timings, served, configs, ratios, commands, Path(opts.out_md), results, photo,
                         untuned, opts.shared_memory, served_other, warnings)
    atomic_write_text(results / "bench.json", json.dumps(result.to_json(), indent=2) + "\n")
    atomic_write_text(opts.out_md, render_markdown(result, opts) + kept_sections(opts.out_md))
    return result
