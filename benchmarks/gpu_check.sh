#!/usr/bin/env bash
# The GPU checks of issues 2, 5 and 9, as one script for a lent GPU machine (python3 there has torch).
# Usage (repo root): OUT=/some/dir bash benchmarks/gpu_check.sh [cpu-checkpoint.pt]
# Writes its logs and result files under $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PCAE_DATA_BUNDLED=1
OUT=${OUT:-gpu-check}; mkdir -p "$OUT"
log() { echo "== $* ($(date +%T))"; }

log device
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

log "train step: fp32 / bf16 / bf16+compile at batch 32 and 128"
timeout ${STEP_TIMEOUT:-240} python3 benchmarks/train_step.py --device cuda --batch 32 --batch 128 \
    --mode fp32 --mode bf16 --mode bf16+compile --seconds ${SECONDS_PER_MODE:-4} --json "$OUT/train_step.json"

[ "${SKIP_SAMPLING:-0}" = 1 ] || { log "sampling: naive vs cached (CUDA graphs) at batch 4 and 16"; }
[ "${SKIP_SAMPLING:-0}" = 1 ] || timeout 150 python3 benchmarks/sampling.py --device cuda --naive-rows 2

log "bf16 vs fp32 training curves: same model, data, seed and steps on Fashion-MNIST"
for prec in fp32 bf16; do
  timeout ${TRAIN_TIMEOUT:-120} python3 -m pcae train --out "$OUT/run-$prec" --device cuda --precision $prec \
      --steps ${TRAIN_STEPS:-1500} --batch-size 64 --channels 64 --n-layers 6 --eval-every 500 --eval-images 2000 \
      --sample-every 0 --n-samples 16 --force > "$OUT/train-$prec.log" 2>&1
  tail -n 3 "$OUT/train-$prec.log"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
s = {p: json.load(open(f"{out}/run-{p}/summary.json")) for p in ("fp32", "bf16")}
keys = [k for k in s["fp32"] if "bits" in k and isinstance(s["fp32"][k], (int, float))]
for k in keys:
    print(f"{k}: fp32 {s['fp32'][k]:.4f}  bf16 {s['bf16'][k]:.4f}  diff {s['bf16'][k] - s['fp32'][k]:+.4f}")
PY
cp "$OUT/run-bf16/last.pt" "$OUT/bf16-cuda.pt" 2>/dev/null

if [ $# -ge 1 ]; then
  log "a CPU-trained checkpoint samples on CUDA"
  timeout 60 python3 -m pcae sample "$1" --n 16 --device cuda --out "$OUT/from-cpu.png" 2>&1 | tail -n 3
fi
log done
