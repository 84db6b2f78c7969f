#!/usr/bin/env bash
# Every CUDA measurement of bench/RESULTS.md in one call on a lent GPU machine:
#   bash bench/gpu_run.sh OUTDIR      (wheels for missing packages in .whl/, if any)
set -u
OUT=${1:-${OUT:-/tmp/gpu-out}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
timeout 100 python3 bench/gpu_checks.py --out "$OUT" 2>&1 | tee "$OUT/gpu_checks.log"
timeout 330 python3 bench/bench_sampling.py --device cuda --batch 64 --steps 25 --repeat 3 --compile also \
  --json "$OUT/sampling.json" 2>&1 | grep -v "Warning\|originates\|File \|if dtype\|warn_once\|^$" | tee "$OUT/sampling.log"
timeout 60 python3 bench/gpu_fold_check.py 2>&1 | tee "$OUT/fold_check.log"
( time timeout 100 python3 -m side_audit demo --no-gui --fresh --workspace /tmp/demo-cuda ) 2>&1 \
  | tee "$OUT/demo_cuda.log" | tail -25
timeout 240 python3 bench/gpu_dist_check.py --json "$OUT/dist_check.json" 2>&1 | tee "$OUT/dist_check.log" | tail -5
echo "== summary"; grep -h "speed:\|guided/unguided\|^| \|^tf32" "$OUT/gpu_checks.log" "$OUT/sampling.log" "$OUT/fold_check.log" | tail -60
