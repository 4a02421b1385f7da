#!/usr/bin/env python3
"""Where a served request's time goes: in-process runtime vs the local Triton path, in ONE run.

    PYTHONPATH=$PWD python perf/served_overhead.py --repository /tmp/i19repo \
        --models densenet121_onnx,densenet121_openvino_int8 --concurrency 1,2,4,16 \
        --window-ms 3000 --rounds 3 --baseline /tmp/i19-before --out perf/results/overhead

For each model of ``--models`` it measures, interleaved round by round:

* in-process (the same file, the same config ``parameters`` mapped by ``backend_common``): batch-1
  synchronous latency/throughput, and for OpenVINO also the AsyncInferQueue configuration
  (THROUGHPUT, 2 streams, 4 in flight, batch 1) that bounds what a served model can reach;
* served by the local ``tritonserver`` (dnx's Python-based backends), with perf_analyzer over
  gRPC at each concurrency, once with tensors in the gRPC messages and once with
  ``--shared-memory system``: infer/s, client p50/p99, perf_analyzer's server-side columns
  (queue, compute input, compute infer, compute output; verbose CSV) and the CPU seconds per
  request of tritonserver, of the model's ``triton_python_backend_stub`` and of perf_analyzer
  (``/proc/<pid>/stat`` utime+stime before/after, over the requests Triton counted).

``--baseline DIR`` names a copy of an older tree (``DIR/dnx/serving/backends`` and
``DIR/dnx/runtimes/backend_common.py``, e.g. ``git archive <commit> dnx | tar -x -C DIR``):
its backends are served by a second server beside the current ones, and every round measures
``before`` and ``after`` alternately (order flipped per round), so the machine's load hits both
alike. Medians over the rounds go to ``<out>/overhead.md`` (and ``results.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
SERVER_COLS = {"queue": "Server Queue", "c_in": "Server Compute Input", "infer": "Server Compute Infer",
               "c_out": "Server Compute Output"}


# ------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stub_pids(server_pid: int) -> list[int]:
    """The Python backend stubs tritonserver ``server_pid`` started (one per model instance)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if int(rest.split()[1]) == server_pid and name.startswith("triton_python"):
            out.append(int(entry.name))
    return sorted(out)


def perf_env() -> dict:
    """perf_analyzer's environment: the 2.50 wheel's binary links ``libcudart.so.12``."""
    import importlib.util

    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(Path(loc) / "lib"), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


@contextlib.contextmanager
def server_with_backends(repository: Path, model: str, tree: Path, log_file: Path):
    """A local TritonServer serving ``model`` through the backends of source tree ``tree``."""
    from dnx.serving import server as srv

    saved = srv.BACKENDS_SOURCE, srv.BACKEND_COMMON
    srv.BACKENDS_SOURCE = tree / "dnx" / "serving" / "backends"
    srv.BACKEND_COMMON = tree / "dnx" / "runtimes" / "backend_common.py"
    s = srv.TritonServer(repository, mode="local", grpc_port=0, http_port=0, metrics_port=0,
                         models=[model], log_file=log_file)
    try:
        s.start()
    finally:
        srv.BACKENDS_SOURCE, srv.BACKEND_COMMON = saved
    try:
        yield s
    finally:
        s.stop()


def triton_stats(http_url: str, model: str) -> dict:
    """Triton's cumulative counters for ``model``: requests, executions and ns per phase."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=30) as r:
        s = json.load(r)["model_stats"][0]
    inf = s["inference_stats"]
    return {"requests": int(inf["success"]["count"]), "executions": int(s.get("execution_count", 0))}


# ------------------------------------------------------------------ served


def perf_point(server, model: str, concurrency: int, shm: str, window_ms: int, out: Path, request_count: int = 0) -> dict:
    """One perf_analyzer run at ``concurrency``; its CSV row plus CPU seconds per request per process.

    Stability is not asked for (``-s 999``: three windows, whatever they measure): on a shared
    machine it would never come, and the rounds' medians stand in for it.
    """
    csv_path = out / f"{model}_{shm}_c{concurrency}_{time.time_ns()}.csv"
    window = (["--measurement-mode", "count_windows", "--measurement-request-count", str(request_count)]
              if request_count else ["--measurement-interval", str(window_ms)])
    from dnx.perf.analyzer.binary import find_perf_analyzer

    argv = [str(find_perf_analyzer()), "-m", model, "-u", server.grpc_url, "-i", "grpc", "-b", "1",
            "--concurrency-range", f"{concurrency}:{concurrency}", *window,
            "--stability-percentage", "999", "--max-trials", "6", "--shared-memory", shm,
            "--verbose-csv", "-f", str(csv_path)]
    pids = {"tritonserver": server._proc.pid, **{f"stub{i}": p for i, p in enumerate(stub_pids(server._proc.pid))}}
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    stats0 = triton_stats(server.http_url, model)
    t0 = os.times()
    proc = subprocess.run(argv, env=perf_env(), capture_output=True, text=True)
    t1 = os.times()
    stats1 = triton_stats(server.http_url, model)
    after = {k: cpu_seconds(p) for k, p in pids.items()}
    if proc.returncode != 0 or not csv_path.is_file():
        raise RuntimeError(f"perf_analyzer failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-600:]}")
    with open(csv_path, newline="") as f:
        row = next(csv.DictReader(f))
    n = max(1, stats1["requests"] - stats0["requests"])
    cpu = {k: (after[k] - before[k]) / n * 1000 for k in pids}
    stub = sum(v for k, v in cpu.items() if k.startswith("stub"))
    client = (t1.children_user + t1.children_system - t0.children_user - t0.children_system) / n * 1000
    return {
        "ips": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        **{k: float(row[c]) for k, c in SERVER_COLS.items()},  # microseconds per request
        "cpu_server_ms": cpu["tritonserver"], "cpu_stub_ms": stub, "cpu_client_ms": client,
        "batch": n / max(1, stats1["executions"] - stats0["executions"]),
    }


# ------------------------------------------------------------------ in-process


def _config(repository: Path, model: str) -> dict:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    msg = text_format.Parse((repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _timed(fn, seconds: float) -> dict:
    for _ in range(3):
        fn()
    lat, start, cpu = [], time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or len(lat) < 10:
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    cpu_ms = (time.process_time() - cpu) / len(lat) * 1000
    ms = np.asarray(lat) * 1000
    return {"ips": len(lat) / float(ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "cpu_ms": cpu_ms}


THROUGHPUT_2 = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"}


def _async(ov, compiled, batch: np.ndarray, seconds: float) -> dict:
    """An AsyncInferQueue(4) kept full with ``batch`` for ``seconds``: img/s and CPU ms per image."""
    queue = ov.AsyncInferQueue(compiled, 4)
    for _ in range(8):
        queue.start_async([batch], share_inputs=True)
    queue.wait_all()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        queue.start_async([batch], share_inputs=True)
        n += 1
    queue.wait_all()
    images = n * len(batch)
    return {"ips": images / (time.perf_counter() - start), "p50_ms": float("nan"), "p99_ms": float("nan"),
            "cpu_ms": (time.process_time() - cpu) / images * 1000}


def in_process(repository: Path, model: str, seconds: float) -> dict[str, dict]:
    """In-process figures for ``model``'s file with its config's parameters (``name -> {ips, p50, p99}``)."""
    from dnx.runtimes import backend_common as common

    cfg = _config(repository, model)
    params = common.config_parameters(cfg)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    version = repository / model / "1"
    if cfg.get("backend") == "onnxruntime":
        from dnx.runtimes.onnxruntime import session

        level = int(cfg.get("optimization", {}).get("graph", {}).get("level", 0))
        sess = session(version / (cfg.get("default_model_filename") or "model.onnx"), params, level)
        name = sess.get_inputs()[0].name
        res = _timed(lambda: sess.run(None, {name: x}), seconds)
        return {"sync b1": res}
    import openvino as ov

    from dnx.runtimes.openvino import compile_model

    path = version / (cfg.get("default_model_filename") or "model.xml")
    batch = int(cfg.get("max_batch_size", 0))
    compiled = compile_model(path, params, batch=batch)
    req = compiled.create_infer_request()
    # As served: one image per inference, zero-padded to the fixed batch.
    padded = np.concatenate([x, np.zeros((max(0, batch - 1), *x.shape[1:]), x.dtype)])
    out = {f"sync 1 image{f' padded to {batch}' if batch > 1 else ''} (config)":
           _timed(lambda: req.infer([padded], share_inputs=True), seconds)}
    del req, compiled
    out["async b1, 2 streams, 4 in flight"] = _async(ov, compile_model(path, THROUGHPUT_2, batch=1 if batch else 0),
                                                     x, seconds)
    if batch > 1:
        # The served config's batches, full, as bench's fastest in-process run keeps them in flight.
        out[f"async b{batch}, 2 streams, 4 in flight"] = _async(ov, compile_model(path, THROUGHPUT_2, batch=batch),
                                                               np.concatenate([x] * batch), seconds)
    return out


# ------------------------------------------------------------------ report


def _median(points: list[dict]) -> dict:
    return {k: statistics.median(p[k] for p in points) for k in points[0]}


def render(results: dict, args) -> str:
    lines = [f"# Served overhead ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Machine: {_cpu_model()}, {os.cpu_count()} CPUs, load average at start {args.load:.2f}. "
             f"Medians of {args.rounds} interleaved rounds, perf_analyzer windows "
             f"{f'of {args.request_count} requests' if args.request_count else f'{args.window_ms} ms'}, batch 1. "
             "Server columns: perf_analyzer's verbose CSV (us per request); CPU: utime+stime per request "
             "Triton counted; stub - in-process: the stub's CPU less the in-process sync run's; all three: "
             "tritonserver + stubs + perf_analyzer; cores / all three: the infer/s that CPU accounting allows "
             "with every core busy.", "",
             f"Command: `{' '.join(sys.argv)}`", ""]
    for model, res in results.items():
        lines += [f"## {model}", "", "| in-process | img/s | p50 ms | p99 ms | CPU ms/image |", "|---|---|---|---|---|"]
        best = 0.0
        for name, pts in res["in_process"].items():
            m = _median(pts)
            best = max(best, m["ips"])
            lines.append(f"| {name} | {m['ips']:.1f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['cpu_ms']:.2f} |")
        sync = _median(next(iter(res["in_process"].values())))
        sync_p99, sync_cpu = sync["p99_ms"], sync["cpu_ms"]
        lines += ["", "| backends | tensors | c | infer/s | / best in-process | p50 ms | p99 ms | p99 / in-process b1 "
                  "| queue us | compute in us | compute infer us | compute out us | CPU ms/req server | stub | stub - in-process "
                  "| perf_analyzer | all three | cores / all three | batch |", "|" + "---|" * 19]
        for key, pts in res["served"].items():
            label, shm, c = key.split("|")
            m = _median(pts)
            # What the CPU accounting alone allows: every core busy with these three processes' work.
            total, cores = m["cpu_server_ms"] + m["cpu_stub_ms"] + m["cpu_client_ms"], os.cpu_count() or 1
            lines.append(
                f"| {label} | {'system shm' if shm == 'system' else 'gRPC'} | {c} | {m['ips']:.1f} | {m['ips'] / best:.2f} "
                f"| {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['p99_ms'] / sync_p99:.2f} | {m['queue']:.0f} | {m['c_in']:.0f} "
                f"| {m['infer']:.0f} | {m['c_out']:.0f} | {m['cpu_server_ms']:.2f} | {m['cpu_stub_ms']:.2f} "
                f"| {m['cpu_stub_ms'] - sync_cpu:+.2f} "
                f"| {m['cpu_client_ms']:.2f} | {total:.2f} | {cores * 1000 / total:.1f} | {m['batch']:.2f} |")
        lines += ["", *_per_round(res)]
    return "\n".join(lines)


def _per_round(res: dict) -> list[str]:
    """Each round's served infer/s over that round's fastest in-process run, and the median of those ratios.

    The in-process runs and the served points of one round are minutes apart at most; the
    machine's speed drifts more than that between rounds, so a ratio within a round is the
    figure to quote, and its spread over the rounds says how far one run can be trusted.
    """
    rounds = min(len(pts) for pts in [*res["in_process"].values(), *res["served"].values()])
    keys = list(res["served"])
    lines = ["| round | fastest in-process img/s | " + " | ".join(
        f"{k.split('|')[0]} {'shm' if k.split('|')[1] == 'system' else 'gRPC'} c{k.split('|')[2]}: infer/s, ratio"
        for k in keys) + " |", "|" + "---|" * (2 + len(keys))]
    ratios = {k: [] for k in keys}
    for r in range(rounds):
        fastest = max(pts[r]["ips"] for pts in res["in_process"].values())
        cells = []
        for k in keys:
            ips = res["served"][k][r]["ips"]
            ratios[k].append(ips / fastest)
            cells.append(f"{ips:.1f}, {ips / fastest:.2f}")
        lines.append(f"| {r + 1} | {fastest:.1f} | " + " | ".join(cells) + " |")
    lines.append("| median (min-max) | | " + " | ".join(
        f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in ratios.values()) + " |")
    return lines + [""]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--models", default="densenet121_onnx,densenet121_openvino_int8")
    ap.add_argument("--concurrency", default="1,2,4,16")
    ap.add_argument("--shared-memory", default="none,system", help="perf_analyzer --shared-memory modes to measure")
    ap.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer time window")
    ap.add_argument("--request-count", type=int, default=0,
                    help="count windows of this many requests instead of time windows (slow models, high concurrency)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--in-process-seconds", type=float, default=5.0)
    ap.add_argument("--baseline", type=Path, help="older source tree whose backends are measured as 'before'")
    ap.add_argument("--out", type=Path, default=Path("perf/results/overhead"))
    args = ap.parse_args()
    args.load = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    trees = {"after": HERE} if args.baseline is None else {"before": args.baseline.resolve(), "after": HERE}
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = args.shared_memory.split(",")
    results = {}
    for model in args.models.split(","):
        res = results[model] = {"in_process": {}, "served": {}}
        with contextlib.ExitStack() as stack:
            servers = {label: stack.enter_context(server_with_backends(
                args.repository, model, tree, args.out / f"{model}_{label}_tritonserver.log")) for label, tree in trees.items()}
            for r in range(args.rounds):
                for name, fig in in_process(args.repository, model, args.in_process_seconds).items():
                    res["in_process"].setdefault(name, []).append(fig)
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for shm in modes:
                    for c in levels:
                        for label in order:
                            pt = perf_point(servers[label], model, c, shm, args.window_ms, args.out, args.request_count)
                            res["served"].setdefault(f"{label}|{shm}|{c}", []).append(pt)
                            print(f"round {r + 1} {model} {label} {shm} c{c}: {pt['ips']:.1f} infer/s, "
                                  f"p99 {pt['p99_ms']:.2f} ms, stub {pt['cpu_stub_ms']:.2f} ms CPU/req", flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = render(results, args)
    (args.out / "overhead.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
