"""hubkit.model_family: training and inference make the same pixels whatever filter the processor resamples with, and
a base of a family hubkit does not know is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hubkit import schema
from hubkit.config import TrainConfig
from hubkit.model_family import GEMMA3, expand_images, family_of, resample_of, resize_like, tokens_per_image
from hubkit.slots import VIEWS

SIZE, STORED = 64, 96  # the tower's input side, and the side the dataset stores its slices at


@pytest.fixture(scope="module")
def bicubic(tmp_path_factory):
    """A tiny Gemma 3 processor that resizes bicubically (Gemma 3's own resizes bilinearly)."""
    from transformers import AutoProcessor

    from hubkit.devkit.base_models import write_tiny_base

    base = write_tiny_base(tmp_path_factory.mktemp("bicubic") / "base", image_size=SIZE, patch_size=8)
    processor = AutoProcessor.from_pretrained(base)
    processor.image_processor.resample = int(Image.Resampling.BICUBIC)
    processor.save_pretrained(base)
    return AutoProcessor.from_pretrained(base)


def _dataset(folder, images, views) -> str:
    import datasets

    row = {"study_id": ["1"], "images": [images], "views": [views], "prompt": [schema.build_prompt(views)],
           "target": [schema.build_target({})]}
    features = datasets.Features({"study_id": datasets.Value("string"), "images": [datasets.Image()],
                                  "views": [datasets.Value("string")], "prompt": datasets.Value("string"),
                                  "target": datasets.Value("string")})
    one = datasets.Dataset.from_dict(row, features=features)
    datasets.DatasetDict({"train": one, "validation": one}).save_to_disk(str(folder))
    return str(folder)


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_training_streams_the_pixels_inference_makes_with_a_bicubic_processor(bicubic, tmp_path, cache_mb):
    from hubkit.inference.studies import StudyInput, prepare_inputs
    from hubkit.training.collate import CachedVLMCollator
    from hubkit.training.data import open_streams

    assert resample_of(bicubic.image_processor) == Image.Resampling.BICUBIC
    rng = np.random.default_rng(0)
    views = list(VIEWS[:3])
    images = [Image.fromarray(rng.integers(0, 256, (STORED, STORED), dtype=np.uint8), mode="L") for _ in views]
    ds = _dataset(tmp_path / "ds", images, views)
    cfg = TrainConfig(image_cache_mb=cache_mb, shuffle_buffer=1)
    streams = open_streams(ds, cfg, vision_size=SIZE, image_processor=bicubic.image_processor)
    row = next(iter(streams["validation"]))
    assert [im.size for im in row["images"]] == [(SIZE, SIZE)] * 3
    trained_on = CachedVLMCollator(bicubic)([row])["pixel_values"]
    inferred = prepare_inputs(bicubic, [StudyInput(images, views)])["pixel_values"]
    assert torch.equal(trained_on, inferred)  # the same pixels, bit for bit
    # what a hard-coded bilinear pre-resize gave: a silent skew this test exists to catch
    bilinear = [im.resize((SIZE, SIZE), Image.Resampling.BILINEAR) for im in images]
    skewed = prepare_inputs(bicubic, [StudyInput(bilinear, views)])["pixel_values"]
    assert not torch.equal(skewed, inferred)


def test_resize_like_keeps_the_image_when_it_has_the_size_and_needs_a_filter(bicubic):
    im = Image.new("L", (SIZE, SIZE))
    assert resize_like(im, SIZE, bicubic.image_processor) is im and resize_like(im, None, None) is im

    class NoFilter:
        do_resize = True

    with pytest.raises(ValueError, match="does not say how it resamples"):
        resize_like(Image.new("L", (8, 8)), SIZE, NoFilter())


def test_image_tokens_and_family_facts(bicubic):
    text = f"a{bicubic.tokenizer.boi_token}b"
    expanded = expand_images(bicubic, text)
    assert expanded.count(bicubic.tokenizer.image_token) == tokens_per_image(bicubic) > 0
    assert GEMMA3.lora_regex(("q_proj", "fc1"), vision=True, language=False) == r".*(?:vision_tower).*\.(?:q_proj|fc1)"
    assert TrainConfig().lora_target_modules == GEMMA3.lora_targets


def test_a_base_of_another_family_is_refused_naming_its_type():
    from types import SimpleNamespace

    assert family_of(SimpleNamespace(model_type="gemma3")) is GEMMA3
    with pytest.raises(ValueError, match="model_type 'llava'.*Gemma 3 \\(gemma3\\)"):
        family_of(SimpleNamespace(model_type="llava"))
