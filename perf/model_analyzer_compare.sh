#!/usr/bin/env bash
# dnx tune --concurrency 16 vs Triton Model Analyzer (brute search) on one model, same machine, one run.
#
#   perf/model_analyzer_compare.sh REPO [MODEL] [OUT]
#
# REPO is a repository `make demo` built (it is copied, never changed); MODEL defaults to
# densenet121_openvino_int8. Model Analyzer lives in its own venv ($MA_VENV, default
# /work/ma-venv: `python3 -m venv $MA_VENV && $MA_VENV/bin/pip install triton-model-analyzer`),
# so its pins never touch dnx's. What it needs by hand to run on dnx's local server here (the
# reason dnx tune exists): dnx's Python-based backend folder, PATH/LD_LIBRARY_PATH for the
# pytriton server, the project's perf_analyzer, and ENABLE_BATCH_PADDING in the model's base
# config (else every batched OpenVINO config fails its warm-up).
#
# Then the config as exported and both winners are measured side by side (benchmarks/side_by_side.py:
# one server, the $LEVELS levels interleaved, $ROUNDS rounds, medians): $OUT/side-by-side/.
set -euo pipefail
REPO=$(realpath "$1"); MODEL=${2:-densenet121_openvino_int8}; OUT=$(realpath -m "${3:-perf/results/model-analyzer}")
MA_VENV=${MA_VENV:-/work/ma-venv}; DNX=${DNX:-.venv/bin/dnx}; PY=${PY:-.venv/bin/python}
ROUNDS=${ROUNDS:-3}; LEVELS=${LEVELS:-1,2,4,8,16}
rm -rf "$OUT"; mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/timeline.txt"; }

# --- the two copies: one for dnx tune, one for Model Analyzer (its base config padded)
cp -a "$REPO" "$OUT/dnx-repo"
mkdir -p "$OUT/ma-repo" && cp -a "$REPO/$MODEL" "$OUT/ma-repo/"
rm -f "$OUT/ma-repo/$MODEL/config.pbtxt.orig"
grep -q ENABLE_BATCH_PADDING "$OUT/ma-repo/$MODEL/config.pbtxt" || \
  echo 'parameters: { key: "ENABLE_BATCH_PADDING" value: { string_value: "YES" } }' >> "$OUT/ma-repo/$MODEL/config.pbtxt"

# --- Model Analyzer: the server, backends and perf_analyzer dnx uses
eval "$($PY - "$OUT/ma-backends" <<'EOF'
import sys
from pathlib import Path
from dnx.perf.analyzer.binary import find_perf_analyzer
from dnx.serving.server import find_local_triton, make_backend_dir
t = find_local_triton()
make_backend_dir(Path(sys.argv[1]), t)
print(f"TRITON={t.binary}; TRITON_LIBS={t.libs}; PA={find_perf_analyzer()}")
EOF
)"
cat > "$OUT/ma.yaml" <<EOF
model_repository: $OUT/ma-repo
output_model_repository_path: $OUT/ma-output-models
override_output_model_repository: true
export_path: $OUT/ma-export
checkpoint_directory: $OUT/ma-checkpoints
triton_launch_mode: local
triton_server_path: $TRITON
perf_analyzer_path: $PA
run_config_search_mode: brute
run_config_search_max_instance_count: 2
run_config_search_max_model_batch_size: 8
run_config_search_min_concurrency: 16
run_config_search_max_concurrency: 16
triton_server_flags:
  backend_directory: $OUT/ma-backends
triton_server_environment:
  LD_LIBRARY_PATH: $TRITON_LIBS:$(dirname "$PA")/../lib/python3.11/site-packages/nvidia/cuda_runtime/lib
  PATH: $(realpath "$(dirname "$PY")"):$PATH
profile_models:
  $MODEL:
    cpu_only: true
EOF
log "model-analyzer profile (brute, instances 1-2, max batch 1-8, c16)"
t0=$(date +%s)
PATH="$MA_VENV/bin:$PATH" "$MA_VENV/bin/model-analyzer" profile -f "$OUT/ma.yaml" > "$OUT/ma-profile.log" 2>&1 || {
  tail -30 "$OUT/ma-profile.log"; exit 1; }
log "model-analyzer done in $(( $(date +%s) - t0 )) s"

# --- dnx tune at the stated load
log "dnx tune --concurrency 16 --models $MODEL"
t0=$(date +%s)
"$DNX" tune --repository "$OUT/dnx-repo" --models "$MODEL" --concurrency 16 --out "$OUT/dnx-tune" -q \
  > "$OUT/dnx-tune.log" 2>&1 || { tail -30 "$OUT/dnx-tune.log"; exit 1; }
log "dnx tune done in $(( $(date +%s) - t0 )) s"

# --- the config as exported and both winners, side by side (one server, levels interleaved, rounds)
BEST=$("$PY" -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
best = max(rows, key=lambda r: float(r["Throughput (infer/sec)"]))
print(best["Model Config Path"])' "$OUT/ma-export/results/metrics-model-inference.csv")
log "side by side: exported, dnx, model analyzer's best ($BEST)"
PYTHONPATH=$PWD "$PY" benchmarks/side_by_side.py --repository "$REPO" --model "$MODEL" --rounds "$ROUNDS" --levels "$LEVELS" \
  --config "exported=$REPO/$MODEL/config.pbtxt" --config "dnx=$OUT/dnx-repo/$MODEL/config.pbtxt" \
  --config "model_analyzer=$OUT/ma-output-models/$BEST/config.pbtxt" --out "$OUT/side-by-side" > "$OUT/side-by-side.log"
cat "$OUT/side-by-side/side-by-side.md"
log "done"
