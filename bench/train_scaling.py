"""GPU benchmark: `hubkit train` on 1 GPU vs 2 GPUs of one host (DDP through torchrun), same per-GPU batch.

MedGemma 1.5 4B architecture with random weights, 8 images of 448x448 + prompt + answer per example, 4-bit base,
gradient checkpointing, the seed's LoRA; backend TRL + PEFT + bitsandbytes on both sides (what `hubkit train`
uses under DDP, see hubkit/distributed.py), so the ratio measures scaling, not a backend change. Each run is its
own process group; warm-up steps, then the median step time of rank 0. Global tokens/s = GPUs x batch x tokens
per example / median s/step; scaling efficiency = tokens/s(2) / tokens/s(1).

    python bench/train_scaling.py --work /tmp/hb --out $OUT/scaling.jsonl [--gpus 1 2] [--steps 14] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(args) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from train_throughput import StepTimer

    import hubkit.train as ht
    from hubkit.train_config import TrainConfig

    work = Path(args.work)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    timers = []
    callbacks = ht._callbacks

    def with_timer(*a, **kw):
        timers.append(StepTimer())
        return callbacks(*a, **kw) + timers

    ht._callbacks = with_timer
    cfg = TrainConfig(backend=args.backend, max_steps=args.steps, per_device_train_batch_size=args.batch,
                      gradient_accumulation_steps=1, eval_steps=10_000, save_steps=10_000, logging_steps=5,
                      early_stopping_patience=0, eval_on_start=False, load_best_model_at_end=False,
                      dataloader_num_workers=args.workers)
    ht.train(str(work / "dataset"), str(work / "medgemma-arch"), work / f"scaling-{args.backend}-g{world}", cfg)
    if rank == 0:
        times = timers[0].times
        timed = times[args.warmup:]
        med = statistics.median(timed)
        tok = json.loads((work / "tokens.json").read_text())["tokens_per_example"] * args.batch * world
        print("RESULT " + json.dumps({
            "gpus": world, "backend": args.backend, "batch_per_gpu": args.batch, "steps_timed": len(timed),
            "median_s_per_step": round(med, 4), "tokens_per_step": tok, "tokens_per_s": round(tok / med, 1),
            "peak_gpu_gib_rank0": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "device": torch.cuda.get_device_name(0)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/hubkit-bench")
    ap.add_argument("--out", default=None)
    ap.add_argument("--gpus", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="dataloader workers per rank")
    ap.add_argument("--backend", default="trl", choices=["trl", "unsloth"])
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    work = Path(args.work)
    if not (work / "tokens.json").is_file():  # the model + dataset of bench/train_throughput.py
        subprocess.run([sys.executable, str(HERE / "train_throughput.py"), "--child", "prepare", "--work", str(work)],
                       check=True)
    results = {}
    for n in args.gpus:
        flags = ["--child", "--work", str(work), "--steps", str(args.steps), "--warmup", str(args.warmup),
                 "--batch", str(args.batch), "--backend", args.backend, "--workers", str(args.workers)]
        launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc-per-node={n}"]
        t = time.perf_counter()
        try:
            proc = subprocess.run(launcher + [__file__] + flags, capture_output=True, text=True, timeout=args.timeout)
            (work / f"scaling-g{n}.log").write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:])
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            rec = json.loads(lines[-1][7:]) if lines else {"gpus": n, "error": proc.stderr[-1500:]}
        except subprocess.TimeoutExpired:
            rec = {"gpus": n, "error": f"timed out after {args.timeout}s"}
        rec["wall_s"] = round(time.perf_counter() - t, 1)
        results[n] = rec
        print(json.dumps(rec), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
    ok = {n: r for n, r in results.items() if "tokens_per_s" in r}
    if 1 in ok and len(ok) > 1:
        summary = {"summary": True, **{f"speedup_{n}gpu": round(r["tokens_per_s"] / ok[1]["tokens_per_s"], 3)
                                       for n, r in ok.items() if n != 1}}
        print(json.dumps(summary), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
