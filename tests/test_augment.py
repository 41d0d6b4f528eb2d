"""hubkit.augment: deterministic per seed, keeps size and mode, changes pixels, never mirrors left/right."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hubkit.augment import Augmenter


def _asymmetric(size=64) -> Image.Image:
    a = np.zeros((size, size), np.uint8)
    a[16:48, 6:20] = 220  # a bright block on the image's left only
    return Image.fromarray(a, mode="L")


def test_deterministic_for_a_seed_and_keeps_geometry():
    im = _asymmetric()
    one, two, other = Augmenter(3)([im, im]), Augmenter(3)([im, im]), Augmenter(4)([im])
    assert [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(one, two)] == [True, True]
    assert not np.array_equal(np.asarray(one[0]), np.asarray(other[0]))
    assert not np.array_equal(np.asarray(one[0]), np.asarray(one[1]))  # each image drawn independently
    assert all(o.size == im.size and o.mode == "L" for o in one)
    rgb = Augmenter(0).image(im.convert("RGB"))
    assert rgb.mode == "RGB" and rgb.size == im.size


def test_never_flips_left_and_right():
    aug = Augmenter(0)
    for _ in range(50):
        a = np.asarray(aug.image(_asymmetric()), dtype=float)
        assert a[:, :32].mean() > a[:, 32:].mean() + 20  # the bright block stays on the left
