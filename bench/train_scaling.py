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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_throughput import emit, run_measured, timed_hubkit_train  # noqa: E402  (bench scripts are not a package)


def child(args) -> None:
    import torch

    work = Path(args.work)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    times = timed_hubkit_train(work / "dataset", work / "medgemma-arch", work / f"scaling-{args.backend}-g{world}",
                               args.backend, args.batch, args.steps, args.workers)
    if rank == 0:
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
        rec = run_measured(launcher + [__file__] + flags, work / f"scaling-g{n}.log", args.timeout, {"gpus": n})
        results[n] = rec
        emit(rec, args.out)
    ok = {n: r for n, r in results.items() if "tokens_per_s" in r}
    if 1 in ok and len(ok) > 1:
        summary = {"summary": True, **{f"speedup_{n}gpu": round(r["tokens_per_s"] / ok[1]["tokens_per_s"], 3)
                                       for n, r in ok.items() if n != 1}}
        emit(summary, args.out)


if __name__ == "__main__":
    main()
