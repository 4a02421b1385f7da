"""Reproduce the ONNX Runtime import-order effect noted in perf/BENCHMARKS.md.

    .venv/bin/python benchmarks/ort_import_order.py none    # onnxruntime imported first
    .venv/bin/python benchmarks/ort_import_order.py torch   # torch imported before onnxruntime
    .venv/bin/python benchmarks/ort_import_order.py openvino

Prints the median batch-1 latency (ms) over 30 runs of model_repository/densenet121_onnx, or of
the model named as a further argument (e.g. densenet121_onnx_int8).
"""

import sys
import time

import numpy as np

if "torch" in sys.argv[1:]:
    import torch  # noqa: F401
if "openvino" in sys.argv[1:]:
    import openvino  # noqa: F401
import onnxruntime as ort

so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
model = next((a for a in sys.argv[1:] if a.startswith("densenet121")), "densenet121_onnx")
sess = ort.InferenceSession(f"model_repository/{model}/1/model.onnx", so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
for _ in range(3):
    sess.run(None, {"input": x})
times = []
for _ in range(30):
    t0 = time.perf_counter()
    sess.run(None, {"input": x})
    times.append(time.perf_counter() - t0)
print(f"{' '.join(sys.argv[1:]) or 'none'}: median {np.median(times) * 1000:.1f} ms")
