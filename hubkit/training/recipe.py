"""Fine-tune a Gemma 3 / MedGemma VLM with LoRA on a hubkit dataset, streamed, and write a self-describing run folder.

Example:

    hubkit train --dataset runs/ds --base-model runs/tiny-base --output runs/tiny-run --config configs/tiny-cpu.yaml

    from hubkit.training import train
    from hubkit.config import TrainConfig
from hubkit.sources import check_readable
    run_dir = train("me/lumbar-ds", "unsloth/medgemma-1.5-4b-it", "runs/mg", TrainConfig.from_yaml(...))

Run folder: `adapter_model.safetensors` + `adapter_config.json` (PEFT; `base_model_name_or_path` = the base given),
processor files, `hubkit_config.json` (config, versions, dataset identity, backend, steps, eval losses),
`training_log.jsonl` (every Trainer log line: train loss, eval loss), `README.md` (the model card), `logs/`
(TensorBoard), `checkpoints/`.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

from hubkit import distributed, preflight, publish
from hubkit._imports import require_train
from hubkit.config import TrainConfig
from hubkit.sources import check_readable
from hubkit.training import backends as tb
from hubkit.training.data import count_tokens, open_streams, sequence_budget

__all__ = ["train"]

log = logging.getLogger("hubkit.train")


def train(dataset: str, base_model: str, output: str | Path, config: TrainConfig, resume: bool = False,
          push: str | None = None, callbacks: list | None = None) -> Path:
    """Train a LoRA adapter and return the run folder.

    Args:
        dataset: Hub dataset repo id, local Parquet/Arrow data folder, or a `DatasetDict.save_to_disk` folder;
            needs `train` and `validation` splits with images, views, prompt, target (+ the 25 label columns when
            oversampling).
        base_model: Hub model id or local folder of an image-text-to-text model (Gemma 3 / MedGemma).
        output: run folder (created; with `resume`, the folder of the interrupted run).
        config: the recipe (`TrainConfig.from_yaml(...)`, CLI flags via `with_overrides`).
        resume: continue from the last checkpoint in `output/checkpoints` (finished steps are not repeated).
        push: Hub model repo to upload the run to (overrides `config.push_repo`); private unless config.private
            is false.
        callbacks: extra `transformers.TrainerCallback`s (tests, tooling).

    Raises:
        ValueError: missing split/column, base model without a vision tower, too small max_length, bad resume,
            backend "unsloth" without a CUDA GPU.
        FileNotFoundError: `dataset` is neither a folder nor a Hub repo id.
        ImportError: backend "unsloth" / 4-bit without the gpu extra.
    """
    require_train("hubkit train")
    rank = distributed.world()
    repo = push or config.push_repo
    run_dir = Path(output)
    # Pre-flight, before anything heavy is loaded: the dataset, the push target, the base model, the disk.
    check_readable(dataset, "dataset")
    if repo and rank.main:
        publish.check(repo, "model", private=config.private)
    base_config = preflight.check_base_model(base_model)
    if rank.main:
        preflight.check_disk(run_dir, preflight.run_bytes(base_config, config), "the run's checkpoints")
    ckpt_dir = run_dir / "checkpoints"
    last = _last_checkpoint(ckpt_dir)
    if resume and last is None:
        raise ValueError(f"--resume: no checkpoint found under {ckpt_dir}")
    if not resume and last is not None:
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume to continue or choose a new --output")
    done = _global_step(last) if resume else 0

    backend = tb.resolve_backend(config.backend)
    backend_note = None
    if rank.distributed and backend == "unsloth" and config.backend == "auto":
        backend = "trl"
        backend_note = (f"{rank.size} processes: Unsloth's multi-GPU path is not used; falling back to TRL + PEFT"
                        " + bitsandbytes (DDP). Pass --backend unsloth to try Unsloth under DDP anyway.")
    elif backend == "unsloth" and config.backend == "auto" and config.loss_weights:
        backend = "trl"  # Unsloth's fused loss cannot take per-token weights
        backend_note = "loss_weights: training on TRL + PEFT (Unsloth computes its own fused loss, unweighted)"
    if backend_note and rank.main:
        log.warning(backend_note)
    distributed.pin_device(rank)
    if backend == "unsloth":
        tb.import_unsloth_first()  # before trl/transformers/peft are imported below

    from transformers import AutoProcessor, set_seed

    # The vision tower's input side: what the processor resizes every slice to (the dataset's slice size is a
    # different quantity, recorded from the dataset's manifest).
    vision_size = base_config.vision_config.image_size
    processor = AutoProcessor.from_pretrained(base_model)
    processor.image_processor.size = {"height": vision_size, "width": vision_size}
    # training images are resized to the tower's input with the processor's own filter: the pixels inference makes
    streams = open_streams(dataset, config, vision_size=vision_size, image_processor=processor.image_processor)
    if rank.main:  # the localiser the dataset's crops were cut with ships with the model (checked now, not at the end)
        from hubkit.localizer.points import ship_localizer

        ship_localizer(dataset, streams["manifest"], run_dir)
    max_steps = config.max_steps or _derived_steps(streams, config, rank.size)
    if resume and done >= max_steps:  # before any model is loaded
        raise ValueError(f"{run_dir} already trained {done} of {max_steps} steps: nothing to resume "
                         f"(publish it with `hubkit push {run_dir} OWNER/NAME`)")
    max_length = sequence_budget(processor, config, (streams["manifest"] or {}).get("views"))
    if rank.main:
        preflight.warn_gpu_memory(base_config, config, max_length)
    set_seed(config.seed)
    if backend == "unsloth":
        model, processor = tb.load_unsloth_model(base_model, config, max_length)
    else:
        model = tb.load_trl_model(base_model, config)

    import torch

    if not torch.cuda.is_available() and not rank.distributed:  # share the CPU fairly with whatever else runs
        from hubkit.training import cpu

        given = torch.get_num_threads()  # OMP_NUM_THREADS or the caller's choice: a ceiling, never exceeded
        torch.set_num_threads(cpu.fair_threads(cap=given))
        callbacks = [cpu.balancer(cap=given), *(callbacks or [])]
    cbs = _callbacks(run_dir, config, resume, rank.main) + list(callbacks or [])
    sft_kwargs = _sft_kwargs(config, ckpt_dir, max_steps, max_length, resume, rank.distributed)
    collator = tb.make_collator(backend, model, processor, config, max_length, lambda ex: count_tokens(processor, ex))
    trainer = tb.make_trainer(backend, model, processor, config, sft_kwargs, streams["train"],
                              streams["validation"], collator, cbs)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=last if resume else None)
    runtime = time.time() - t0
    if not trainer.is_world_process_zero():
        return run_dir  # rank 0 writes the run folder and pushes

    peft_model = trainer.model
    for adapter_cfg in peft_model.peft_config.values():
        adapter_cfg.base_model_name_or_path = base_model  # consumers (pipeline, load_adapter) resolve the base here
    peft_model.save_pretrained(str(run_dir))
    _add_transformers_keys(run_dir, peft_model)
    processor.save_pretrained(str(run_dir))
    _write_run_config(run_dir, trainer, config, dataset, base_model, backend, streams, max_steps, max_length,
                      runtime, vision_size, rank.size, backend_note)
    from hubkit.cards.model import write_model_card

    write_model_card(run_dir, None, repo)  # a real card from the start (PEFT wrote a boilerplate README.md)
    if repo:
        publish.push_run_folder(run_dir, repo, private=config.private)
    return run_dir


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def _global_step(checkpoint: str) -> int:
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("global_step", 0)) if state.is_file() else 0


# ----------------------------------------------------------------------------------------------- plumbing
def _derived_steps(streams: dict, config: TrainConfig, world_size: int = 1) -> int:
    if streams["train_rows"] is None:
        raise ValueError("the dataset does not say how many training rows it has; set max_steps (--max-steps N)")
    return config.steps_for(streams["train_rows"], world_size)


def _sft_kwargs(config: TrainConfig, ckpt_dir: Path, max_steps: int, max_length: int, resume: bool,
                distributed: bool = False) -> dict:
    import torch

    dtype = tb.compute_dtype(config)
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(ckpt_dir), max_steps=max_steps, max_length=max_length,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, optim=config.optim, seed=config.seed, data_seed=config.seed,
        logging_steps=config.logging_steps, eval_strategy="steps", eval_steps=config.eval_steps,
        eval_on_start=config.eval_on_start and not resume, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, load_best_model_at_end=config.load_best_model_at_end,
        metric_for_best_model="eval_loss",
        greater_is_better=False, restore_callback_states_from_checkpoint=True, report_to="none",
        bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        dataloader_num_workers=config.dataloader_num_workers, dataloader_pin_memory=cuda, disable_tqdm=False,
        # DDP: each rank reads its own shards of the stream (accelerate's default for iterable datasets would
        # have rank 0 decode every batch and scatter it); every LoRA parameter gets a gradient on every step.
        **({"accelerator_config": {"dispatch_batches": False}, "ddp_find_unused_parameters": False}
           if distributed else {}),
        # Without CUDA, say so: only then does accelerate set up multi-process CPU (gloo) under torchrun instead of
        # letting every rank train alone.
        **({"use_cpu": True, "ddp_backend": "gloo"} if distributed and not cuda else {}),
    )


def _callbacks(run_dir: Path, config: TrainConfig, resume: bool, main: bool = True) -> list:
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.integrations import TensorBoardCallback, is_tensorboard_available

    from hubkit.run_record import TRAINING_LOG

    log_path = run_dir / TRAINING_LOG
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and main:
        log_path.write_text("")

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            with log_path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **(logs or {})}) + "\n")

    cbs = []
    if main:  # other DDP ranks write no logs
        cbs.append(JsonlLog())
        if is_tensorboard_available():  # a declared dependency; skipped (with a warning) where it is not installed
            tensorboard = TensorBoardCallback()
            tensorboard.logging_dir = str(run_dir / "logs")  # transformers 5 dropped TrainingArguments.logging_dir
            cbs.append(tensorboard)
        else:
            warnings.warn("tensorboard is not installed: no TensorBoard logs under logs/", stacklevel=3)
    if config.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    return cbs


def _add_transformers_keys(run_dir: Path, peft_model) -> None:
    """Make `modules_to_save` weights loadable by transformers' `model.load_adapter(run_dir)` too.

    PEFT saves a modules_to_save module's weights without its `modules_to_save.<adapter>.` infix, and PEFT's loader
    re-inserts it; transformers 5.17's `load_adapter` only renames `lora_*` keys, so it would silently keep the base
    projector/norm. We add a second copy of those few tensors under the infixed name: PEFT loads the infixed copy
    into the very same parameter (identical values), transformers loads it instead of skipping the weights.
    """
    from peft.utils.other import ModulesToSaveWrapper
    from safetensors.torch import load_file, save_file

    from hubkit.run_record import ADAPTER_WEIGHTS

    path = run_dir / ADAPTER_WEIGHTS
    wrapped = [name for name, m in peft_model.named_modules() if isinstance(m, ModulesToSaveWrapper)]
    if not wrapped:
        return
    tensors = load_file(str(path))
    for key in list(tensors):
        for name in wrapped:
            if key.startswith(name + ".") and ".modules_to_save." not in key:
                tensors[f"{name}.modules_to_save.default.{key[len(name) + 1:]}"] = tensors[key].clone()
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_run_config(run_dir, trainer, config, dataset, base_model, backend, streams, max_steps, max_length,
                      runtime, vision_size: int, world_size: int = 1, backend_note: str | None = None) -> None:
    from hubkit import modeling
    from hubkit._imports import versions
    from hubkit.cards.citation import dataset_citation
    from hubkit.config import config_to_dict
    from hubkit.run_record import DatasetRef, RunRecord, write_run

    evals = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    best = trainer.state.best_model_checkpoint
    write_run(run_dir, RunRecord(
        base_model=base_model, train_config=config_to_dict(config),
        # the build's facts (slice size, picker, label counts): the card and the pipeline read them here
        dataset=DatasetRef(source=dataset, **streams["identity"], train_rows=streams["train_rows"],
                           validation_rows=streams["validation_rows"], oversample=config.oversample,
                           manifest=streams["manifest"], citation=dataset_citation(dataset)),
        vision_input_size=vision_size,
        # the base's own licence, tags and citation (its model card), which the adapter's card repeats: never guessed
        base_model_card=modeling.base_card_facts(base_model),
        quantized_4bit=bool(getattr(trainer.model, "is_loaded_in_4bit", False)),
        backend=backend, backend_note=backend_note, world_size=world_size, max_length=max_length,
        planned_steps=max_steps, global_step=trainer.state.global_step,
        stopped_early=trainer.state.global_step < max_steps, first_eval_loss=evals[0] if evals else None,
        best_eval_loss=trainer.state.best_metric, best_checkpoint=Path(best).name if best else None,
        train_runtime_s=round(runtime, 1),
        versions=versions(("hubkit", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth",
                           "unsloth_zoo", "bitsandbytes")),
    ))
