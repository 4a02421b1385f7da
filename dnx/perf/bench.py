"""``make bench``: one run, one machine, the same photograph, served Triton vs in-process baselines.

In-process runners (PyTorch eager, ONNX Runtime, OpenVINO, plus any the caller adds in
:attr:`BenchOptions.extra_runners`) are timed first, loaded through :mod:`dnx.runtimes` with
the served configs' parameters; then the repository is served by a local Triton launched
through :mod:`dnx.serving.server` and swept with perf_analyzer (:mod:`dnx.perf.sweep`) at
concurrency 1..N. Model, shapes and names come from the repository's model spec. The ratios
against the targets go to ``perf/BENCHMARKS.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dnx._lazy import has_module, lazy_import
from dnx.errors import InputError
from dnx.model_repository.layout import atomic_write_text
from dnx.perf.sweep import ConcurrencyRange, SweepOptions
from dnx.spec import DEFAULT_MODEL, ModelSpec

Infer = Callable[[np.ndarray], object]


@dataclass
class InProcessRunner:
    """A baseline timed in this process. ``load(batch)`` returns a function that runs one batch."""

    name: str  # e.g. "onnxruntime fp32"
    family: str  # pytorch | onnxruntime | openvino | ...
    precision: str
    batch_sizes: tuple[int, ...]
    load: Callable[[int], Infer]
    threads: int | None = None
    notes: str = ""


@dataclass
class Timing:
    """One runner at one batch size."""

    runner: str
    family: str
    precision: str
    batch: int
    threads: int | None
    iterations: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    throughput: float  # images per second
    notes: str = ""


# ------------------------------------------------------------------ runners (loaded through dnx.runtimes)


def torch_eager_runner(batch_sizes=(1, 4, 8), threads: int | None = None, spec: ModelSpec = DEFAULT_MODEL) -> InProcessRunner:
    """The torchvision model in PyTorch eager, random weights (the approach of the suite dnx replaces)."""
    threads = threads or os.cpu_count()

    def load(batch: int) -> Infer:
        from dnx.exporter.torch_export import load_torch_model
        from dnx.runtimes.torch import forward_fn

        lazy_import("torch").set_num_threads(threads)
        return forward_fn(load_torch_model(spec, "random", 0)[0])

    return InProcessRunner("pytorch eager fp32", "pytorch", "fp32", tuple(batch_sizes), load, threads,
                           "torch.set_num_threads(os.cpu_count()), inference_mode, random weights")


def onnxruntime_runner(onnx_path: Path, batch_sizes=(1,), threads: int = 2, precision: str = "fp32") -> InProcessRunner:
    """ONNX Runtime CPU session on ``onnx_path`` (intra-op ``threads``, inter-op 1)."""

    def load(batch: int) -> Infer:
        from dnx.runtimes import onnxruntime

        sess = onnxruntime.session(onnx_path, onnxruntime.cpu_parameters(threads))
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})

    return InProcessRunner(f"onnxruntime {precision}", "onnxruntime", precision, tuple(batch_sizes), load, threads,
                           f"intra_op={threads}, inter_op=1, {Path(onnx_path).name}")


_OV_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


# Config parameters that choose an OpenVINO model's precision (kept by the in-process runners).
PRECISION_KEYS = ("INFERENCE_PRECISION_HINT", "HINT_BF16")


def precision_parameters(parameters: dict[str, str] | None) -> dict[str, str]:
    """The precision choice (:data:`PRECISION_KEYS`) of a served config's ``parameters``, nothing else."""
    return {k: v for k, v in (parameters or {}).items() if k in PRECISION_KEYS}


def sync_parameters(precision: str, parameters: dict[str, str] | None = None) -> dict[str, str]:
    """Config parameters of the synchronous in-process OpenVINO runner: LATENCY, one stream.

    Only the served precision choice is kept from ``parameters``: the served streams and hint
    (e.g. THROUGHPUT x 2 after ``dnx tune``) would leave one synchronous request half the cores.
    """
    chosen = (precision_parameters(parameters) if parameters is not None
              else {"INFERENCE_PRECISION_HINT": _OV_HINTS.get(precision, "f32")})
    return {**chosen, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


def openvino_runner(model_path: Path, precision: str = "fp32", batch_sizes=(1, 8), threads: int | None = None,
                    parameters: dict[str, str] | None = None) -> InProcessRunner:
    """OpenVINO CPU on an ONNX or IR file, LATENCY hint, inference precision from ``precision``.

    ``parameters`` (a served model's config parameters) give the precision choice
    (:data:`PRECISION_KEYS`), so the in-process run computes in the precision the openvino
    backend serves (int8 then runs its unquantized layers at the CPU default, as served); one
    stream, LATENCY hint.
    """
    threads = threads or os.cpu_count()
    params = sync_parameters(precision, parameters)

    def load(batch: int) -> Infer:
        from dnx.runtimes import openvino

        request = openvino.compile_model(model_path, params, batch=batch,
                                         properties={"INFERENCE_NUM_THREADS": threads}).create_infer_request()
        return lambda x: request.infer({0: x})

    from dnx.runtimes.openvino import compile_properties

    hint = compile_properties(params).get("INFERENCE_PRECISION_HINT", "CPU default")
    return InProcessRunner(f"openvino {precision}", "openvino", precision, tuple(batch_sizes), load, threads,
                           f"LATENCY hint, 1 stream, {threads} threads, precision hint {hint}, "
                           f"{Path(model_path).parent.parent.name}/{Path(model_path).name}")


def _model_file(repository: Path, model: str) -> Path | None:
    files = sorted(p for p in (repository / model / "1").glob("model.*") if p.suffix in (".onnx", ".xml"))
    return files[0] if files else None


def openvino_runners(repository: Path, manifest: dict | None, spec: ModelSpec = DEFAULT_MODEL) -> list[InProcessRunner]:
    """OpenVINO per precision: the repository's OpenVINO models as served, else its fp32 ONNX (f32, and bf16 if native)."""
    from dnx.perf.report import variant_of

    if not has_module("openvino"):
        return []
    from dnx.runtimes.openvino import cpu_supports_bf16

    found = []
    for d in sorted(p for p in repository.iterdir() if p.is_dir()):
        precision, runtime = variant_of(d.name, manifest)
        path = _model_file(repository, d.name)
        if runtime == "openvino" and path is not None:
            params = (((manifest or {}).get("models") or {}).get(d.name) or {}).get("config", {}).get("parameters")
            found.append(openvino_runner(path, precision, parameters=params))
    if found:
        return found
    onnx = _model_file(repository, spec.model_name("onnxruntime", "fp32"))
    if onnx is None:
        return []
    return [openvino_runner(onnx, "fp32")] + ([openvino_runner(onnx, "bf16")] if cpu_supports_bf16() else [])


# ------------------------------------------------------------------ timing


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` images cycled from ``images`` (float32 NCHW, contiguous)."""
    return np.ascontiguousarray(images[np.arange(batch) % len(images)])


def time_runner(runner: InProcessRunner, images: np.ndarray, duration_s: float = 10.0,
                warmup: int = 3, min_iterations: int = 5) -> list[Timing]:
    """Time ``runner`` at each of its batch sizes for about ``duration_s`` seconds each."""
    out = []
    for batch in runner.batch_sizes:
        x = batch_of(images, batch)
        infer = runner.load(batch)
        for _ in range(warmup):
            infer(x)
        lat = []
        start = time.perf_counter()
        while len(lat) < min_iterations or time.perf_counter() - start < duration_s:
            t0 = time.perf_counter()
            infer(x)
            lat.append(time.perf_counter() - t0)
        ms = np.asarray(lat) * 1000.0
        out.append(Timing(runner.name, runner.family, runner.precision, batch, runner.threads, len(lat),
                          float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                          float(batch * len(lat) / ms.sum() * 1000.0), runner.notes))
        del infer
    return out


# ------------------------------------------------------------------ machine


def machine_info() -> dict:
    """CPU model, cores, RAM, load, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    ram_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib, "bf16": _cpu_bf16(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(), "python": platform.python_version(),
    }


def _cpu_bf16() -> bool | None:
    """Native bfloat16 as OpenVINO reports it (the check the exporter uses); None without OpenVINO."""
    if not has_module("openvino"):
        return None
    from dnx.runtimes.openvino import cpu_supports_bf16

    return cpu_supports_bf16()


# ------------------------------------------------------------------ the bench


@dataclass
class BenchOptions:
    """What ``dnx bench`` runs."""

    repository: Path = Path("model_repository")
    out_md: Path = Path("perf/BENCHMARKS.md")
    results_dir: Path | None = None  # None: perf/results/bench-<timestamp>/
    duration_s: float = 10.0  # per in-process (runner, batch)
    warmup: int = 3
    min_iterations: int = 5
    concurrency: ConcurrencyRange = field(default_factory=lambda: ConcurrencyRange(1, 4, 1))
    fill_cap: int = 32  # each model is also measured where its batches fill, up to this level
    measurement_interval_ms: int = 5000
    stability_percentage: float | None = None
    max_trials: int | None = 6  # perf_analyzer's 10 windows x retries is long on a noisy machine
    retries: int = 1
    served_models: list[str] | None = None  # None: every model the local server loads
    torch_batches: tuple[int, ...] = (1, 4, 8)
    ort_threads: int = 2
    include_torch: bool = True
    extra_runners: list[InProcessRunner] = field(default_factory=list)
    include_openvino: bool = True  # OpenVINO in-process per precision (openvino_runners)
    command: str = ""  # how the bench was invoked, for the record
    progress: bool = True
    notes: str = ""


@dataclass
class BenchResult:
    """Everything measured, the ratios, and where they were written."""

    machine: dict
    versions: dict
    in_process: list[Timing]
    served: list[dict]  # tidy perf rows
    served_configs: dict
    ratios: list[dict]
    commands: list[str]
    out_md: Path
    results_dir: Path
    photo: str = ""
    untuned: list[dict] = field(default_factory=list)  # tidy perf rows with config.pbtxt.orig loaded (dnx tune)


def _ort_model(repository: Path, manifest: dict | None, spec: ModelSpec) -> tuple[str, Path, int]:
    from dnx.model_repository.render import parse_config
    from dnx.perf.report import variant_of

    for d in sorted(p for p in repository.iterdir() if p.is_dir()):
        if variant_of(d.name, manifest) == ("fp32", "onnxruntime") and (d / "1" / "model.onnx").is_file():
            cfg = parse_config((d / "config.pbtxt").read_text())
            return d.name, d / "1" / "model.onnx", max(cfg.max_batch_size, 1)
    raise InputError(f"{repository} has no fp32 ONNX Runtime model ({spec.model_name('onnxruntime', 'fp32')}); build one with "
                     "`dnx export --precision fp32` or pass --repository")


def _ratio(name: str, value: float | None, target: float, higher_is_better: bool, detail: str) -> dict:
    ok = None if value is None else (value >= target if higher_is_better else value <= target)
    return {"name": name, "value": value, "target": f"{'>=' if higher_is_better else '<='} {target:g}x",
            "pass": ok, "detail": detail}


def compute_ratios(in_process: list[Timing], served: list[dict], ort_model: str) -> list[dict]:
    """The issue's targets: served vs in-process ONNX Runtime and PyTorch eager."""
    ort = [t for t in in_process if t.family == "onnxruntime" and t.precision == "fp32"]
    torch1 = next((t for t in in_process if t.family == "pytorch" and t.batch == 1), None)
    mine = [r for r in served if r["model"] == ort_model and r["batch"] == 1]
    best = max(mine, key=lambda r: r["throughput"], default=None)
    c1 = next((r for r in mine if r["concurrency"] == 1), None)
    ort_best = max(ort, key=lambda t: t.throughput, default=None)
    ort1 = next((t for t in ort if t.batch == 1), None)
    out = []
    if best and ort_best:
        out.append(_ratio("served best throughput / in-process ONNX Runtime best", best["throughput"] / ort_best.throughput,
                          0.8, True, f"{best['throughput']:.1f} infer/s ({ort_model}, concurrency {best['concurrency']}) vs "
                          f"{ort_best.throughput:.1f} img/s (batch {ort_best.batch})"))
    if best and torch1:
        out.append(_ratio("served best throughput / PyTorch eager batch 1", best["throughput"] / torch1.throughput, 3.0, True,
                          f"{best['throughput']:.1f} vs {torch1.throughput:.1f} img/s"))
    if c1 and ort1:
        out.append(_ratio("served p99 at concurrency 1 / in-process ONNX Runtime batch-1 p99", c1["p99_ms"] / ort1.p99_ms,
                          1.5, False, f"{c1['p99_ms']:.1f} ms vs {ort1.p99_ms:.1f} ms (in-process median "
                          f"{ort1.p50_ms:.1f} ms)"))
    # The CPU-variants view (OpenVINO issue): the best served variant of any runtime.
    if served and in_process:
        sb = max(served, key=lambda r: r["throughput"])
        ib = max(in_process, key=lambda t: t.throughput)
        served_fig = f"{sb['model']} c{sb['concurrency']} {sb['throughput']:.1f} infer/s"
        out.append(_ratio("best served variant / fastest in-process runner", sb["throughput"] / ib.throughput, 0.85, True,
                          f"{served_fig} vs {ib.runner} batch {ib.batch} {ib.throughput:.1f} img/s"))
        if ort_best:
            out.append(_ratio("best served variant / in-process ONNX Runtime fp32 best", sb["throughput"] / ort_best.throughput,
                              1.6, True, f"{served_fig} vs {ort_best.throughput:.1f} img/s"))
        if torch1:
            out.append(_ratio("best served variant / PyTorch eager batch 1", sb["throughput"] / torch1.throughput, 3.0, True,
                              f"{served_fig} vs {torch1.throughput:.1f} img/s"))
        from dnx.perf.report import variant_of

        precision, runtime = variant_of(sb["model"], None)
        same = next((t for t in in_process if t.family == runtime and t.precision == precision and t.batch == 1), None)
        sc1 = next((r for r in served if r["model"] == sb["model"] and r["batch"] == 1 and r["concurrency"] == 1), None)
        if same and sc1:
            out.append(_ratio("best served variant: p99 at concurrency 1 / its in-process batch-1 p99", sc1["p99_ms"] / same.p99_ms,
                              1.5, False, f"{sb['model']} {sc1['p99_ms']:.1f} ms vs {same.runner} {same.p99_ms:.1f} ms "
                              f"(in-process median {same.p50_ms:.1f} ms)"))
    return out


def write_input_dir(image: np.ndarray, folder: Path, input_name: str = "input") -> Path:
    """perf_analyzer ``--input-data`` folder: one raw float32 file named after the input."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / input_name).write_bytes(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return folder


def run_bench(opts: BenchOptions, on_step: Callable[[str], None] | None = None) -> BenchResult:
    """Time the in-process baselines, sweep the served repository, write BENCHMARKS.md."""
    from dnx.manifest import library_versions, read_manifest
    from dnx.perf import bench_tuned, launched_server
    from dnx.perf.report import tidy_rows, write_report
    from dnx.perf.sweep import ensemble_internal_steps, inspect_server, sweep_with_fill
    from dnx.preprocess import photo_batch, sample_photographs
    from dnx.spec import get_spec

    step = on_step or (lambda msg: None)
    repo = Path(opts.repository)
    if not repo.is_dir():
        raise InputError(f"model repository {repo} does not exist; build it with `dnx export` or pass --repository")
    manifest = read_manifest(repo, required=False)
    spec = get_spec((manifest or {}).get("model", DEFAULT_MODEL.name))
    ort_name, ort_path, max_batch = _ort_model(repo, manifest, spec)
    results = Path(opts.results_dir or Path("perf/results") / _dt.datetime.now(_dt.timezone.utc).strftime("bench-%Y%m%dT%H%M%SZ"))
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
        runners.extend(bench_tuned.openvino_async_runners(repo, manifest))
    runners.extend(opts.extra_runners)
    timings: list[Timing] = []
    # PyTorch last: once it has run, its thread pool slows the other runtimes in this process
    # (ONNX Runtime batch 1 went from 30.6 to 48.7 ms here after a few PyTorch calls).
    runners.sort(key=lambda r: r.family == "pytorch")
    from dnx.signals import Interrupted

    try:
        for r in runners:
            step(f"in-process {r.name}, batch {', '.join(map(str, r.batch_sizes))}")
            timings.extend(time_runner(r, images, opts.duration_s, opts.warmup, opts.min_iterations))

        step(f"served: local Triton on {repo}, perf_analyzer concurrency {opts.concurrency}")
        # Kept with the results so the recorded perf_analyzer command lines can be rerun.
        input_dir = write_input_dir(images[0], results / "input-data", spec.input_name)
        with launched_server(repo, opts.served_models, results / "tritonserver.log") as server:
            found = inspect_server(server.grpc_url, "grpc", opts.served_models)
            # The bytes-in ensemble and its steps are not a runtime to compare with in-process ones
            # (perf/bytes_vs_tensor.py measures them); named with --models they are measured.
            steps = ensemble_internal_steps(found) if opts.served_models is None else {}
            models = [m for m in found if not m.variable_inputs and m.name not in steps
                      and not (opts.served_models is None and m.ensemble_steps)]
            sweep_opts = SweepOptions(
                url=server.grpc_url, protocol="grpc", concurrency=opts.concurrency, batch_sizes=(1,),
                measurement_interval_ms=opts.measurement_interval_ms, stability_percentage=opts.stability_percentage,
                max_trials=opts.max_trials, retries=opts.retries, input_data=str(input_dir), progress=opts.progress,
            )
            swept = sweep_with_fill(models, sweep_opts, results, opts.fill_cap)
            step("served: models tuned by `dnx tune` again with their config.pbtxt.orig (untuned)")
            untuned = bench_tuned.sweep_untuned(server.grpc_url, repo, models, sweep_opts, results, manifest,
                                                  opts.fill_cap)
    except Interrupted as exc:  # the server is stopped by now; keep what was measured
        atomic_write_text(results / "bench-partial.json", json.dumps(
            {"incomplete": str(exc), "in_process": [asdict(t) for t in timings]}, indent=2) + "\n")
        raise exc.with_detail(f"in-process timings in {results / 'bench-partial.json'}, served levels in "
                              f"{results / 'raw'}") from None
    write_report(swept, manifest=manifest)
    served = tidy_rows(swept, manifest)
    configs = {m.name: m.summary() for m in models}
    ratios = compute_ratios(timings, served, ort_name) + bench_tuned.tuned_ratios(timings, served, ort_name, manifest)
    commands = [opts.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])] + [r.command for r in swept.runs]
    result = BenchResult(machine, versions, timings, served, configs, ratios, commands, Path(opts.out_md), results, photo,
                         untuned)
    atomic_write_text(results / "bench.json", json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}, indent=2) + "\n")
    atomic_write_text(opts.out_md, render_markdown(result, opts) + kept_sections(opts.out_md))
    return result


KEEP_MARKER = "<!-- dnx bench keeps everything below this line -->"


def kept_sections(path: Path) -> str:
    """The part of an existing BENCHMARKS.md from :data:`KEEP_MARKER` on (other runs' figures), or ''."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    at = text.find(KEEP_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def _fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def render_markdown(res: BenchResult, opts: BenchOptions) -> str:
    """``perf/BENCHMARKS.md``."""
    from dnx.manifest import repository_calibration
    from dnx.perf import bench_tuned

    m = res.machine
    lines = [
        "# Benchmarks", "",
        f"Written by `dnx bench` (`make bench`) on {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}: "
        f"one run, one machine, the same preprocessed photographs for every runtime (scikit-image `{res.photo}` for "
        "perf_analyzer and batch 1, the shipped photographs cycled for larger batches).", "",
        f"Calibration: {repository_calibration(opts.repository)}", "",
        "## Machine", "",
        f"- CPU: {m['cpu']}, {m['cores']} logical cores, bf16: {'yes' if m['bf16'] else 'no'}",
        f"- RAM: {m['ram_gib']} GiB; load average at start: {', '.join(map(str, m['load_average']))}",
        f"- OS: {m['os']}; Python {m['python']}", "",
        "## Versions", "",
        ", ".join(f"{k} {v}" for k, v in res.versions.items() if v), "",
        "## Ratios vs targets", "",
        "| ratio | value | target | result | figures |", "|---|---|---|---|---|",
    ]
    for r in res.ratios:
        verdict = "n/a" if r["pass"] is None else ("pass" if r["pass"] else "**FAIL**")
        lines.append(f"| {r['name']} | {_fmt(r['value'], 2)}x | {r['target']} | {verdict} | {r['detail']} |")
    lines += ["", "## In-process", "",
              f"Each point runs for ~{opts.duration_s:g} s (at least {opts.min_iterations} runs) after {opts.warmup} warm-up "
              "runs; throughput = batch x iterations / time.", "",
              "| runner | batch | threads | iterations | mean ms | p50 ms | p99 ms | img/s | notes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in res.in_process:
        lines.append(f"| {t.runner} | {t.batch} | {t.threads or '-'} | {t.iterations} | {_fmt(t.mean_ms)} | "
                     f"{_fmt(t.p50_ms)} | {_fmt(t.p99_ms)} | {_fmt(t.throughput)} | {t.notes} |")
    lines += ["", "## Served by Triton (local server launched by dnx, perf_analyzer over gRPC, batch 1)", "",
              "| model | concurrency | infer/s | p50 ms | p99 ms | queue ms | compute ms | stable |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res.served:
        compute = r["server_compute_input_ms"] + r["server_compute_infer_ms"] + r["server_compute_output_ms"]
        lines.append(f"| `{r['model']}` | {r['concurrency']} | {_fmt(r['throughput'])} | {_fmt(r['p50_ms'])} | "
                     f"{_fmt(r['p99_ms'])} | {_fmt(r['server_queue_ms'])} | {_fmt(compute)} | "
                     f"{'yes' if r['stable'] else '**no**'} |")
    lines += ["", "Configs read back from the server:", ""]
    for name, c in res.served_configs.items():
        lines.append(f"- `{name}`: `{json.dumps(c)}`")
    lines += bench_tuned.untuned_markdown(res.untuned, res.served)
    if opts.notes:
        lines += ["", "## Notes", "", opts.notes.strip()]
    lines += ["", "## Commands", "", "```"] + res.commands + ["```", "",
              f"Full results (raw perf_analyzer CSVs, report, plots): `{res.results_dir}`."]
    return "\n".join(lines) + "\n"
