#!/usr/bin/env bash
# Cohorts + tiny bases for bench/tiny_sweep (see README.md there). Usage: bash bench/tiny_sweep/prepare.sh [WORK]
set -euo pipefail
W=${1:-/tmp/tiny-sweep-work}; S=.sweep
mkdir -p "$W" "$S/data" "$S/bases"
for spec in "s150 150 0" "s300 300 0" "h60 60 777"; do
  set -- $spec
  [ -d "$W/$1/ds" ] || { hubkit synth "$W/$1/cohort" --studies "$2" --seed "$3" --num-proc 2 \
                         && hubkit build-dataset "$W/$1/cohort" --output "$W/$1/ds" --num-proc 2; }
  python bench/tiny_sweep/shrink.py "$W/$1/ds" "$S/data/$1" 128
done
python - <<'PY'
from hubkit.devkit.base_models import write_tiny_base
write_tiny_base(".sweep/bases/b64")                              # the demo's base
write_tiny_base(".sweep/bases/b128", hidden_size=128, num_layers=4)
PY
