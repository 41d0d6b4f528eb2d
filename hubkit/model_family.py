"""What hubkit assumes of its base models' family, in one place: Gemma 3 vision-language models (MedGemma among them).

Training and inference both read these facts here, so they cannot disagree on the pixels a model sees or on the
tokens around them:

- the resample filter of the image processor (read from the processor itself, never assumed): training pre-resizes
  slices to the tower's input with it, exactly as the processor would at inference;
- the image-token markers: each image placeholder expands to `full_image_sequence` (begin marker, the soft tokens,
  end marker), `image_seq_length` soft tokens each;
- the tail of the generation prompt (`<start_of_turn>model\\n`), which the answer follows;
- the towers' module names, for LoRA target regexes, and the linear layers LoRA adapts in each;
- the shapes behind the disk and GPU-memory estimates of a run.

A base of another family is refused by `family_of` with one line naming its `model_type`, instead of failing later
inside the trainer or with silently different pixels.

    from hubkit.model_family import family_of
    fam = family_of(config)                                 # GEMMA3
    resample_of(processor.image_processor)                  # 2 (PIL bilinear) for Gemma 3's processor
    resize_like(image, 896, processor.image_processor)      # as the processor would resize it
"""

from __future__ import annotations

import dataclasses
from typing import Any

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """The facts of one family of image-text-to-text models (see the module docstring)."""

    name: str
    model_types: tuple[str, ...]
    # Module-name fragments of the two towers (what a LoRA target regex selects by).
    vision_tower: str
    language_model: str
    # The linear layers LoRA adapts: the language model's attention + MLP projections and the vision tower's
    # (SigLIP: out_proj, fc1, fc2), so "q/k/v/o + gate/up/down of vision + language" holds for both towers.
    lora_targets: tuple[str, ...]
    # How the generation prompt ends (the answer's tokens follow it).
    generation_tail: str

    def lora_regex(self, targets, vision: bool, language: bool) -> str:
        """PEFT target regex: the named linear layers inside the selected towers (never lm_head or the projector)."""
        towers = [t for t, on in ((self.vision_tower, vision), (self.language_model, language)) if on]
        return rf".*(?:{'|'.join(towers)}).*\.(?:{'|'.join(targets)})"

    # -- sizes ----------------------------------------------------------------------------------------------------
    @staticmethod
    def lora_params(config: Any, targets, r: int, vision: bool, language: bool) -> int:
        """Trainable LoRA parameters: r x (in + out) per adapted linear layer of the selected towers."""
        total = 0
        t, v = getattr(config, "text_config", None), getattr(config, "vision_config", None)
        targets = set(targets)
        if t is not None and language:
            hd = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
            q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
            shapes = {"q_proj": (t.hidden_size, q), "k_proj": (t.hidden_size, kv), "v_proj": (t.hidden_size, kv),
                      "o_proj": (q, t.hidden_size), "gate_proj": (t.hidden_size, t.intermediate_size),
                      "up_proj": (t.hidden_size, t.intermediate_size),
                      "down_proj": (t.intermediate_size, t.hidden_size)}
            total += t.num_hidden_layers * sum(a + b for k, (a, b) in shapes.items() if k in targets)
        if v is not None and vision:
            shapes = {"q_proj": (v.hidden_size,) * 2, "k_proj": (v.hidden_size,) * 2, "v_proj": (v.hidden_size,) * 2,
                      "out_proj": (v.hidden_size,) * 2, "fc1": (v.hidden_size, v.intermediate_size),
                      "fc2": (v.intermediate_size, v.hidden_size)}
            total += v.num_hidden_layers * sum(a + b for k, (a, b) in shapes.items() if k in targets)
        return total * r

    @staticmethod
    def weight_bytes(config: Any, text_4bit: bool) -> int:
        """Bytes of the base's weights as trained: the text tower in 4-bit (about 0.56 byte per parameter with its
        scales) or bf16, the vision tower in bf16."""
        t, v = config.text_config, config.vision_config
        text = t.num_hidden_layers * (4 * t.hidden_size ** 2 + 3 * t.hidden_size * t.intermediate_size)
        text += t.vocab_size * t.hidden_size
        vision = v.num_hidden_layers * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size)
        return int(text * (0.56 if text_4bit else 2) + vision * 2)

    @staticmethod
    def logits_bytes(config: Any, tokens: int) -> int:
        """Float32 logits over the vocabulary and their gradient for `tokens` tokens: what dominates a VLM step."""
        return tokens * config.text_config.vocab_size * 4 * 2


def resample_of(image_processor) -> int | None:
    """The PIL filter an image processor resizes with (its own `resample`), or None when it does not resize."""
    if not getattr(image_processor, "do_resize", True):
        return None
    value = getattr(image_processor, "resample", None)
    return None if value is None else int(value)


def resize_like(image, size: int | None, image_processor):
    """`image` at size x size, resized with the processor's own filter in its own mode (so the processor's resize is
    then a no-op and the pixels are the ones it would make); unchanged if already that size."""
    if not size or image.size == (size, size):
        return image
    resample = resample_of(image_processor)
    if resample is None:
        raise ValueError(f"{type(image_processor).__name__} does not say how it resamples (no `resample`); hubkit "
                         "cannot resize training images as it would")
    return image.resize((size, size), resample)


def expand_images(processor, text: str) -> str:
    """`text` with each image placeholder expanded to the tokens the model sees for an image (markers included)."""
    return text.replace(processor.tokenizer.boi_token, processor.full_image_sequence)


def tokens_per_image(processor) -> int:
    """Soft tokens of one image (without its markers)."""
    return int(processor.image_seq_length)


GEMMA3 = ModelFamily(
    name="Gemma 3", model_types=("gemma3",), vision_tower="vision_tower", language_model="language_model",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "out_proj", "fc1",
                  "fc2"),
    generation_tail="model\n",
)
FAMILIES = (GEMMA3,)


def family_of(config: Any) -> ModelFamily:
    """The family of a model config (`AutoConfig`); ValueError naming its model_type when hubkit has none for it."""
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise ValueError(f"base model of model_type {model_type!r}: hubkit knows the image-text-to-text families "
                     f"{known}; its pixels, image tokens and prompt are defined for those only")
