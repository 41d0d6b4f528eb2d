"""Multi-process training on the standard engine: torchrun / `accelerate launch` start the ranks, the transformers
Trainer (through accelerate) wraps the model in DistributedDataParallel; this module only reads the rank, pins the
GPU and relaunches `hubkit train --num-gpus N` under torchrun.

Any of these start the same run on N GPUs of one host (one process per GPU, DDP; gloo on CPU):

    hubkit train ... --num-gpus N
    torchrun --standalone --nproc-per-node N -m hubkit.cli train ...
    accelerate launch --num-processes N -m hubkit.cli train ...

How the work is split: the training stream is sharded by `datasets` shards across ranks (each rank reads and decodes
only its own shards, so no study is seen twice per epoch; a stream with fewer shards than ranks is split batch by
batch instead); the per-device batch stays as configured, so one optimiser step consumes N x batch x accumulation
studies and `max_steps` derived from epochs is divided by N. Only rank 0 writes the run folder (adapter, processor,
hubkit_config.json, training_log.jsonl) and pushes; the Trainer saves checkpoints from rank 0 only.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

log = logging.getLogger("hubkit.train")

__all__ = ["World", "world", "pin_device", "launch_command", "relaunch"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place in a torchrun / accelerate launch (rank 0 of 1 when not launched)."""
    env = os.environ
    try:
        return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))
    except ValueError as e:
        raise ValueError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers: {e}") from None


def pin_device(w: World) -> None:
    """Put this rank on its own GPU before any model is loaded (4-bit loads land on the current device)."""
    import torch

    if w.distributed and torch.cuda.is_available():
        if w.local_rank >= torch.cuda.device_count():
            raise ValueError(f"rank {w.rank} wants GPU {w.local_rank} but only {torch.cuda.device_count()} are "
                             "visible; launch at most that many processes per node")
        torch.cuda.set_device(w.local_rank)


def launch_command(num_gpus: int, argv: list[str]) -> list[str]:
    """torchrun command running `hubkit train` with `argv` (the --num-gpus flag removed) on `num_gpus` GPUs."""
    import torch

    available = torch.cuda.device_count()
    if num_gpus > available:
        raise ValueError(f"--num-gpus {num_gpus}: only {available} CUDA GPU(s) visible; on CPU run "
                         f"`torchrun --standalone --nproc-per-node {num_gpus} -m hubkit.cli train ...` (gloo)")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--num-gpus":
            skip = True
        elif not a.startswith("--num-gpus="):
            rest.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_gpus}",
            "-m", "hubkit.cli", "train", *rest]


def relaunch(num_gpus: int, argv: list[str]) -> int:
    """Run `hubkit train <argv>` again under torchrun on `num_gpus` GPUs; returns its exit code."""
    import subprocess

    cmd = launch_command(num_gpus, argv)
    log.warning("launching: %s", " ".join(cmd[2:]))
    return subprocess.call(cmd)
