"""OpenVINO int8: the full-range graph dnx used to write against the 7-bit-weight graph it writes now.

Both graphs come from dnx's own quantizer (symmetric activations, per-channel weights, the bundled
photographs), differing only in ``weight_bits``. For each: min cosine against fp32 on the parity
inputs, then in-process throughput and CPU time per image (OpenVINO LATENCY hint, one synchronous
request, batch 1 and 8) in interleaved rounds, the order alternating, with the per-round ratio
new/old and its median. Prints a Markdown table headed by the CPU (model and ISA flags).

    .venv/bin/python benchmarks/int8_graphs.py --rounds 6 --seconds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dnx.cpu import this_cpu
from dnx.exporter.calibration import calibration_set
from dnx.exporter.precision import Int8FromOnnx
from dnx.exporter.torch_export import OnnxFromTorch, load_torch_model
from dnx.parity import cosine_per_sample
from dnx.preprocess import probe_inputs
from dnx.runtimes.openvino import compile_model

GRAPHS = {"full range (8-bit weights)": 8, "7-bit weights": 7}


def _outputs(request, data: np.ndarray) -> np.ndarray:
    return np.concatenate([request.infer([data[i:i + 1]])[0].copy() for i in range(len(data))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed window per graph, batch and round")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dnx-int8-graphs-"))
    fp32 = work / "fp32.onnx"
    OnnxFromTorch(load_torch_model(weights="random", seed=0)[0])(fp32)
    calib = calibration_set(None, progress=False)
    paths = {}
    for name, bits in GRAPHS.items():
        paths[name] = work / f"int8_{bits}.onnx"
        Int8FromOnnx(fp32, calib, symmetric=True, weight_bits=bits, cache_dir=None, progress=False)(paths[name])
    x = probe_inputs()[0]
    ref = _outputs(compile_model(fp32, {"INFERENCE_PRECISION_HINT": "f32"}, batch=1).create_infer_request(), x)
    print(f"CPU: {this_cpu().describe()}; {len(x)} parity inputs; {args.rounds} rounds x {args.seconds} s\n")
    for name, path in paths.items():
        out = _outputs(compile_model(path, {"PERFORMANCE_HINT": "LATENCY"}, batch=1).create_infer_request(), x)
        print(f"- {name}: min cosine vs fp32 {cosine_per_sample(ref, out).min():.5f}")
    print("\n| batch | graph | img/s per round | median | CPU ms/img median | new/old per round | median ratio |")
    print("|---|---|---|---|---|---|---|")
    for batch in (1, 8):
        reqs = {n: compile_model(p, {"PERFORMANCE_HINT": "LATENCY"}, batch=batch).create_infer_request() for n, p in paths.items()}
        data = np.repeat(x[:1], batch, axis=0)
        for r in reqs.values():
            for _ in range(3):
                r.infer([data])
        img_s = {n: [] for n in reqs}
        cpu_ms = {n: [] for n in reqs}
        for rnd in range(args.rounds):
            for name in (list(reqs) if rnd % 2 == 0 else list(reqs)[::-1]):
                n, t0, c0 = 0, time.perf_counter(), time.process_time()
                while time.perf_counter() - t0 < args.seconds:
                    reqs[name].infer([data])
                    n += batch
                img_s[name].append(n / (time.perf_counter() - t0))
                cpu_ms[name].append((time.process_time() - c0) / n * 1000)
        old, new = list(GRAPHS)
        ratios = [b / a for a, b in zip(img_s[old], img_s[new])]
        for name in reqs:
            per = ", ".join(f"{v:.1f}" for v in img_s[name])
            tail = (f"{', '.join(f'{r:.3f}' for r in ratios)} | **{statistics.median(ratios):.3f}**" if name == new else " | ")
            print(f"| {batch} | {name} | {per} | {statistics.median(img_s[name]):.1f} | "
                  f"{statistics.median(cpu_ms[name]):.2f} | {tail} |")


if __name__ == "__main__":
    main()
