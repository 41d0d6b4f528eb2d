#!/usr/bin/env bash
# bench/crops_sweep.py on the device machine: data built on its 16 CPUs, every (pose, layout, seed) run at once on its
# one GPU (the tiny model is ~0.3 M parameters: the runs share the card easily). A full sweep outlasts one call
# (10 minutes), so `start` launches it in its own process session (it runs on while the machine is held) and every
# phase follows it for LIMIT seconds, then copies the result lines and the log into $OUT.
#   bash bench/crops_sweep_gpu.sh start 560     # carry .gpu/sweepwhl (see below)
#   bash bench/crops_sweep_gpu.sh follow 560    # the next call, on the same warm machine
# SWEEP_ARGS picks the cells (default: every pose and layout, seeds 0 1 2) and RUNS says how many lines they make, e.g.
#   RUNS=9 SWEEP_ARGS="--seeds 0 1 2 --poses realistic --layouts slices mosaic mosaic-localizer" bash ... start 560
# Wheels: ../shared/gpu/prepare_wheels.sh's set without Unsloth's own (the tiny recipe trains with TRL + PEFT),
# plus evaluate and pydicom, in .gpu/sweepwhl.
set -uo pipefail
PHASE=${1:?start|follow}; LIMIT=${2:-540}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=/tmp/crops-sweep; REPO=$PWD; RUNS=$(( ${RUNS:-18} ))
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
       HF_DATASETS_DISABLE_PROGRESS_BARS=1 HUBKIT_WHEELS=${HUBKIT_WHEELS:-.gpu/sweepwhl}
if [ "$PHASE" = start ]; then
  source bench/gpu_site.sh
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
  python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'transformers',
    transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpus.txt"
  lscpu | grep -E '^(Model name|CPU\(s\))' | tee -a "$OUT/gpus.txt"
  mkdir -p $W
  # from /tmp: in the checkout, ./hubkit (without its mapped sub-packages) would shadow .gpu/site's
  (cd /tmp && setsid nohup python3 "$REPO/bench/crops_sweep.py" ${SWEEP_ARGS:---seeds 0 1 2} --jobs "$RUNS" \
     --threads 1 \
     --work $W --out $W/crops_sweep.jsonl > $W/log.txt 2>&1 < /dev/null &)
fi
end=$((SECONDS + LIMIT))
while [ $SECONDS -lt $end ]; do
  sleep 15
  n=$(cat $W/crops_sweep.jsonl 2>/dev/null | wc -l)
  [ "$n" -ge "$RUNS" ] && break
  pgrep -f crops_sweep.py > /dev/null || break
done
cp $W/crops_sweep.jsonl "$OUT/" 2>/dev/null; cp $W/log.txt "$OUT/"
# the localiser's files (its out-of-fold points against the cohort, which `hubkit synth` rebuilds anywhere, and its
# final model, to locate held-out cohorts with elsewhere)
for f in $W/full/*-localizer/{localizer.json,localizer.safetensors,metrics.json,oof_coordinates.csv}; do
  [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
echo "lines: $(cat $W/crops_sweep.jsonl 2>/dev/null | wc -l) of $RUNS; sweep running: $(pgrep -fc crops_sweep.py)"
tail -25 $W/log.txt
