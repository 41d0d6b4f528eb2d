"""hubkit.processor_cache and inference's prepare_inputs on it: the processor's exact tensors, made without it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from hubkit.processor_cache import PixelTable, difference
from hubkit.slots import VIEWS

SIZE = 128


@pytest.fixture(scope="module")
def processor():
    from hubkit.devkit.base_models import build_processor, build_tokenizer

    return build_processor(build_tokenizer(), SIZE, 16)


def _gray(rng, side: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), mode="L")


def test_pixel_table_equals_the_processor_at_every_size_and_mode(processor):
    rng = np.random.default_rng(0)
    # gray at the processor's size, gray of other sizes (resized like the processor does), RGB (the processor's way)
    images = [_gray(rng, SIZE), _gray(rng, 448), _gray(rng, 97), _gray(rng, SIZE).convert("RGB")]
    want = processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="np")
    table = PixelTable(processor.image_processor)
    table.table()
    calls = []
    table.image_processor = lambda **kw: calls.append(len(kw["images"])) or processor.image_processor(**kw)
    got = table.pixels(images)
    assert got.dtype == np.float32 and np.array_equal(got, np.asarray(want["pixel_values"]))
    assert calls == [1]  # only the RGB image went through the processor: the gray ones, resized or not, did not


def _studies(n: int):
    from hubkit.inference.studies import StudyInput

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        views = list(VIEWS[:(8, 5, 3)[i % 3]])  # different lengths: left padding matters
        out.append(StudyInput([_gray(rng, 160) for _ in views], views))
    return out


def _processor_way(processor, studies):
    from hubkit import schema
    from hubkit.chat import build_chat_row

    texts, images = [], []
    for s in studies:
        row = build_chat_row(s.images, s.views, schema.build_prompt(s.views))
        texts.append(processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False))
        images.append([im.convert("RGB") for im in row["images"]])
    return dict(processor(text=texts, images=images, padding=True, padding_side="left", add_special_tokens=False,
                          return_tensors="pt"))


def test_prepare_inputs_gives_the_processors_batch(processor):
    from hubkit.inference import studies as st

    studies = _studies(5)
    for batch in (studies[:3], studies[3:], studies[:1], studies):
        assert difference(_processor_way(processor, batch), dict(st.prepare_inputs(processor, batch))) is None
    assert st._FAST[processor].state == "fast"  # checked once, then made without the processor


def test_prepare_inputs_falls_back_to_the_processor_on_any_difference(processor, monkeypatch, caplog):
    import copy

    from hubkit.inference import studies as st

    other = copy.deepcopy(processor)  # a processor of its own: the check runs again for it
    real = PixelTable.pixels
    monkeypatch.setattr(PixelTable, "pixels", lambda self, images: real(self, images) + np.float32(1e-3))
    batch = _studies(2)
    with caplog.at_level(logging.WARNING, logger="hubkit.inference"):
        first = dict(st.prepare_inputs(other, batch))
    assert st._FAST[other].state == "processor" and "using the processor" in caplog.text
    assert difference(_processor_way(other, batch), first) is None  # the processor's own batch was returned
    assert difference(_processor_way(other, batch), dict(st.prepare_inputs(other, batch))) is None
    assert torch.is_tensor(first["pixel_values"])
