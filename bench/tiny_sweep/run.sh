#!/usr/bin/env bash
# Run bench/tiny_sweep variants in parallel, one process each (see README.md here). On the device machine it first
# installs the carried wheels (.gpu/whl, from ../shared/gpu/prepare_wheels.sh, + evaluate) and this checkout.
#   bash bench/tiny_sweep/run.sh VARIANTS.tsv LIMIT_S      -> $OUT/kappa.jsonl, $OUT/logs.tgz, $OUT/runs.tgz
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/logs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 \
       HF_DATASETS_DISABLE_PROGRESS_BARS=1
PY=python
if [ -d .gpu/whl ]; then  # the device machine: no project install there
  source bench/gpu_site.sh; PY=python3
fi
VARIANTS=$(realpath "$1"); SWEEP=$(realpath bench/tiny_sweep/sweep.py)
cd .sweep
while IFS=$'\t' read -r name ds base over; do
  [ -z "$name" ] && continue
  timeout "$2" $PY "$SWEEP" "$name" "$ds" "$base" data/h60 "$OUT/kappa.jsonl" "$over" > "$OUT/logs/$name.log" 2>&1 &
done < "$VARIANTS"
wait
grep -h TOTAL "$OUT"/logs/*.log
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
tar czf "$OUT/runs.tgz" --exclude=checkpoints --exclude=logs -C /tmp sweep-runs
