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
  export PYTHONPATH=$PWD/.gpu/site; PY=python3
  [ -d .gpu/site/trl ] || $PY -m pip install -q --no-index --no-deps --no-compile --target .gpu/site .gpu/whl/*.whl
  rm -rf .gpu/site/hubkit && cp -r hubkit .gpu/site/hubkit && cp -r dataset_builder .gpu/site/hubkit/dataset_builder \
    && cp -r cards .gpu/site/hubkit/cards
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
