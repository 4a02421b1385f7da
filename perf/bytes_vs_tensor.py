#!/usr/bin/env python3
"""Bytes-in (the ensemble) vs tensor-in (the same variant) on one local server, in one run.

    PYTHONPATH=$PWD python perf/bytes_vs_tensor.py --repository model_repository \
        --variants densenet121_onnx,densenet121_openvino_int8 --concurrency 1:3 --out perf/results/bytes

For each variant: a copy of the repository (model files hard-linked) whose ensemble is
re-rendered over that variant (dnx.model_repository.ensemble.render_ensemble), one local
tritonserver, perf_analyzer on the variant (one preprocessed photograph as float32 input) and
on the ensemble (real photographs, dnx.photos), alternating per concurrency level. Triton's
per-model statistics of the bytes run say where the time goes (preprocess, variant, softmax),
and an in-process timing splits preprocess_bytes into decoding and the transform.

Issue 20 adds, per variant: c1 p50 of a 12 MP phone JPEG vs a 640x480 JPEG through the ensemble
(the ratio the issue targets <= 2.0x), bytes-in throughput on 640x480 photographs, and in-process
preprocessing of both sizes, today's implementation vs the one before issue 20
(old_preprocess_bytes, below). ``--preprocess-configs 1:0,2:0,2:2000`` (instances:queue delay us)
compares preprocess-model configs through the ensemble over the first variant, same run.
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


# ---------------------------------------------------------------- dnx.preprocess before issue 20
# Full decode, resize the whole picture then crop, broadcast normalise: kept here, for the
# in-process comparison only (nothing in dnx uses it).


def old_preprocess_pil(image, spec):
    import numpy as np

    from dnx.preprocess import MAX_ASPECT, _resample, _resized_size, to_rgb

    image = to_rgb(image)
    w, h = image.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ValueError(f"image is {w}x{h}, more than {MAX_ASPECT}:1")
    image = image.resize(_resized_size(w, h, spec.resize), _resample(spec.interpolation))
    w, h = image.size
    top, left = int(round((h - spec.crop) / 2.0)), int(round((w - spec.crop) / 2.0))
    image = image.crop((left, top, left + spec.crop, top + spec.crop))
    arr = np.empty((3, spec.crop, spec.crop), dtype=np.float32)
    arr[...] = np.asarray(image).transpose(2, 0, 1)
    arr /= np.float32(255.0)
    arr -= np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    arr /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return arr


def old_preprocess_bytes(data: bytes, spec):
    from PIL import Image

    from dnx.preprocess import MAX_PIXELS

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"image is {w}x{h}, above the limit")
        img.load()
        return old_preprocess_pil(img, spec)


def sized_jpegs(size: tuple[int, int]) -> list[tuple[str, bytes]]:
    """Photographs made into ``size`` JPEGs (q90, dnx.photos.synthesize), from five shipped photographs."""
    from dnx.photos import synthesize
    from dnx.preprocess import sample_photographs

    w, h = size
    return [(f"{p.stem}_{w}x{h}.jpg", synthesize(size, p, seed=i)) for i, p in enumerate(sample_photographs()[:5])]


def old_vs_new(blobs, spec, repeats: int) -> dict:
    """In-process ms per image, best of 3 passes: the implementation before issue 20 vs today's."""
    from dnx.preprocess import preprocess_bytes

    def best(fn):
        fn(blobs[0][1], spec)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(repeats):
                for _, blob in blobs:
                    fn(blob, spec)
            runs.append((time.perf_counter() - t0) * 1000 / (repeats * len(blobs)))
        return min(runs)

    old, new = best(old_preprocess_bytes), best(preprocess_bytes)
    return {"old_ms": round(old, 2), "new_ms": round(new, 2), "new_over_old": round(new / old, 3)}


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


def _measure(server_url, model, level, input_data, args, out_dir):
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.sweep import SweepOptions, sweep

    opts = SweepOptions(url=server_url, concurrency=ConcurrencyRange(level, level),
                        measurement_interval_ms=args.measurement_interval, stability_percentage=20,
                        max_trials=6, retries=1, progress=False, input_data=str(input_data))
    res = sweep([model], opts, out_dir)
    return [vars(m) for m in res.measurements[(model.name, 1)]]


def _serve(work, spec, variant, log):
    from dnx.serving.server import TritonServer

    return TritonServer(work, grpc_port=0, http_port=0, metrics_port=0, log_file=log,
                        models=[spec.ensemble_name, spec.preprocess_name, variant, spec.softmax_name])


def main() -> None:
    from dnx.manifest import read_manifest
    from dnx.model_repository.ensemble import render_ensemble, render_preprocess
    from dnx.model_repository.layout import atomic_write_text
    from dnx.perf.bench import write_input_dir
    from dnx.perf.levels import ConcurrencyRange
    from dnx.perf.served import inspect_server
    from dnx.photos import photo_mix, write_input_data
    from dnx.preprocess import preprocess_bytes
    from dnx.spec import spec_from_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("--repository", type=Path, default=Path("model_repository"))
    ap.add_argument("--variants", required=True)
    ap.add_argument("--concurrency", default="1:3")
    ap.add_argument("--measurement-interval", type=int, default=3000)
    ap.add_argument("--preprocess-configs", default="", help="instances:queue_delay_us,... compared over the first variant")
    ap.add_argument("--out", type=Path, default=Path("perf/results/bytes-vs-tensor"))
    args = ap.parse_args()

    manifest = read_manifest(args.repository)
    spec = spec_from_manifest(manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    small, phone = sized_jpegs((640, 480)), sized_jpegs((4032, 3024))[:3]
    inputs = {"640x480": write_input_data(args.out / "jpeg-640x480.json", "image", small),
              "4032x3024": write_input_data(args.out / "jpeg-4032x3024.json", "image", phone),
              "mix": write_input_data(args.out / "jpeg-mix.json", "image", photo_mix())}
    tensor_dir = write_input_dir(preprocess_bytes(small[0][1], spec), args.out / "input-tensor", spec.input_name)
    results = {"load_before": os.getloadavg(), "jpegs": {n: len(b) for n, b in small},
               "phone_jpegs": {n: len(b) for n, b in phone},
               "in_process": in_process_split(small, spec),
               "old_vs_new": {"640x480": old_vs_new(small, spec, 10), "4032x3024": old_vs_new(phone, spec, 1)},
               "variants": {}, "preprocess_configs": {}}
    rng = ConcurrencyRange.parse(args.concurrency)
    for k, variant in enumerate(args.variants.split(",")):
        work = args.out / f"repo-{variant}"
        shutil.rmtree(work, ignore_errors=True)
        _link_copy(args.repository, work)
        entry = manifest["models"][variant]
        atomic_write_text(work / spec.ensemble_name / "config.pbtxt",
                          render_ensemble(spec, variant, entry["config"]["max_batch_size"]))
        steps = [spec.preprocess_name, variant, spec.softmax_name]
        with _serve(work, spec, variant, args.out / f"{variant}.log") as server:
            models = {m.name: m for m in inspect_server(server.grpc_url, "grpc", [variant, spec.ensemble_name])}
            rows = {variant: [], spec.ensemble_name: []}
            stats, p50 = {}, {}
            for level in rng.levels():  # alternate, so both see the same machine load
                for name in (variant, spec.ensemble_name):
                    data = tensor_dir if name == variant else inputs["640x480"]
                    before = _stats(server.grpc_url, steps + [spec.ensemble_name]) if name == spec.ensemble_name else None
                    rows[name].extend(_measure(server.grpc_url, models[name], level, data, args, args.out / f"{variant}-{name}-c{level}"))
                    if before is not None:
                        stats[level] = _per_request_ms(before, _stats(server.grpc_url, steps + [spec.ensemble_name]))
            for size in ("640x480", "4032x3024"):  # c1 latency of one image size at a time
                got = _measure(server.grpc_url, models[spec.ensemble_name], 1, inputs[size], args,
                               args.out / f"{variant}-p50-{size}")
                p50[size] = got[0]["p50_ms"] if got else None
            results["variants"][variant] = {"rows": rows, "server_stats_bytes_run": stats, "c1_p50_ms": p50}
        if k == 0 and args.preprocess_configs:
            for item in args.preprocess_configs.split(","):
                instances, delay = (int(x) for x in item.split(":"))
                atomic_write_text(work / spec.preprocess_name / "config.pbtxt",
                                  render_preprocess(spec, max(16, entry["config"]["max_batch_size"]), instances, delay))
                with _serve(work, spec, variant, args.out / f"{variant}-pre{instances}-{delay}.log") as server:
                    model = inspect_server(server.grpc_url, "grpc", [spec.ensemble_name])[0]
                    results["preprocess_configs"][item] = [
                        m for level in rng.levels()
                        for m in _measure(server.grpc_url, model, level, inputs["mix"], args, args.out / f"pre-{item.replace(':', '-')}-c{level}")]
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
             f"{ip['resize_crop_normalize_ms']} ms = {ip['total_ms']} ms (one core).", "",
             "In-process preprocessing per image, before issue 20 vs now (best of 3 passes, one core):", "",
             "| JPEG | before ms | now ms | now / before |", "|---|---|---|---|"]
    for size, v in r.get("old_vs_new", {}).items():
        lines.append(f"| {size} | {v['old_ms']} | {v['new_ms']} | {v['new_over_old']:.2f} |")
    lines.append("")
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
        p50 = v.get("c1_p50_ms") or {}
        if p50.get("640x480") and p50.get("4032x3024"):
            lines += [f"c1 p50 through the ensemble: 640x480 JPEG {p50['640x480']:.1f} ms, 12 MP JPEG {p50['4032x3024']:.1f} ms: "
                      f"**{p50['4032x3024'] / p50['640x480']:.2f}x**.", ""]
    if r.get("preprocess_configs"):
        lines += ["Preprocess model configs through the ensemble (photo mix incl. a 12 MP phone JPEG), infer/s per concurrency:", "",
                  "| instances:queue delay us | " + " | ".join(f"c{m['concurrency']}" for m in next(iter(r["preprocess_configs"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(r["preprocess_configs"].values())))]
        for item, rows in r["preprocess_configs"].items():
            lines.append(f"| {item} | " + " | ".join(f"{m['throughput']:.1f} (p99 {m['p99_ms']:.0f} ms)" for m in rows) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
