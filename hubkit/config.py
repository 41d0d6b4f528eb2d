"""Frozen per-stage configs and their (de)serialisation: `BuildConfig` (build-dataset) and `TrainConfig` (train).

Each stage has one frozen dataclass. They are written as JSON into output/run folders and read back by the card, so
every field must be JSON-serialisable. `TrainConfig`'s defaults are the reference recipe (the published QLoRA of
MedGemma 1.5 4B on the RSNA 2024 data that hubkit reproduces: r16/α32, lr 2e-4, 3 epochs); load a YAML with
`TrainConfig.from_yaml("configs/seed-a100-40g.yaml")`, CLI flags go through `with_overrides(**flags)`. Every value
is coerced to its field's declared type before anything is loaded (`hubkit.config_io`): `learning_rate: 2e-4` is a
float, `learning_rate: fast` one line naming the field, the value and the type.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

from hubkit.config_io import coerce_fields, config_from_mapping, config_to_dict, load_yaml
from hubkit.model_family import GEMMA3
from hubkit.schema import CODES, Picker

__all__ = ["BuildConfig", "TrainConfig", "config_to_dict", "BACKENDS"]


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """How `hubkit build-dataset` turns an RSNA-layout folder into a dataset."""

    # RSNA-layout folder (train.csv, train_series_descriptions.csv, train_label_coordinates.csv, train_images/).
    data_dir: str = ""
    # How a study becomes images (a mode of `hubkit.slots`): `coords` whole slices at train_label_coordinates.csv's
    # points (as the reference recipe did); `geometry` whole slices from DICOM geometry only, exactly as the pipeline
    # reads a folder; `crops` a square around each graded structure of each level, at the coordinates.
    picker: str = Picker.COORDS.value
    # `crops` only: "mosaic" (one 2x2 image per level) or "separate" (4 images per level, 20 per study); None: the
    # mode's default (mosaic).
    crop_layout: str | None = None
    # `crops` only: a localiser (`hubkit localizer train` folder or Hub repo) whose points the crops are cut at
    # instead of the annotators' (out-of-fold for the studies it was trained on): training then sees the errors
    # inference will. None: the annotators' coordinates (the oracle).
    localizer: str | None = None
    # Side of the square 8-bit grayscale slices stored in the dataset (the seed used 448). It travels with the
    # dataset (its manifest) into the run, and the pipeline reads DICOM at the run's size: never re-defaulted.
    slice_size: int = 448
    # Share of studies held out for validation, split by study id (deterministic for `seed`).
    validation_fraction: float = 0.1
    seed: int = 0
    # Worker processes for the builder (shards are lists of studies).
    num_proc: int = 1
    # Keep at most this many studies (None = all); handy for quick runs.
    max_studies: int | None = None

    def __post_init__(self) -> None:
        coerce_fields(self, "build config")
        from hubkit.slots import mode

        picker = mode(self.picker)  # ValueError naming the modes there are
        if self.crop_layout is not None and not picker.crops:
            raise ValueError(f"crop_layout is for a crop picker; picker {self.picker!r} takes whole slices")
        picker.slots(self.crop_layout)  # ValueError naming the layouts there are
        if self.localizer is not None and not picker.crops:
            raise ValueError(f"localizer is for a crop picker; picker {self.picker!r} takes whole slices")
        if not 32 <= self.slice_size <= 2048:
            raise ValueError(f"slice_size must be between 32 and 2048, got {self.slice_size}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")

    @property
    def layout(self) -> str | None:
        """The picker mode's layout this build uses (its default when `crop_layout` is None)."""
        from hubkit.slots import mode

        return self.crop_layout or mode(self.picker).default_layout

    @property
    def pick_spec(self) -> str:
        """The picker and its layout in one name ("geometry", "crops/mosaic"): what a study's images depend on."""
        return f"{self.picker}/{self.layout}" if self.layout else str(self.picker)


BACKENDS = ("auto", "unsloth", "trl")
_GRADE_NAMES = {"normal": 0, "normal_mild": 0, "n": 0, "moderate": 1, "m": 1, "severe": 2, "s": 2}


def _grade_factors(text: str, field: str, integer: bool) -> dict[int, float]:
    """Class index -> factor from "moderate=2,severe=4" (unnamed grades: 1); ValueError naming the field."""
    factors: dict[int, float] = {i: 1 for i in range(len(CODES))}
    kind = "integer factors >= 1" if integer else "numbers > 0"
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            number = None
        bad_number = number is None or not math.isfinite(number) or number <= 0 or (integer and number < 1)
        if not sep or key.strip().lower() not in _GRADE_NAMES or bad_number:
            raise ValueError(f"{field}: cannot read {part!r}; expected e.g. 'moderate=2,severe=4' ({kind})")
        factors[_GRADE_NAMES[key.strip().lower()]] = number
    return factors


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How `hubkit train` fine-tunes a Gemma 3 VLM with LoRA on a hubkit dataset."""

    # "unsloth" = FastVisionModel + UnslothVisionDataCollator (CUDA only, fastest); "trl" = TRL SFTTrainer + PEFT
    # (CPU or GPU); "auto" picks unsloth when CUDA is available and unsloth imports, else trl.
    backend: str = "auto"
    # LoRA rank/scale/dropout of the seed (r16, alpha 32, dropout 0.05).
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Linear layers that get LoRA: the base family's (`model_family`), for Gemma 3 its attention + MLP projections
    # and SigLIP's (out_proj, fc1, fc2), as Unsloth's finetune_* flags do.
    lora_target_modules: tuple[str, ...] = GEMMA3.lora_targets
    # Adapt the SigLIP tower / the language model (the seed did both).
    finetune_vision_layers: bool = True
    finetune_language_layers: bool = True
    # Whole modules trained and saved in the adapter. Empty for MedGemma (its projector is trained already); a
    # random tiny model needs its projector and final norm trained (both are random, and LoRA cannot reach them).
    modules_to_save: tuple[str, ...] = ()
    # QLoRA: load the base in 4-bit nf4 on CUDA (ignored on CPU, where bitsandbytes does not run).
    load_in_4bit: bool = True
    # AdamW learning rate, cosine decay, 5% linear warmup, weight decay 0.01: the seed's optimiser recipe.
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    # Effective batch 8 = 1 study per device step x 8 accumulation steps: one 8-image study is already a long sequence.
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    # Studies per evaluation forward: evaluation needs no gradients, so it batches where training cannot.
    per_device_eval_batch_size: int = 4
    # Passes over the (oversampled) training split; turned into max_steps because streams have no length.
    num_train_epochs: float = 3.0
    # Optimiser steps to run; 0 = derive from num_train_epochs x train rows / effective batch (streams need it).
    max_steps: int = 0
    # Evaluate on the validation split (and checkpoint) every N optimiser steps; the seed evaluated every 100.
    eval_steps: int = 100
    # Also evaluate the untrained adapter at step 0: the baseline eval loss every later one is compared with.
    eval_on_start: bool = True
    # Evaluate on the first N validation studies (0 = all): the same fixed subset every time, so eval losses stay
    # comparable while a large validation split does not cost a share of the run (BENCHMARKS.md 5 measures it).
    eval_max_studies: int = 0
    save_steps: int = 100
    logging_steps: int = 10
    # Stop after this many evaluations without a lower eval loss (0 = never); the best checkpoint is reloaded at
    # the end and saved as the adapter.
    early_stopping_patience: int = 3
    # Reload the checkpoint with the lowest eval loss at the end and save that as the adapter (the seed's choice).
    # Off for tiny models on a small cohort: their eval loss rises from over-confidence while kappa still improves.
    load_best_model_at_end: bool = True
    # Checkpoints kept on disk (the best one is always kept as well).
    save_total_limit: int = 2
    # Repeat each training study by its worst grade, e.g. "moderate=2,severe=4" (the seed's planned fix for the
    # rare Moderate/Severe foraminal grades); "" = no oversampling.
    oversample: str = ""
    # Weight in the training loss of the answer tokens that carry a Moderate / Severe grade, e.g.
    # "moderate=2,severe=4", as the official metric weighs those rows (every other supervised token weighs 1 and the
    # loss is normalised by the weight sum): the loss then ranks mistakes as the score does. "" = the plain
    # token-mean loss (the default: on the tiny model it cost κ on every seed and, once calibrated, scored level with
    # the plain loss, BENCHMARKS.md 7). TRL backend only (Unsloth computes its own fused loss).
    loss_weights: str = ""
    # Jitter training images, never flipped (hubkit.training.augment): "full" = small affine + contrast/brightness/gamma/noise,
    # "intensity" = without the affine, "none". true/false mean "full"/"none". Off in the seed recipe; on for small
    # cohorts, where a model otherwise memorises studies.
    augment: str | bool = "none"
    # Probability of mirroring a training study left<->right with its left/right grades swapped (hubkit.training.augment.
    # mirror_study: T1 left/right trade places, axials mirrored, lf<->rf and ls<->rs); 0 = never (the seed).
    lr_flip: float = 0.0
    # Seed for LoRA init, data shuffling, augmentation and the trainer.
    seed: int = 0
    # Shuffle buffer (in rows, after oversampling) of the training stream; shards are shuffled too. A small Hub
    # dataset is only a couple of Parquet files, and with a small buffer an epoch's order still follows the file
    # order (BENCHMARKS.md 4a). Memory: the buffer holds that many rows of encoded PNGs.
    shuffle_buffer: int = 1024
    # Shards a local save_to_disk dataset is split into for streaming (shuffle granularity, DataLoader workers).
    stream_shards: int = 8
    # Sequence budget in tokens; 0 = derived from the images (never truncates image tokens; too small -> error).
    max_length: int = 0
    # Keep each training/validation image decoded and resized in memory, up to this many MiB of pixels, so epochs
    # after the first skip PNG decoding (identical pixels); 0 = decode every time. A study costs 8 x side^2 bytes
    # at the vision tower's side: thousands of studies of a tiny model, a few hundred of MedGemma's.
    image_cache_mb: int = 1024
    # Recompute activations in backward: needed for 4B on one GPU, pure cost on a tiny CPU model.
    gradient_checkpointing: bool = True
    # "bf16" on GPUs that support it (H100/A100); "fp32" on CPU. "auto" picks bf16 on CUDA, fp32 otherwise.
    precision: str = "auto"
    # Attention kernels passed to from_pretrained ("sdpa", "eager", "flex_attention", ...); "auto" = the backend's
    # own choice (Unsloth picks flex_attention for Gemma 3, transformers sdpa).
    attn_implementation: str = "auto"
    # The vision tower's attention alone, set on its config after loading ("auto" = leave the backend's choice).
    # Unsloth gives all of Gemma 3 flex_attention; SigLIP's attention is unmasked, so flex only adds a block-mask
    # build and slower kernels there, and sdpa (cuDNN flash) makes the step faster (BENCHMARKS.md 2a). The text
    # model keeps the backend's kernels (Unsloth disables sdpa for Gemma 3 text).
    vision_attn_implementation: str = "sdpa"
    # Optimiser name understood by transformers (Unsloth's recipe uses adamw_8bit; plain adamw_torch on CPU).
    optim: str = "adamw_torch"
    # DataLoader worker processes that decode PNGs and run the processor ahead of the model.
    dataloader_num_workers: int = 0
    # Hub model repo to push the run folder to when training ends (None = do not push); pushed private by default
    # because a medical adapter should be reviewed before it is public.
    push_repo: str | None = None
    private: bool = True

    def __post_init__(self) -> None:
        coerce_fields(self, "train config")
        if isinstance(self.augment, bool):  # YAML `augment: true` / `false`: the modes "full" / "none"
            object.__setattr__(self, "augment", "full" if self.augment else "none")
        if self.augment not in ("none", "intensity", "full"):
            raise ValueError(f"augment must be none, intensity or full (or true/false), got {self.augment!r}")
        if not 0.0 <= self.lr_flip <= 1.0:
            raise ValueError(f"lr_flip must be a probability in [0, 1], got {self.lr_flip}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        for name in ("lora_r", "per_device_train_batch_size", "gradient_accumulation_steps", "eval_steps",
                     "save_steps", "logging_steps", "per_device_eval_batch_size", "stream_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0 or self.max_length < 0 or self.eval_max_studies < 0:
            raise ValueError("max_steps, max_length and eval_max_studies must be >= 0 (0 = derive / all)")
        if self.image_cache_mb < 0:
            raise ValueError(f"image_cache_mb must be >= 0 (0 = no cache), got {self.image_cache_mb}")
        if self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) so the best "
                "checkpoint can be kept"
            )
        if not self.finetune_vision_layers and not self.finetune_language_layers:
            raise ValueError("at least one of finetune_vision_layers / finetune_language_layers must be true")
        self.oversample_factors()  # validates the strings
        self.loss_weight_factors()
        if self.loss_weights and self.backend == "unsloth":
            raise ValueError("loss_weights works on the TRL backend only (Unsloth computes its own fused loss): pass "
                             "--backend trl, or drop loss_weights")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML config (unknown keys are an error naming them)."""
        return config_from_mapping(cls, load_yaml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        return config_from_mapping(cls, data, source=source)

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        """A copy with the given fields replaced (typed like a YAML's values); `None` values are ignored (= flag not
        given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return config_from_mapping(TrainConfig, {**dataclasses.asdict(self), **given}, "overrides")

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def oversample_factors(self) -> dict[int, int]:
        """Class index -> repetition factor, from `oversample` ("moderate=2,severe=4" -> {0: 1, 1: 2, 2: 4})."""
        return {k: int(v) for k, v in _grade_factors(self.oversample, "oversample", integer=True).items()}

    def loss_weight_factors(self) -> dict[int, float] | None:
        """Class index -> loss weight of the grade's answer token, from `loss_weights` ("moderate=2,severe=4" ->
        {0: 1.0, 1: 2.0, 2: 4.0}); None when unweighted ("")."""
        if not self.loss_weights.strip():
            return None
        return {k: float(v) for k, v in _grade_factors(self.loss_weights, "loss_weights", integer=False).items()}

    def steps_for(self, train_rows: int, world_size: int = 1) -> int:
        """Optimiser steps for `num_train_epochs` over `train_rows` (already oversampled) rows on `world_size` ranks."""
        batches = math.ceil(train_rows / (self.per_device_train_batch_size * world_size))
        return max(1, math.ceil(self.num_train_epochs * math.ceil(batches / self.gradient_accumulation_steps)))
