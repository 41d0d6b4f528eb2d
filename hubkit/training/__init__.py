"""The trainer's room: `hubkit train` = `train(dataset, base_model, output, TrainConfig)` -> a self-describing run
folder.

recipe (orchestration, run folder) · data (the streamed chat rows, token budget) · backends (Unsloth / TRL + PEFT
models, collators, trainer) · collate (the cached TRL-equivalent collator) · augment (image jitter, left/right
mirroring) · weighting (the loss weighted like the metric) · cpu (fair threads on shared cores). Ranks, GPU
pinning, the relaunch and the DDP notes are `hubkit.distributed`. Nothing here is imported by `hubkit.inference`.
"""

from hubkit.training.recipe import train

__all__ = ["train"]
