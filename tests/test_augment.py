"""hubkit.training.augment: deterministic per seed, keeps size and mode, changes pixels; only a whole study with its labels
is ever mirrored left/right."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hubkit.training.augment import Augmenter


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

    from hubkit.config import TrainConfig

    with pytest.raises(ValueError, match="'intensity' or 'full'"):
        Augmenter(0, mode="flip")
    assert TrainConfig(augment=True).augment == "full" and TrainConfig(augment=False).augment == "none"
    assert TrainConfig(augment="intensity").augment == "intensity"
    with pytest.raises(ValueError, match="augment must be none, intensity or full"):
        TrainConfig(augment="geometry")


def _study():
    from hubkit import schema

    views = ["Sagittal T2", "Sagittal T1 left", "Sagittal T1 right", "Axial T2 L4/L5"]
    images = [Image.fromarray(np.full((8, 8), 10 * (i + 1), np.uint8), mode="L") for i in range(3)] + [_asymmetric()]
    labels = {schema.label_column("lf", "L4L5"): 2, schema.label_column("rf", "L4L5"): 0,
              schema.label_column("ls", "L5S1"): 1, schema.label_column("canal", "L3L4"): 2}
    return images, views, schema.build_prompt(views), schema.build_target(labels)


def test_mirror_study_swaps_sides_with_their_labels():
    from hubkit import schema
    from hubkit.training.augment import mirror_study

    images, views, prompt, target = _study()
    m_images, m_views, m_prompt, m_target = mirror_study(images, views, prompt, target)
    assert (m_views, m_prompt) == (views, prompt)  # both T1s present: same slots, same prompt
    assert [np.asarray(im)[0, 0] for im in m_images[:3]] == [10, 30, 20]  # T2 kept, the T1s traded places
    axial = np.asarray(m_images[3], dtype=float)
    assert axial[:, 32:].mean() > axial[:, :32].mean() + 20  # the axial's bright block moved to the other side
    got = schema.parse_target(m_target)
    assert (got["L4L5"]["lf"], got["L4L5"]["rf"]) == ("N", "S")
    assert (got["L5S1"]["ls"], got["L5S1"]["rs"]) == ("N", "M")
    assert got["L3L4"]["canal"] == "S" and m_target.count(":") == target.count(":")  # canal kept, compact form
    back = mirror_study(m_images, m_views, m_prompt, m_target)
    assert back[3] == target and np.array_equal(np.asarray(back[0][3]), np.asarray(images[3]))  # an involution


def test_mirror_study_renames_a_lone_t1_view_and_its_prompt():
    from hubkit import schema
    from hubkit.training.augment import mirror_study

    images, views, _, target = _study()
    views, images = [views[0], views[1], views[3]], [images[0], images[1], images[3]]
    _, m_views, m_prompt, _ = mirror_study(images, views, schema.build_prompt(views), target)
    assert m_views == ["Sagittal T2", "Sagittal T1 right", "Axial T2 L4/L5"]
    assert m_prompt == schema.build_prompt(m_views)
    with pytest.raises(ValueError):
        mirror_study(images, views, "p", '{"L1L2":{}}')


def test_left_right_mirror_probability_and_validation():
    from hubkit.training.augment import LeftRightMirror
    from hubkit.config import TrainConfig

    images, views, prompt, target = _study()
    assert LeftRightMirror(0.0)(images, views, prompt, target)[3] == target
    assert LeftRightMirror(1.0)(images, views, prompt, target)[3] != target
    one, two = LeftRightMirror(0.5, seed=7), LeftRightMirror(0.5, seed=7)
    seq = [one(images, views, prompt, target)[3] != target for _ in range(200)]
    assert seq == [two(images, views, prompt, target)[3] != target for _ in range(200)]  # deterministic per seed
    assert 70 < sum(seq) < 130
    with pytest.raises(ValueError, match="lr_flip"):
        TrainConfig(lr_flip=1.5)
