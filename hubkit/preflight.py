"""Checks that run before the long work (build, train, evaluate, push), so a bad token, a gated base model or a
full disk is a one-line error in the first seconds instead of after hours.

    from hubkit.preflight import check_base_model, check_disk
    check_base_model("google/medgemma-1.5-4b-it")      # gated? private? misspelled? no vision tower?
    check_disk("runs/seed", need_bytes=2 * 2**30, what="checkpoints")

Push access is `hubkit.publish.check` (it asks the Hub who the token is and what it may write).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hubkit.model_family import family_of

log = logging.getLogger("hubkit")
GiB = 2**30


def check_base_model(base_model: str) -> Any:
    """Resolve a base model (local folder or Hub id) and check it is a vision-language model; returns its config.

    Raises:
        HubError: gated (names the page where its terms are accepted), private or not found, bad token.
        ValueError: a folder without config.json, an unreadable config, or a model without a vision tower.
        FileNotFoundError: neither an existing folder nor a Hub repo id (`hubkit.sources.locate`).
    """
    from hubkit import modeling
    from hubkit.sources import locate

    loc = locate(base_model, "base model")
    if loc.path is not None:
        if not (loc.path / "config.json").is_file():
            raise ValueError(f"base model {base_model}: a folder without config.json (not a saved model)")
    else:
        from hubkit.hub import check_model_readable

        check_model_readable(loc.repo_id)
    try:
        config = modeling.check_vision_base(base_model)
    except OSError as e:  # transformers' message spans lines; the first one says it
        raise ValueError(f"base model {base_model}: {str(e).strip().splitlines()[0]}") from e
    family_of(config)  # a family hubkit knows the pixels, image tokens and prompt of, or one line saying not
    return config


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    p = Path(path).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_disk(path: str | Path, need_bytes: int, what: str) -> None:
    """ValueError when the file system of `path` has less than `need_bytes` free (an estimate: it says so)."""
    free = free_bytes(path)
    if free < need_bytes:
        raise ValueError(f"{path}: {what} needs about {need_bytes / GiB:.1f} GiB but only {free / GiB:.1f} GiB is "
                         "free there; free some space or choose another --output")


def build_bytes(studies: int, slice_size: int) -> int:
    """Disk a build needs: each study's 8 slices as PNG in the resumable work folder, the builder's Arrow cache and
    the saved dataset (three copies; PNG keeps roughly half of an MR slice's raw bytes)."""
    return int(studies * 8 * slice_size * slice_size * 0.5 * 3)


def lora_params(config: Any, cfg: Any) -> int:
    """Trainable LoRA parameters for `cfg` (TrainConfig) on the base `config` (`model_family.ModelFamily`)."""
    return family_of(config).lora_params(config, cfg.lora_target_modules, cfg.lora_r, cfg.finetune_vision_layers,
                                         cfg.finetune_language_layers)


def run_bytes(config: Any, cfg: Any) -> int:
    """Disk a training run needs: each kept checkpoint holds the adapter and AdamW's two moments (fp32), plus the
    final adapter; the best checkpoint may be kept beside the `save_total_limit` ones."""
    per_ckpt = lora_params(config, cfg) * 4 * 3
    return per_ckpt * (cfg.save_total_limit + 2) + 64 * 2**20


def warn_gpu_memory(config: Any, cfg: Any, max_length: int | None = None) -> str | None:
    """On CUDA, estimate what training `cfg` needs and warn (logging, and returned) when it exceeds free memory.

    The estimate (`model_family`): the base's weights (4-bit text tower when quantised, bf16 otherwise; the vision
    tower stays bf16), LoRA weights with AdamW state, and the per-step float32 logits over the vocabulary, which
    dominate a VLM step.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    family = family_of(config)
    tokens = (max_length or 2400) * cfg.per_device_train_batch_size
    need = (family.weight_bytes(config, cfg.load_in_4bit) + lora_params(config, cfg) * 16
            + family.logits_bytes(config, tokens) + 2 * GiB)  # + CUDA context, buffers
    free = torch.cuda.mem_get_info()[0]
    if need <= free:
        return None
    msg = (f"training may not fit on this GPU: about {need / GiB:.0f} GiB needed, {free / GiB:.0f} GiB free "
           "(lower per_device_train_batch_size, or load_in_4bit: true)")
    log.warning(msg)
    return msg
