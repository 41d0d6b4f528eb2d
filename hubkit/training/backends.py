"""Model loading, LoRA and the trainer for the two training backends of `hubkit.train`.

- "unsloth": `FastVisionModel` (4-bit, Unsloth's kernels) + `UnslothVisionDataCollator`; CUDA only.
- "trl": `AutoModelForImageTextToText` + PEFT LoRA (+ bitsandbytes 4-bit on CUDA) + TRL's
  `DataCollatorForVisionLanguageModeling`; runs anywhere, incl. CPU.

Both train with the `HubkitSFTTrainer` below. Everything heavy is imported inside functions; on the unsloth path the
caller imports unsloth (`import_unsloth_first`) before anything here touches trl/transformers/peft.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from hubkit._imports import available, require
from hubkit.model_family import GEMMA3, family_of
from hubkit.modeling import nf4_config


def resolve_backend(requested: str) -> str:
    """"auto" -> "unsloth" when CUDA is available and unsloth is installed, else "trl".

    Raises:
        ValueError: "unsloth" requested without a CUDA GPU (Unsloth's vision path raises NotImplementedError on CPU).
        ImportError: "unsloth" requested but not installed.
    """
    import torch

    cuda = torch.cuda.is_available()
    has_unsloth = available("unsloth")
    if requested == "trl":
        return "trl"
    if requested == "unsloth":
        if not cuda:
            raise ValueError(
                "--backend unsloth needs a CUDA GPU: Unsloth's vision models (FastVisionModel, "
                "UnslothVisionDataCollator) raise NotImplementedError on its CPU backend. "
                "Use --backend trl (or auto) on this machine."
            )
        require("unsloth", extra="gpu", purpose="--backend unsloth")
        return "unsloth"
    return "unsloth" if cuda and has_unsloth else "trl"


def import_unsloth_first() -> None:
    """Import unsloth before trl/transformers/peft so its patches apply; warn if that order is already broken.

    In the `hubkit` CLI nothing imports transformers before `train()` runs (heavy imports are lazy), so the order
    holds. A caller that imported transformers first (e.g. a notebook) gets Unsloth's own warning plus this one.
    """
    late = [m for m in ("transformers", "trl", "peft") if m in sys.modules and "unsloth" not in sys.modules]
    if late:
        warnings.warn(
            f"{', '.join(late)} imported before unsloth: some Unsloth patches may be missing. Import unsloth first "
            "(or start a fresh process) for full speed.",
            stacklevel=3,
        )
    import unsloth  # noqa: F401  (side effect: patches transformers/trl/peft)


def lora_target_regex(cfg, family=GEMMA3) -> str:
    """PEFT target regex: the configured linear names inside the selected towers (never lm_head or the projector)."""
    return family.lora_regex(cfg.lora_target_modules, cfg.finetune_vision_layers, cfg.finetune_language_layers)


def compute_dtype(cfg):
    import torch

    if cfg.precision == "fp32" or (cfg.precision == "auto" and not torch.cuda.is_available()):
        return torch.float32
    if cfg.precision == "fp16":
        return torch.float16
    if cfg.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_trl_model(base_model: str, cfg):
    """`AutoModelForImageTextToText` + PEFT LoRA (+ bnb 4-bit on CUDA when `load_in_4bit`)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText

    cuda = torch.cuda.is_available()
    dtype = compute_dtype(cfg)
    # never unpickle a base checkpoint
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, **attn_kwargs(cfg)}
    quantized = cuda and cfg.load_in_4bit
    if quantized:
        require("bitsandbytes", extra="gpu", purpose="4-bit loading (load_in_4bit: true; false loads bf16)")
        kwargs["quantization_config"] = nf4_config(dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForImageTextToText.from_pretrained(base_model, **kwargs)
    set_vision_attention(model, cfg.vision_attn_implementation)
    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
        target_modules=lora_target_regex(cfg, family_of(model.config)),
        modules_to_save=list(cfg.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def attn_kwargs(cfg) -> dict[str, Any]:
    """`from_pretrained` keyword for `cfg.attn_implementation` (none for "auto": the backend chooses)."""
    return {} if cfg.attn_implementation == "auto" else {"attn_implementation": cfg.attn_implementation}


def set_vision_attention(model, implementation: str) -> None:
    """Point the vision tower's attention at `implementation` (read from its config at every forward)."""
    if implementation == "auto":
        return
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    if vision is None:
        raise ValueError("vision_attn_implementation needs a model with a vision_config")
    vision._attn_implementation = implementation


def load_unsloth_model(base_model: str, cfg, max_length: int):
    """Unsloth `FastVisionModel` (4-bit by default) + its LoRA; returns (model, processor)."""
    from unsloth import FastVisionModel

    gc = "unsloth" if cfg.gradient_checkpointing else False
    model, processor = FastVisionModel.from_pretrained(
        base_model, max_seq_length=max_length, load_in_4bit=cfg.load_in_4bit, use_exact_model_name=True,
        use_gradient_checkpointing=gc, dtype=None if cfg.precision == "auto" else compute_dtype(cfg),
        use_safetensors=True,  # forwarded to transformers: never unpickle a base checkpoint
        **attn_kwargs(cfg),
    )
    set_vision_attention(model, cfg.vision_attn_implementation)
    model = FastVisionModel.get_peft_model(
        model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
        finetune_vision_layers=cfg.finetune_vision_layers, finetune_language_layers=cfg.finetune_language_layers,
        finetune_attention_modules=True, finetune_mlp_modules=True, random_state=cfg.seed,
        modules_to_save=list(cfg.modules_to_save) or None, use_gradient_checkpointing=gc,
    )
    FastVisionModel.for_training(model)
    return model, processor


class LengthGuard:
    """Wraps a collator: a batch longer than the token budget raises instead of being truncated through images."""

    def __init__(self, collator, max_length: int, count_tokens):
        self.collator, self.max_length, self.count_tokens = collator, max_length, count_tokens

    def __call__(self, examples):
        batch = self.collator(examples)
        if batch["input_ids"].shape[1] > self.max_length:
            needed = max(self.count_tokens(ex) for ex in examples)
            raise ValueError(
                f"a training example needs {needed} tokens but max_length is {self.max_length}; image tokens must "
                f"never be truncated: set max_length >= {needed} (or 0 to derive it)"
            )
        return batch


def make_collator(backend: str, model, processor, cfg, max_length: int, count_tokens):
    if backend == "unsloth":
        from unsloth.trainer import UnslothVisionDataCollator

        # One token of slack: a batch that would need more is truncated to max_length + 1 and the guard raises.
        inner = UnslothVisionDataCollator(
            model, processor, max_seq_length=max_length + 1, completion_only_loss=True,
            resize=processor.image_processor.size["height"],
        )
    else:
        from hubkit.training.collate import CachedVLMCollator

        inner = CachedVLMCollator(processor)  # TRL's collator's output (checked on the first batch), cached
    return LengthGuard(inner, max_length, count_tokens)


def make_trainer(backend: str, model, processor, cfg, sft_kwargs: dict, train_ds, eval_ds, collator, callbacks):
    """A `HubkitSFTTrainer` over the streams with the given SFTConfig fields."""
    import torch
    from trl import SFTConfig, SFTTrainer
    from trl.trainer import utils as trl_utils

    from hubkit.training import weighting

    # TRL 1.15 computes the loss with a fused LM head whose kernel needs triton + CUDA; without it the kernel is
    # None and training dies with "'NoneType' object has no attribute 'apply'". Keep TRL's
    # fused loss only where it works (trl backend on CUDA with triton); elsewhere use the model's own loss, which
    # is what transformers' Trainer.compute_loss does (labels already mask the prompt). Unsloth's patched model
    # computes its own fused cross-entropy, so it also takes the plain path.
    fused = backend == "trl" and torch.cuda.is_available() and trl_utils._ChunkedLogProbFunction is not None
    # The loss weighted like the metric (TrainConfig.loss_weights) is computed here from the answer's logits.
    # TrainConfig refuses backend="unsloth" with loss_weights and train() moves "auto" to TRL for them.
    factors = cfg.loss_weight_factors()
    layout = weighting.grade_layout(processor.tokenizer) if factors is not None else None

    class HubkitSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if layout is not None:
                return weighting.trainer_loss(self, model, inputs, return_outputs, num_items_in_batch, layout,
                                              factors)
            if fused:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            from transformers import Trainer

            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    args = SFTConfig(
        remove_unused_columns=False, dataset_text_field="", dataset_kwargs={"skip_prepare_dataset": True},
        completion_only_loss=True, **sft_kwargs,
    )
    if args.n_gpu > 1:  # one process seeing several GPUs: the Trainer would use nn.DataParallel (TRL refuses it)
        import logging

        logging.getLogger("hubkit.train").warning(
            "%d GPUs visible to one process: training on GPU 0 only; use --num-gpus %d (torchrun, DDP) for all",
            args.n_gpu, args.n_gpu)
        args._n_gpu = 1
    return HubkitSFTTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator,
        processing_class=processor, callbacks=callbacks,
    )
