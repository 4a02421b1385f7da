"""``make bench`` after ``dnx tune``: untuned vs tuned served figures, and the fastest in-process OpenVINO.

* :func:`openvino_async_runners`: OpenVINO with the THROUGHPUT hint, 2 streams and an
  ``AsyncInferQueue`` (the fastest in-process OpenVINO seen on 2 cores), per OpenVINO model.
* :func:`sweep_untuned`: models whose ``config.pbtxt.orig`` exists (``dnx tune`` wrote a new
  config) are loaded once more with that previous config through ``load_model(config=...)``
  into the same server and swept the same way, so both figures come from one run.
* :func:`tuned_ratios`: the issue-11 targets (served vs the fastest in-process configuration of
  the same runtime and precision, batch 1..8, sync or async).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from dnx._lazy import lazy_import
from dnx.perf.bench import InProcessRunner, Timing, _model_file, _ratio, precision_parameters

ORIG_NAME = "config.pbtxt.orig"


class _AsyncInfer:
    """Each call queues one batch; it blocks only while every request of the queue is busy, so
    calls per second in steady state is the queue's throughput. Waits for the queue when dropped."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, x: np.ndarray) -> None:
        self.queue.start_async({0: x})

    def __del__(self):
        with contextlib.suppress(Exception):
            self.queue.wait_all()


def openvino_async_runner(model_path: Path, precision: str, parameters: dict[str, str] | None = None,
                          streams: int = 2, jobs: int = 4, batch_sizes=(1, 4, 8),
                          threads: int | None = None) -> InProcessRunner:
    """OpenVINO CPU, THROUGHPUT hint, ``streams`` streams, an ``AsyncInferQueue`` of ``jobs`` requests.

    ``parameters`` (the served config's) keep the served precision choice. Timing columns of this
    runner are the waits between submissions, not request latencies.
    """
    threads = threads or os.cpu_count()
    props = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(streams), "INFERENCE_NUM_THREADS": str(threads)}
    parameters = precision_parameters(parameters)

    def load(batch: int):
        from dnx.runtimes import openvino

        ov = lazy_import("openvino")
        compiled = openvino.compile_model(model_path, parameters, batch=batch, properties=props)
        return _AsyncInfer(ov.AsyncInferQueue(compiled, jobs))

    return InProcessRunner(f"openvino {precision} async", "openvino", precision, tuple(batch_sizes), load, threads,
                           f"THROUGHPUT hint, {streams} streams, AsyncInferQueue({jobs}), {threads} threads, "
                           f"{Path(model_path).parent.parent.name}; latency columns = waits between submissions")


def openvino_async_runners(repository: Path, manifest: dict | None) -> list[InProcessRunner]:
    """One async runner per OpenVINO model of the repository (none without openvino)."""
    from dnx._lazy import has_module
    from dnx.perf.report import variant_of

    if not has_module("openvino"):
        return []
    out = []
    for d in sorted(p for p in Path(repository).iterdir() if p.is_dir()):
        precision, runtime = variant_of(d.name, manifest)
        path = _model_file(Path(repository), d.name)
        if runtime == "openvino" and path is not None:
            params = (((manifest or {}).get("models") or {}).get(d.name) or {}).get("config", {}).get("parameters")
            out.append(openvino_async_runner(path, precision, params))
    return out


def untuned_configs(repository: Path, names: list[str]) -> dict[str, str]:
    """``{model: previous config as Triton JSON}`` for models that ``dnx tune`` rewrote."""
    from dnx.model_repository.config_edit import load_model_json

    out = {}
    for name in names:
        orig = Path(repository) / name / ORIG_NAME
        if orig.is_file():
            out[name] = load_model_json(orig.read_text())
    return out


def sweep_untuned(url: str, repository: Path, models: list, sweep_opts, results: Path, manifest: dict | None,
                  fill_cap: int = 32) -> list[dict]:
    """Sweep each tuned model again with its ``config.pbtxt.orig`` loaded; the repository's config is
    reloaded afterwards. Rows are tidy rows (:func:`dnx.perf.report.tidy_rows`)."""
    from dnx.perf.report import tidy_rows
    from dnx.perf.sweep import ServedModel, sweep_with_fill

    configs = untuned_configs(repository, [m.name for m in models])
    if not configs:
        return []
    import json

    client = lazy_import("tritonclient.grpc").InferenceServerClient(url=url)
    try:
        for name, cfg in configs.items():
            client.load_model(name, config=cfg)
        served = [ServedModel(m.name, m.version, json.loads(configs[m.name])) for m in models if m.name in configs]
        swept = sweep_with_fill(served, sweep_opts, Path(results) / "untuned", fill_cap)
    finally:
        from dnx.model_repository.config_edit import repository_config_json

        for name in configs:
            with contextlib.suppress(Exception):
                client.load_model(name, config=repository_config_json(Path(repository) / name))
        client.close()
    return tidy_rows(swept, manifest)


def _best(rows: list[dict], model: str) -> dict | None:
    return max((r for r in rows if r["model"] == model and r["batch"] == 1), key=lambda r: r["throughput"], default=None)


def tuned_ratios(in_process: list[Timing], served: list[dict], ort_model: str, manifest: dict | None = None) -> list[dict]:
    """Issue 11's targets: the best served variant vs the fastest in-process run of its runtime and precision
    (batch 1..8, sync or async), and served ONNX Runtime fp32 vs in-process ONNX Runtime fp32 best."""
    from dnx.perf.report import variant_of

    out = []
    if served:
        sb = max(served, key=lambda r: r["throughput"])
        precision, runtime = variant_of(sb["model"], manifest)
        same = [t for t in in_process if t.family == runtime and t.precision == precision and t.batch <= 8]
        ib = max(same, key=lambda t: t.throughput, default=None)
        if ib:
            out.append(_ratio("best served variant / fastest in-process run of its runtime and precision (batch 1..8)",
                              sb["throughput"] / ib.throughput, 0.9, True,
                              f"{sb['model']} c{sb['concurrency']} {sb['throughput']:.1f} infer/s vs {ib.runner} "
                              f"batch {ib.batch} {ib.throughput:.1f} img/s"))
    ort = max((t for t in in_process if t.family == "onnxruntime" and t.precision == "fp32"), key=lambda t: t.throughput,
              default=None)
    so = _best(served, ort_model)
    if ort and so:
        out.append(_ratio("served ONNX Runtime fp32 / in-process ONNX Runtime fp32 best (tuned)", so["throughput"] / ort.throughput,
                          0.95, True, f"{ort_model} c{so['concurrency']} {so['throughput']:.1f} infer/s vs batch {ort.batch} "
                          f"{ort.throughput:.1f} img/s"))
    return out


def untuned_markdown(untuned: list[dict], served: list[dict]) -> list[str]:
    """The side-by-side table for BENCHMARKS.md (empty when nothing was tuned)."""
    if not untuned:
        return []
    lines = ["", "## Untuned vs tuned (same server, same run)", "",
             f"`dnx tune` rewrote these configs; the untuned figures load the previous `{ORIG_NAME}` through "
             "`load_model(config=...)` into the same server. Best batch-1 throughput over the swept concurrency.", "",
             "| model | untuned infer/s | at c | p99 ms | tuned infer/s | at c | p99 ms | tuned / untuned |",
             "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in untuned):
        u, t = _best(untuned, model), _best(served, model)
        if not u or not t:
            continue
        lines.append(f"| `{model}` | {u['throughput']:.1f} | {u['concurrency']} | {u['p99_ms']:.1f} | {t['throughput']:.1f} | "
                     f"{t['concurrency']} | {t['p99_ms']:.1f} | {t['throughput'] / u['throughput']:.2f}x |")
    return lines
