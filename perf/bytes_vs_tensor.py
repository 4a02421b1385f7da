#!/usr/bin/env python3
"""Bytes-in (the ensemble) vs tensor-in (the same variant) on one local server, in one run.

    PYTHONPATH=$PWD python perf/bytes_vs_tensor.py --repository model_repository \
        --variants densenet121_onnx,densenet121_openvino_int8 --concurrency 1:3 --out perf/results/bytes

For each variant: a copy of the repository (model files hard-linked) whose ensemble is
re-rendered over that variant (dnx.model_repository.ensemble.render_ensemble), one local
tritonserver, perf_analyzer on the variant (one preprocessed photograph as float32 input) and
on the ensemble (real JPEGs, dnx.perf.images), alternating per concurrency level. Triton's
per-model statistics of the bytes run say where the time goes (preprocess, variant, softmax),
and an in-process timing splits preprocess_bytes into decoding and the transform.
Prints a Markdown section; writes results.json beside the perf_analyzer logs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
from pathlib import Path



def _link_copy(src: Path, dst: Path) -> None:
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def _stats(url: str, names: list[str]) -> dict:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    out = {}
    try:
        for name in names:
            s = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
            inf = s["inference_stats"]
            out[name] = {"requests": int(inf["success"].get("count", 0)), "executions": int(s.get("execution_count", 0)),
                         **{k: int(inf[k].get("ns", 0)) for k in ("queue", "compute_input", "compute_infer", "compute_output")}}
    finally:
        client.close()
    return out


def _per_request_ms(before: dict, after: dict) -> dict:
    out = {}
    for name, a in after.items():
        b = before[name]
        n = a["requests"] - b["requests"]
        out[name] = {"requests": n, "batches": a["executions"] - b["executions"],
                     **{k: round((a[k] - b[k]) / max(n, 1) / 1e6, 3) for k in ("queue", "compute_input", "compute_infer", "compute_output")}}
    return out


def in_process_split(jpegs, spec, repeats: int = 20) -> dict:
    """ms per image: decode (PIL open + load) vs the whole preprocess_bytes."""
    from PIL import Image

    from dnx.preprocess import preprocess_bytes

    def timed(fn):
        t0 = time.perf_counter()
        for _ in range(repeats):
            for _, blob in jpegs:
                fn(blob)
        return (time.perf_counter() - t0) * 1000 / (repeats * len(jpegs))

    def decode(blob):
        with Image.open(io.BytesIO(blob)) as img:
            img.load()

    timed(lambda b: preprocess_bytes(b, spec))  # warm-up
    whole = timed(lambda b: preprocess_bytes(b, spec))
    dec = timed(decode)
    return {"decode_ms": round(dec, 2), "resize_crop_normalize_ms": round(whole - dec, 2), "total_ms": round(whole, 2)}


def main() -> None:
    from dnx.manifest import read_manifest
    from dnx.model_repository.ensemble import render_ensemble
    from dnx.model_repository.layout import atomic_write_text
    from dnx.perf.bench import write_input_dir
    from dnx.perf.images import benchmark_jpegs
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.served import inspect_server
    from dnx.perf.sweep import SweepOptions, sweep
    from dnx.preprocess import load_image, sample_photographs
    from dnx.serving.server import TritonServer
    from dnx.spec import spec_from_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("--repository", type=Path, default=Path("model_repository"))
    ap.add_argument("--variants", required=True)
    ap.add_argument("--concurrency", default="1:3")
    ap.add_argument("--measurement-interval", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path("perf/results/bytes-vs-tensor"))
    args = ap.parse_args()

    manifest = read_manifest(args.repository)
    spec = spec_from_manifest(manifest)
    jpegs = benchmark_jpegs()
    args.out.mkdir(parents=True, exist_ok=True)
    tensor_dir = write_input_dir(load_image(sample_photographs()[3], spec), args.out / "input-tensor", spec.input_name)
    results = {"load_before": os.getloadavg(), "jpegs": {n: len(b) for n, b in jpegs},
               "in_process": in_process_split(jpegs, spec), "variants": {}}
    rng = ConcurrencyRange.parse(args.concurrency)
    for variant in args.variants.split(","):
        work = args.out / f"repo-{variant}"
        shutil.rmtree(work, ignore_errors=True)
        _link_copy(args.repository, work)
        entry = manifest["models"][variant]
        atomic_write_text(work / spec.ensemble_name / "config.pbtxt",
                          render_ensemble(spec, variant, entry["config"]["max_batch_size"]))
        steps = [spec.preprocess_name, variant, spec.softmax_name]
        with TritonServer(work, grpc_port=0, http_port=0, metrics_port=0, log_file=args.out / f"{variant}.log",
                          models=[spec.ensemble_name, *steps]) as server:
            models = {m.name: m for m in inspect_server(server.grpc_url, "grpc", [variant, spec.ensemble_name])}
            rows = {variant: [], spec.ensemble_name: []}
            stats = {}
            for level in rng.levels():  # alternate, so both see the same machine load
                for name in (variant, spec.ensemble_name):
                    opts = SweepOptions(url=server.grpc_url, concurrency=ConcurrencyRange(level, level),
                                        measurement_interval_ms=args.measurement_interval, stability_percentage=20,
                                        max_trials=6, retries=1, progress=False, input_data=str(tensor_dir))
                    before = _stats(server.grpc_url, steps + [spec.ensemble_name]) if name == spec.ensemble_name else None
                    res = sweep([models[name]], opts, args.out / f"{variant}-{name}-c{level}")
                    rows[name].extend(vars(m) for m in res.measurements[(name, 1)])
                    if before is not None:
                        stats[level] = _per_request_ms(before, _stats(server.grpc_url, steps + [spec.ensemble_name]))
            results["variants"][variant] = {"rows": rows, "server_stats_bytes_run": stats}
    results["load_after"] = os.getloadavg()
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    print(markdown(results, spec, args))


def markdown(r: dict, spec, args) -> str:
    sizes = list(r["jpegs"].values())
    ip = r["in_process"]
    lines = [f"Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in r['load_before'])}, after: "
             f"{'/'.join(f'{x:.1f}' for x in r['load_after'])}.",
             f"JPEGs: {len(sizes)} real photographs, {min(sizes) // 1024}-{max(sizes) // 1024} KB (mean {sum(sizes) / len(sizes) / 1024:.0f} KB).",
             f"In-process `preprocess_bytes` per image: decode {ip['decode_ms']} ms + resize/crop/normalize "
             f"{ip['resize_crop_normalize_ms']} ms = {ip['total_ms']} ms (one core).", ""]
    for variant, v in r["variants"].items():
        lines += [f"**{variant}** (tensor-in) vs **{spec.ensemble_name}** over it (bytes-in), batch-1 requests, gRPC:", "",
                  "| concurrency | tensor-in infer/s | bytes-in infer/s | ratio | tensor p99 ms | bytes p99 ms | preprocess compute ms/req | variant compute ms/req | softmax compute ms/req | preprocess queue ms/req |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        t = {m["concurrency"]: m for m in v["rows"][variant]}
        b = {m["concurrency"]: m for m in v["rows"][spec.ensemble_name]}
        for c in sorted(set(t) & set(b)):
            s = v["server_stats_bytes_run"].get(c) or v["server_stats_bytes_run"].get(str(c)) or {}
            pre, var, soft = (s.get(n, {}) for n in (spec.preprocess_name, variant, spec.softmax_name))
            lines.append(f"| {c} | {t[c]['throughput']:.1f} | {b[c]['throughput']:.1f} | {b[c]['throughput'] / t[c]['throughput']:.2f} | "
                         f"{t[c]['p99_ms']:.1f} | {b[c]['p99_ms']:.1f} | {pre.get('compute_infer', float('nan')):.2f} | "
                         f"{var.get('compute_infer', float('nan')):.2f} | {soft.get('compute_infer', float('nan')):.2f} | "
                         f"{pre.get('queue', float('nan')):.2f} |")
        best_t = max(m["throughput"] for m in v["rows"][variant])
        best_b = max(m["throughput"] for m in v["rows"][spec.ensemble_name])
        lines += ["", f"Best: tensor-in {best_t:.1f}, bytes-in {best_b:.1f} infer/s: **{best_b / best_t:.2f}x**.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
