"""A training collator for Gemma 3 prompt-completion chat rows: TRL's output, without TRL's per-batch cost.

TRL's `DataCollatorForVisionLanguageModeling` renders the chat template, expands every image placeholder, tokenizes
and normalises every image on every batch: a large share of a tiny CPU model's step (BENCHMARKS.md 4a), while a
study's text takes only a handful of distinct values (its prompt depends on its views, its answer on its grades).
`CachedVLMCollator` therefore:

- renders + tokenizes each distinct (prompt, completion) once, through the processor itself, and keeps the ids;
- turns each 8-bit image of the processor's input size into pixel values with one 256-entry table per channel,
  measured from the processor's own image path (rescale + normalise are per-pixel functions of the 8-bit value, so
  the table reproduces them exactly); any other image goes through the processor;
- pads and masks like TRL (prompt + completion per row, right padding, loss on the completion only).

The first batch is also collated by TRL's collator and compared tensor by tensor; on any difference the run
falls back to TRL's collator with a warning, so a processor this was not written for costs speed, not correctness.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import numpy as np

log = logging.getLogger("hubkit.train")


class CachedVLMCollator:
    """Collates TRL conversational prompt-completion rows with images (completion-only loss) for Gemma 3."""

    def __init__(self, processor, max_cached: int = 100_000) -> None:
        self.processor = processor
        self.pad_id = processor.tokenizer.pad_token_id
        size = processor.image_processor.size
        self.size = (size["width"], size["height"])
        self.max_cached = max_cached
        self._texts: dict[str, tuple[str, str]] = {}
        self._ids: dict[tuple[str, int], dict[str, list[int]]] = {}
        self._lut: np.ndarray | None = None
        self._gray = False
        self.checked = False
        self.fallback = None

    # -- text -------------------------------------------------------------------------------------------------
    def _render(self, ex: dict) -> tuple[str, str]:
        """(prompt text with generation prompt, completion text) exactly as TRL's apply_chat_template splits them."""
        key = json.dumps([ex["prompt"], ex["completion"]], sort_keys=True, default=str)
        hit = self._texts.get(key)
        if hit is None:
            from trl.data_utils import apply_chat_template, prepare_multimodal_messages

            example = {"prompt": prepare_multimodal_messages(ex["prompt"], images=ex["images"]),  # new dicts
                       "completion": prepare_multimodal_messages(ex["completion"])}
            out = apply_chat_template(example, self.processor)
            hit = (out["prompt"], out["completion"])
            self._remember(self._texts, key, hit)
        return hit

    def _tokens(self, text: str, n_images: int) -> dict[str, list[int]]:
        """input_ids / token_type_ids of `text` as the processor makes them (images expanded to soft tokens)."""
        key = (text, n_images)
        hit = self._ids.get(key)
        if hit is None:
            from PIL import Image

            blanks = [Image.new("L", self.size)] * n_images
            kwargs = {"images": [blanks]} if n_images else {}
            out = self.processor(text=[text], add_special_tokens=False, **kwargs)
            ids = list(np.asarray(out["input_ids"][0]).tolist())
            types = out.get("token_type_ids")
            hit = {"input_ids": ids,
                   "token_type_ids": list(np.asarray(types[0]).tolist()) if types is not None else [0] * len(ids)}
            self._remember(self._ids, key, hit)
        return hit

    def _remember(self, store: dict, key, value) -> None:
        if len(store) < self.max_cached:
            store[key] = value

    # -- pixels -----------------------------------------------------------------------------------------------
    def _table(self) -> np.ndarray:
        """(3, 256) float32: the processor's pixel value for each 8-bit gray level, per channel."""
        if self._lut is None:
            from PIL import Image

            w, h = self.size
            ramp = (np.arange(w * h) % 256).astype(np.uint8).reshape(h, w)
            px = np.asarray(self.processor.image_processor(images=[Image.fromarray(ramp, mode="L")],
                                                           return_tensors="np")["pixel_values"][0])
            lut = np.empty((px.shape[0], 256), np.float32)
            for v in range(256):
                lut[:, v] = px[:, ramp == v][:, 0]
            self._lut = lut
            self._gray = bool((lut == lut[:1]).all())
        return self._lut

    def _pixels(self, images: list) -> np.ndarray:
        lut = self._table()
        out = np.empty((len(images), lut.shape[0], self.size[1], self.size[0]), np.float32)
        slow = []
        for i, im in enumerate(images):
            if getattr(im, "mode", None) == "L" and im.size == self.size:
                a = np.asarray(im)
                if self._gray:  # the same table for every channel (mean/std equal per channel): one lookup
                    out[i] = np.take(lut[0], a)[None]
                else:
                    for c in range(lut.shape[0]):
                        out[i, c] = np.take(lut[c], a)
            else:
                slow.append(i)
        if slow:
            px = self.processor.image_processor(images=[images[i] for i in slow], return_tensors="np")
            out[slow] = np.asarray(px["pixel_values"], np.float32)
        return out

    # -- batch ------------------------------------------------------------------------------------------------
    def _fast(self, examples: list[dict]) -> dict[str, Any]:
        import torch

        rows = []
        for ex in examples:
            prompt, completion = self._render(ex)
            p = self._tokens(prompt, len(ex["images"]))
            c = self._tokens(completion, 0)
            rows.append((p, c))
        width = max(len(p["input_ids"]) + len(c["input_ids"]) for p, c in rows)
        n = len(rows)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        types = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            lp, lc = len(p["input_ids"]), len(c["input_ids"])
            ids[i, :lp + lc] = torch.tensor(p["input_ids"] + c["input_ids"])
            types[i, :lp + lc] = torch.tensor(p["token_type_ids"] + c["token_type_ids"])
            mask[i, :lp + lc] = 1
            labels[i, lp:lp + lc] = ids[i, lp:lp + lc]
        images = [im for ex in examples for im in ex["images"]]
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                "pixel_values": torch.from_numpy(self._pixels(images)), "labels": labels}

    def __call__(self, examples: list[dict]) -> dict[str, Any]:
        if self.fallback is not None:
            return self.fallback(examples)
        if not self.checked:
            return self._checked(examples)
        return self._fast(examples)

    def _checked(self, examples: list[dict]) -> dict[str, Any]:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        reference = DataCollatorForVisionLanguageModeling(self.processor, completion_only_loss=True)
        want = dict(reference(copy.deepcopy(examples)))
        got = self._fast(examples)
        diff = _difference(want, got)
        self.checked = True
        if diff:
            log.warning("fast collator differs from TRL's on the first batch (%s): using TRL's collator", diff)
            self.fallback = reference
            return want
        return got


def _difference(want: dict, got: dict) -> str | None:
    """None if both batches hold the same keys with equal tensors, else what differs."""
    import torch

    if set(want) != set(got):
        return f"keys {sorted(want)} vs {sorted(got)}"
    for k in want:
        a, b = torch.as_tensor(want[k]), torch.as_tensor(got[k])
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            return f"{k}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    return None
