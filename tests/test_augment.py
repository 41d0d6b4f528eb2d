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


def test_intensity_mode_changes_values_but_never_moves_anatomy():
    im = _asymmetric()
    bright = np.asarray(im) > 0
    aug = Augmenter(5, mode="intensity")
    for _ in range(20):
        a = np.asarray(aug.image(im), dtype=float)
        assert not np.array_equal(a, np.asarray(im, dtype=float))
        assert a[bright].min() > a[~bright].max()  # the block keeps exactly its pixels
    # Same seed, same call order: "full" draws the affine first, so the two modes differ.
    full, intensity = Augmenter(5, "full").image(im), Augmenter(5, "intensity").image(im)
    assert not np.array_equal(np.asarray(full), np.asarray(intensity))


def test_modes_are_validated_and_true_means_full():
    import pytest

    from hubkit.train_config import TrainConfig

    with pytest.raises(ValueError, match="'intensity' or 'full'"):
        Augmenter(0, mode="flip")
    assert TrainConfig(augment=True).augment == "full" and TrainConfig(augment=False).augment == "none"
    assert TrainConfig(augment="intensity").augment == "intensity"
    with pytest.raises(ValueError, match="augment must be none, intensity or full"):
        TrainConfig(augment="geometry")
