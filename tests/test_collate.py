"""hubkit.training.collate: the cached collator returns exactly TRL's batch, caches text, and falls back when it cannot."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from hubkit import chat, schema
from hubkit.processor_cache import difference
from hubkit.training.collate import CachedVLMCollator
from hubkit.slots import VIEWS

SIZE = 128


@pytest.fixture(scope="module")
def processor():
    from hubkit.devkit.base_models import build_processor, build_tokenizer

    return build_processor(build_tokenizer(), SIZE, 16)


def _reference(processor, rows):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    return dict(DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)(copy.deepcopy(rows)))


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Studies with 8, 5 or 3 images, random 8-bit pixels and grades; one RGB and one off-size image."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = (8, 5, 3)[i % 3]
        views = list(VIEWS[:k])
        images = [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8), mode="L") for _ in views]
        labels = {c: int(rng.integers(-1, 3)) for c in schema.LABEL_COLUMNS}
        rows.append(chat.build_chat_row(images, views, schema.build_prompt(views), schema.build_target(labels)))
    rows[1]["images"][0] = rows[1]["images"][0].convert("RGB")
    rows[2]["images"][1] = Image.fromarray(rng.integers(0, 256, (200, 150), dtype=np.uint8), mode="L")
    return rows


def test_batches_equal_trls_exactly(processor):
    rows = _rows(7)
    collator = CachedVLMCollator(processor)
    for batch in (rows[:4], rows[4:], rows[:1]):
        want, got = _reference(processor, batch), collator(batch)
        assert difference(want, got) is None
        assert set(got) == {"input_ids", "attention_mask", "token_type_ids", "pixel_values", "labels"}
    assert collator.checked and collator.fallback is None
    # Loss only on the answer: the first labelled token follows the generation prompt, padding is never labelled.
    labels = got["labels"][0]
    assert (labels != -100).sum() == len(processor.tokenizer(rows[0]["completion"][0]["content"][0]["text"],
                                                              add_special_tokens=False)["input_ids"]) + 2


def test_text_is_tokenized_once_per_distinct_study_text(processor):
    rows = _rows(6)
    collator = CachedVLMCollator(processor)
    collator(rows)
    texts, ids = len(collator._texts), len(collator._ids)
    again = [dict(r, images=[im.transpose(Image.Transpose.FLIP_TOP_BOTTOM) for im in r["images"]]) for r in rows]
    out = collator(again)  # new pixels, same texts: nothing new rendered or tokenized
    assert (len(collator._texts), len(collator._ids)) == (texts, ids)
    assert difference(_reference(processor, again), out) is None


def test_a_differing_first_batch_falls_back_to_trl(processor, monkeypatch, caplog):
    rows = _rows(3)
    collator = CachedVLMCollator(processor)
    real = collator._fast

    def off_by_one(examples):
        batch = real(examples)
        batch["pixel_values"] = batch["pixel_values"] + 1e-3
        return batch

    monkeypatch.setattr(collator, "_fast", off_by_one)
    with caplog.at_level(logging.WARNING, logger="hubkit.train"):
        first = collator(rows)
    assert "pixel_values" in caplog.text and collator.fallback is not None
    assert torch.equal(first["pixel_values"], _reference(processor, rows)["pixel_values"])
    assert difference(_reference(processor, rows[1:]), collator(rows[1:])) is None  # TRL's from then on
