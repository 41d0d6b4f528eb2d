"""A training collator for Gemma 3 prompt-completion chat rows: TRL's output, without TRL's per-batch cost.

TRL's `DataCollatorForVisionLanguageModeling` renders the chat template, expands every image placeholder, tokenizes
and normalises every image on every batch: a large share of a tiny CPU model's step (BENCHMARKS.md 4a), while a
study's text takes only a handful of distinct values (its prompt depends on its views, its answer on its grades).
`CachedVLMCollator` therefore:

- renders + tokenizes each distinct (prompt, completion) once, through the processor itself, and keeps the ids;
- turns each 8-bit gray image into pixel values with one 256-entry table per channel, measured from the
  processor's own image path (`hubkit.processor_cache.PixelTable`: the same floats); any other image goes through
  the processor;
- pads and masks like TRL (prompt + completion per row, right padding, loss on the completion only).

The first batch is also collated by TRL's collator and compared tensor by tensor; on any difference the run
falls back to TRL's collator with a warning, so a processor this was not written for costs speed, not correctness.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from hubkit.processor_cache import PixelTable, difference, text_tokens

log = logging.getLogger("hubkit.train")


class CachedVLMCollator:
    """Collates TRL conversational prompt-completion rows with images (completion-only loss) for Gemma 3."""

    def __init__(self, processor, max_cached: int = 100_000) -> None:
        self.processor = processor
        self.pad_id = processor.tokenizer.pad_token_id
        self.pixels = PixelTable(processor.image_processor)
        self.max_cached = max_cached
        self._texts: dict[str, tuple[str, str]] = {}
        self._ids: dict[tuple[str, int], dict[str, list[int]]] = {}
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
        return text_tokens(self.processor, text, n_images, self.pixels.size, self._ids, self.max_cached)

    def _remember(self, store: dict, key, value) -> None:
        if len(store) < self.max_cached:
            store[key] = value

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
                "pixel_values": torch.from_numpy(self.pixels.pixels(images)), "labels": labels}

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
        diff = difference(want, got)
        self.checked = True
        if diff:
            log.warning("fast collator differs from TRL's on the first batch (%s): using TRL's collator", diff)
            self.fallback = reference
            return want
        return got

