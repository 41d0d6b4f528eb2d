#!/usr/bin/env bash
# One device-tool call of a GPU benchmark session: installs the carried wheels (.gpu/whl, from
# ../shared/gpu/prepare_wheels.sh) and this checkout into .gpu/site once per warm machine, then runs one phase.
#   bash bench/gpu_session.sh scaling      # bench/train_scaling.py: 1 vs 2 GPUs (needs 2 GPUs)
#   bash bench/gpu_session.sh throughput   # bench/train_throughput.py: (b) unsloth, (c) hubkit, (a) plain
#   bash bench/gpu_session.sh batches      # (c) hubkit at batch 2 and 4
#   bash bench/gpu_session.sh attn         # (c) profiled (torch.profiler kernel tables): Unsloth's attention, all sdpa
#   bash bench/gpu_session.sh vattn        # (c) with sdpa in the vision tower only, then (a)
#   bash bench/gpu_session.sh layouts      # (c) per picker layout: slices, mosaic, separate (long: run it under setsid
#                                          # with OUT set, and follow its layouts.jsonl over two calls)
#   bash bench/gpu_session.sh unsloth      # (b) alone; `hubkit`: (c) alone (a second run on a warm machine)
#   bash bench/gpu_session.sh inference    # bench/inference.py: seed generate vs constrained (+ streamed)
#   bash bench/gpu_session.sh product      # bench/pipeline.py: the consumer's pipeline, new vs previous hubkit,
#                                          # engine, seed; then `hubkit evaluate` both (BENCHMARKS.md 3c)
# PREVIOUS_SITE: the previous hubkit for `product`, an install of an older commit that is not part of the repo (a
# folder with that commit's `hubkit` package at its top, e.g. a `pip install --no-deps --target` of commit 7857243,
# the "previous" of BENCHMARKS.md 3c); carried with the checkout, by default at .old/site.
# Logs and JSONL results go to $OUT (the device tool brings them back).
set -uo pipefail
PHASE=${1:?phase}
OUT=${OUT:-/tmp/out}
PREVIOUS_SITE=${PREVIOUS_SITE:-$PWD/.old/site}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 \
       TOKENIZERS_PARALLELISM=false
source bench/gpu_site.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$OUT/gpus.txt"
W=.gpu/hb
case "$PHASE" in
  scaling)    python3 bench/train_scaling.py --work $W --out "$OUT/scaling.jsonl" --steps 14 --warmup 3 --timeout 240 ;;
  throughput) python3 bench/train_throughput.py --work $W --out "$OUT/train.jsonl" --only plain unsloth hubkit \
                --steps 14 --warmup 3 --timeout 300 ;;
  attn)       HUBKIT_BENCH_PROFILE="$OUT/profile_auto.txt" python3 bench/train_throughput.py --work $W \
                --out "$OUT/train.jsonl" --only hubkit --steps 12 --warmup 3 --timeout 260
              HUBKIT_BENCH_PROFILE="$OUT/profile_sdpa.txt" python3 bench/train_throughput.py --work $W \
                --out "$OUT/train.jsonl" --only hubkit plain --attn sdpa --steps 12 --warmup 3 --timeout 200 ;;
  vattn)      python3 bench/train_throughput.py --work $W --out "$OUT/train.jsonl" --only hubkit plain \
                --attn vision:sdpa --steps 13 --warmup 3 --timeout 330 ;;
  layouts)    # BENCHMARKS.md 8: hubkit train's throughput per picker layout (whole slices, crop mosaics, separate crops)
              for lay in ${LAYOUTS:-slices mosaic separate}; do
                python3 bench/train_throughput.py --work $W --out "$OUT/layouts.jsonl" --only hubkit --layout $lay \
                  --steps 13 --warmup 3 --timeout 420
              done ;;
  unsloth|hubkit) python3 bench/train_throughput.py --work $W --out "$OUT/train.jsonl" --only "$PHASE" \
                --steps 13 --warmup 3 --timeout 330 ;;
  inference)  python3 bench/inference.py --model-dir .gpu/mg --batch-sizes 1,32 --seed-batch-sizes 1 --repeats 2 \
                --stream-batches 3 --out "$OUT/inference.jsonl" ;;
  product)   P=$PWD/.gpu/pb   # most important first: a run cut off at its limit keeps what it finished
              timeout 200 python3 bench/pipeline.py --work $P --out "$OUT/product.jsonl" --phases prepare product \
                --label new --batch-sizes 16,32 2>&1 | tee "$OUT/product.log" | grep '^{'
              timeout 70 python3 bench/pipeline.py --work $P --out "$OUT/product.jsonl" --phases engine \
                --batch-sizes 32 2>&1 | tee -a "$OUT/product.log" | grep '^{'
              timeout 60 python3 bench/pipeline.py --work $P --out "$OUT/product.jsonl" --phases seed --repeats 4 \
                2>&1 | tee -a "$OUT/product.log" | grep '^{'
              # the CLI from another folder: in the checkout, ./hubkit (without its mapped sub-packages) would win
              (cd /tmp && timeout 30 python3 -m hubkit.cli -q build-dataset $P/cohort --output $P/ds --picker geometry \
                --validation-fraction 0.25 --num-proc 14) >> "$OUT/product.log" 2>&1
              for code in new previous; do
                PP=$PYTHONPATH; [ $code = previous ] && PP=$PREVIOUS_SITE:$PYTHONPATH
                start=$SECONDS
                (cd /tmp && PYTHONPATH=$PP timeout 50 python3 -m hubkit.cli evaluate --model $P/run --dataset $P/ds \
                  --output $P/eval_$code) >> "$OUT/product.log" 2>&1
                echo "$code evaluate wall $((SECONDS - start)) s" | tee -a "$OUT/product.log"
                cp $P/eval_$code/eval_config.json "$OUT/eval_$code.json"
              done ;;
  batches)    python3 bench/train_throughput.py --work $W --out "$OUT/train.jsonl" --only plain --batches 2 4 \
                --steps 13 --warmup 3 --timeout 280 ;;
esac
cp $W/*.log "$OUT/" 2>/dev/null
true
