"""Multi-process training on the standard engine: torchrun / `accelerate launch` start the ranks, the transformers
Trainer (through accelerate) wraps the model in DistributedDataParallel; the rank, the GPU pinning and the torchrun
relaunch of `hubkit train --num-gpus N` live in `hubkit.distributed` (shared with `hubkit predict`).

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

from hubkit.distributed import World, launch_command, pin_device, world

log = logging.getLogger("hubkit.train")

__all__ = ["World", "world", "pin_device", "launch_command"]
