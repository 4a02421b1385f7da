#!/usr/bin/env bash
# One device-machine run (GPU, no TensorRT, no tritonserver): PyTorch CUDA eager + torch.compile
# DenseNet-121 at batch 1/8/16, then the GPU-target export minus TensorRT. Writes under $OUT.
# Wheels dnx needs beyond that machine's image travel in .whl/ (see perf/BENCHMARKS.md).
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      $(ls .whl/*.whl | grep -v protobuf) || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  # tritonclient's generated protobuf code may need the protobuf 4.x runtime dnx pins.
  $PY -c "import onnx, tritonclient.grpc.model_config_pb2" 2>/dev/null || {
    echo "protobuf: falling back to the pinned 4.x runtime"
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/protobuf-*.whl; }
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/nvidia-smi.csv"
$PY -c "import torch, onnx, onnxruntime as ort; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'onnx', onnx.__version__, 'ort', ort.__version__, ort.get_available_providers())"
echo "== dnx export --target auto resolves to:"
$PY -c "from dnx.pipeline import resolve_target; print(resolve_target('auto'))" 2>&1 | tee "$OUT/auto-target.txt"
echo "== GPU-target export minus TensorRT"
( time $PY -m dnx export --target gpu --runtime onnxruntime --precision fp32 --precision fp16 --precision int8 \
    --weights random --out /tmp/gpurepo ) 2>&1 | tee "$OUT/gpu-export.log"
if [ -d /tmp/gpurepo ]; then
  (cd /tmp/gpurepo && tar czf "$OUT/gpu-repo-configs.tar.gz" --exclude='*.onnx' --exclude='*.bin' --exclude='*.xml' .)
fi
echo "== PyTorch CUDA eager and torch.compile"
$PY benchmarks/gpu_bench.py --out "$OUT" --deadline-s "${DEADLINE_S:-330}" 2>&1 | tee "$OUT/gpu-bench.log"
