"""What the decoders take and give: `StudyInput` in, `StudyPrediction` out, and the one processor call between.

`prepare_inputs` builds the batch exactly as training does (`chat.build_chat_row`, the processor's chat template,
left padding), so every decoder (`decoding.constrained_decode`, `generate.free_generate`) sees the same tokens.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Sequence

from hubkit import schema
from hubkit.chat import build_chat_row


@dataclasses.dataclass
class StudyInput:
    """One study for the decoder: images (PIL or anything the processor takes), one view name per image."""

    images: list
    views: list[str]
    prompt: str | None = None  # default: schema.build_prompt(views), the training prompt
    study_id: str | None = None
    # A crops model's study located by its shipped localiser: the points its crops were cut at, and the levels it
    # could not place (their fields get the class priors: `inference.localized`). None otherwise.
    points: list | None = None
    unplaced: list | None = None
    # The images as the model was given them, kept for the output when a call asks (`return_images=True`): `images`
    # itself is emptied once encoded.
    shown: list | None = None


@dataclasses.dataclass
class StudyPrediction:
    """Decoded answer of one study.

    labels: {level: {condition: "N"|"M"|"S"}} (the answer's own nesting); probs: {RSNA label column: [p_normal_mild,
    p_moderate, p_severe]} (sum 1), the one shape probabilities keep from here to `predictions.csv` (the submission's
    row id is `<study>_<label column>`); json: the compact answer; schema_mass: smallest total probability (full
    vocabulary) the model gave the three codes at a code position (1.0 for free generation); parse_failed/text:
    free generation only.
    """

    labels: dict[str, dict[str, str]]
    probs: dict[str, list[float]]
    json: str
    schema_mass: float = 1.0
    parse_failed: bool = False
    text: str | None = None
    study_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def nest(values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {lv: {} for lv in schema.LEVELS}
    for (lv, c), v in zip(schema.ANSWER_FIELDS, values):
        out[lv][c] = v
    return out


def by_column(values: Sequence[Any]) -> dict[str, Any]:
    """25 values in answer order -> {RSNA label column: value}."""
    return {schema.label_column(c, lv): v for (lv, c), v in zip(schema.ANSWER_FIELDS, values)}


def as_study(s: Any) -> StudyInput:
    if isinstance(s, StudyInput):
        return s
    if isinstance(s, dict):
        return StudyInput(list(s["images"]), list(s["views"]), s.get("prompt"), s.get("study_id"))
    raise TypeError(f"expected StudyInput or a dict with images and views, got {type(s).__name__}")


def prepare_inputs(processor, studies: Sequence[StudyInput | dict]):
    """Processor outputs for a left-padded batch, built with `chat.build_chat_row` exactly as in training.

    Made by `FastInputs` (the processor's ids per distinct text, its pixel values through a table) once the first
    batch showed them equal to the processor's own output; else by the processor itself."""
    texts, images = [], []
    for s in map(as_study, studies):
        row = build_chat_row(s.images, s.views, s.prompt or schema.build_prompt(s.views))
        texts.append(processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False))
        images.append(list(row["images"]))
    fast = _FAST.get(processor)
    if fast is None:
        fast = _FAST[processor] = FastInputs(processor)
    return fast(processor, texts, images)


# One FastInputs per processor object, dropped with it (kept off the processor: its to_dict deep-copies attributes).
_FAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _processor_inputs(processor, texts: list[str], images: list[list]):
    rgb = [[im.convert("RGB") if hasattr(im, "convert") else im for im in ims] for ims in images]
    return processor(text=texts, images=rgb, padding=True, padding_side="left", add_special_tokens=False,
                     return_tensors="pt")


class FastInputs:
    """`processor(text=..., images=..., padding_side="left")` for batches of gray 8-bit studies, without re-running
    the processor's image path or tokenizer on every batch (`hubkit.processor_cache`). The first batch is also made
    by the processor and compared tensor by tensor; on any difference the processor makes every batch (logged)."""

    def __init__(self, processor) -> None:
        from hubkit.processor_cache import PixelTable

        self.pixels = PixelTable(processor.image_processor)
        self.ids: dict = {}
        self.state = "unchecked"  # -> "fast" or "processor"

    def __call__(self, processor, texts: list[str], images: list[list]):
        if self.state == "processor":
            return _processor_inputs(processor, texts, images)
        got = self._fast(processor, texts, images)
        if self.state == "unchecked":
            import logging

            from hubkit.processor_cache import difference

            want = _processor_inputs(processor, texts, images)
            diff = difference(dict(want), dict(got))
            self.state = "processor" if diff else "fast"
            if diff:
                logging.getLogger("hubkit.inference").warning(
                    "fast inputs differ from the processor's (%s): using the processor", diff)
                return want
        return got

    def _fast(self, processor, texts: list[str], images: list[list]):
        import torch
        from transformers import BatchFeature

        from hubkit.processor_cache import text_tokens

        rows = [text_tokens(processor, t, len(ims), self.pixels.size, self.ids) for t, ims in zip(texts, images)]
        width = max(len(r["input_ids"]) for r in rows)
        n = len(rows)
        pad = processor.tokenizer.pad_token_id
        ids = torch.full((n, width), 0 if pad is None else pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        types = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding
            k = len(r["input_ids"])
            ids[i, width - k:] = torch.tensor(r["input_ids"])
            types[i, width - k:] = torch.tensor(r["token_type_ids"])
            mask[i, width - k:] = 1
        flat = [im for ims in images for im in ims]
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if flat:
            out["pixel_values"] = torch.from_numpy(self.pixels.pixels(flat))
        return BatchFeature(out)


# Tensors a processor gives per token position (padded on the left in a batch), and their padding values.
_PER_TOKEN = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}


def merge_encoded(encodings: Sequence[Any], pad_id: int):
    """One batch from `prepare_inputs` of single studies: what `prepare_inputs` of them all gives (left padding of
    the token tensors, images concatenated in order), so studies can be encoded apart, e.g. in worker processes."""
    import torch
    from transformers import BatchFeature

    width = max(int(e["input_ids"].shape[1]) for e in encodings)
    out = {}
    for key in encodings[0]:
        parts = [e[key] for e in encodings]
        if key in _PER_TOKEN:
            fill = pad_id if _PER_TOKEN[key] is None else _PER_TOKEN[key]
            parts = [torch.cat([torch.full((p.shape[0], width - p.shape[1]), fill, dtype=p.dtype), p], 1)
                     for p in parts]
        out[key] = torch.cat(parts, 0)
    return BatchFeature(out)


def core_model(model):
    """The module to call: a PEFT wrapper's underlying model (LoRA layers are injected into it in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def to_device(enc, model) -> dict:
    import torch

    dev = next(model.parameters()).device
    dtype = getattr(model, "dtype", None) or torch.float32
    out = {}
    for k, v in enc.items():
        if hasattr(v, "to"):
            v = v.to(dev)
            if k == "pixel_values" and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)

