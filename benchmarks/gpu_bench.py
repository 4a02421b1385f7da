"""PyTorch CUDA throughput of a torchvision classifier, eager and ``torch.compile``, at several batches.

Run on a machine with an NVIDIA GPU (no TensorRT or tritonserver needed)::

    python benchmarks/gpu_bench.py --out results/ --deadline-s 360

For each (mode, dtype) and batch it warms up, then times ``--iters`` forward passes with CUDA
events, ``--repeats`` times, rotating among 4 random input batches (never zeros), and reports
the median as img/s. Each result is checked against eager FP32 on the same input (cosine, max
abs). Results are appended to ``gpu-bench.json`` after every point, so a run cut short keeps
what it measured; sections that would start past ``--deadline-s`` are recorded as skipped.
``--device cpu --iters 2`` is a smoke test of the script itself (figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = (
    # (name, dtype, compile mode or None). reduce-overhead = inductor + CUDA graphs: DenseNet-121's
    # ~400 small kernels make small batches launch-bound, which graphs remove.
    ("eager", "fp32", None),
    ("eager", "fp16", None),
    ("compile", "fp32", "reduce-overhead"),
    ("compile", "fp16", "reduce-overhead"),
)


def device_info(torch, device: str) -> dict:
    """What the figures were measured on."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpu": platform.processor() or platform.machine()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    return info


def time_model(torch, fn, inputs, iters: int, repeats: int, device: str) -> list[float]:
    """Seconds per forward pass, one figure per repeat (CUDA events on the GPU)."""
    out = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(iters):
                fn(inputs[i % len(inputs)])
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end) / 1000 / iters)
        else:
            t0 = time.perf_counter()
            for i in range(iters):
                fn(inputs[i % len(inputs)])
            out.append((time.perf_counter() - t0) / iters)
    return out


def bench(args) -> dict:
    import torch

    from dnx.exporter.torch_export import load_torch_model
    from dnx.spec import get_spec

    spec = get_spec(args.model)
    device = args.device
    began = time.monotonic()
    result = {"model": spec.name, "weights": "random (seed 0): throughput does not depend on the weights",
              "machine": device_info(torch, device), "iters": args.iters, "repeats": args.repeats,
              "points": [], "skipped": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():
        (out / "gpu-bench.json").write_text(json.dumps(result, indent=2))

    base, _ = load_torch_model(spec, weights="random", seed=0)
    base = base.to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(1)
    inputs = {b: [torch.randn(b, *spec.input_shape, generator=gen).to(device) for _ in range(4)]
              for b in args.batches}
    with torch.inference_mode():
        reference = {b: base(inputs[b][0]).float().clone() for b in args.batches}

    torch._dynamo.config.automatic_dynamic_shapes = False  # one static graph per batch size
    for name, dtype, cmode in MODES:
        if cmode and args.no_compile:
            continue
        label = f"{name} {dtype}" + (f" ({cmode})" if cmode else "")
        model = load_torch_model(spec, weights="random", seed=0)[0].to(device).eval()
        model = model.to(memory_format=torch.channels_last)
        if dtype == "fp16":
            model = model.half()
        fn_model = torch.compile(model, mode=cmode, dynamic=False) if cmode else model
        for b in args.batches:
            if time.monotonic() - began > args.deadline_s:
                result["skipped"].append({"mode": label, "batch": b, "why": f"past --deadline-s {args.deadline_s}"})
                save()
                continue
            xs = [x.to(memory_format=torch.channels_last) for x in inputs[b]]
            if dtype == "fp16":
                xs = [x.half() for x in xs]

            def fn(x, _m=fn_model):
                with torch.inference_mode():
                    return _m(x)

            t0 = time.monotonic()
            try:
                got = fn(xs[0]).float().clone()  # first call: compiles when compiled
                if device == "cuda":
                    torch.cuda.synchronize()
                first_s = time.monotonic() - t0
                for _ in range(args.warmup):
                    fn(xs[0])
                if device == "cuda":
                    torch.cuda.synchronize()
                secs = time_model(torch, fn, xs, args.iters, args.repeats, device)
            except Exception as exc:  # noqa: BLE001 - a failing mode is a result, the others go on
                result["points"].append({"mode": label, "batch": b, "error": f"{type(exc).__name__}: {exc}"[:500]})
                save()
                continue
            ref = reference[b]
            cos = torch.nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1)).min().item()
            med = statistics.median(secs)
            point = {"mode": label, "batch": b, "img_per_s": round(b / med, 1), "ms_per_batch": round(med * 1000, 3),
                     "spread_pct": round(100 * (max(secs) - min(secs)) / med, 1),
                     "first_call_s": round(first_s, 1), "cos_min_vs_eager_fp32": round(cos, 6),
                     "max_abs_vs_eager_fp32": float(f"{(got - ref).abs().max().item():.3g}")}
            result["points"].append(point)
            save()
            print(f"{label:32s} b{b:<3d} {point['img_per_s']:>9.1f} img/s  {point['ms_per_batch']:>8.3f} ms  "
                  f"first call {point['first_call_s']:>5.1f} s  cos {point['cos_min_vs_eager_fp32']:.6f}", flush=True)
        del fn_model, model
        if device == "cuda":
            torch.cuda.empty_cache()
    result["seconds"] = round(time.monotonic() - began, 1)
    save()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="densenet121")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--batches", default="1,8,16", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--deadline-s", type=float, default=360.0)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", default="perf/results/gpu-bench")
    args = p.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("Error: no CUDA GPU visible to torch; run on a GPU machine or pass --device cpu", file=sys.stderr)
            return 1
    result = bench(args)
    print(f"done in {result['seconds']} s; {len(result['points'])} points, {len(result['skipped'])} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
