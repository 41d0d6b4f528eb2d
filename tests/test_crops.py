"""hubkit.dataset_builder.crops (picker `crops`): squares in millimetres at each structure's point, the same whatever
the study's position or file order, mirrored by the slot table, cut alike by the builder and the pipeline."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import ImageOps

from hubkit import schema, slots
from hubkit.dataset_builder import rsna_csv
from hubkit.dataset_builder.study import load_study

SIZE = 64


@functools.lru_cache(maxsize=1)
def _cohort(root: str) -> Path:
    from hubkit.devkit.synth import synth_cohort

    return synth_cohort(Path(root) / "cohort", 3, seed=21, progress=False, pose="realistic",
                        rates={"missing_series": 0.0, "nan_study": 0.0, "angled_axial": 0.5})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return _cohort(str(tmp_path_factory.mktemp("crops")))


def _study(cohort: Path, i: int = 0) -> tuple[Path, dict, list[dict]]:
    sid = sorted(rsna_csv.read_labels(cohort), key=int)[i]
    return (cohort / "train_images" / sid, rsna_csv.read_descriptions(cohort)[sid],
            rsna_csv.read_coordinates(cohort)[sid])


def _pixels(study) -> list[bytes]:
    return [np.asarray(im).tobytes() for im in study.images]


@pytest.mark.parametrize("layout", ["separate", "mosaic"])
def test_translated_or_reordered_studies_give_bit_identical_crops(cohort, tmp_path, layout):
    folder, descr, coords = _study(cohort)
    ref = load_study(folder, descr, "crops", coords, slice_size=SIZE, layout=layout)
    assert ref.views == [v for v in slots.views_of("crops", layout) if v in ref.views] and len(ref.views) >= 4
    # the series a localiser already found (every header read, no pixels kept) crop to the same bytes
    from hubkit.dataset_builder.study import find_series

    found = find_series(folder, descr, by_uid=False)
    assert _pixels(load_study(folder, descr, "crops", coords, slice_size=SIZE, layout=layout, found=found)) == \
        _pixels(ref)
    moved = shutil.copytree(folder, tmp_path / "moved" / folder.name)
    for f in moved.rglob("*.dcm"):  # every series 37.5 mm left, 12.25 posterior, 50 up: the points stay on their pixels
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [f"{float(v) + d:.6g}" for v, d in zip(ds.ImagePositionPatient, (37.5, 12.25, 50))]
        ds.save_as(f)
    assert _pixels(load_study(moved, descr, "crops", coords, slice_size=SIZE, layout=layout)) == _pixels(ref)
    shuffled = shutil.copytree(folder, tmp_path / "shuffled" / folder.name)
    rng = np.random.default_rng(0)
    for series in (p for p in shuffled.iterdir() if p.is_dir()):  # file names no longer say the instance
        files = sorted(series.iterdir())
        for f, k in zip(files, rng.permutation(len(files))):
            f.rename(series / f"x{k}.tmp")
        for f in series.iterdir():
            f.rename(f.with_suffix(".dcm"))
    assert _pixels(load_study(shuffled, descr, "crops", coords, slice_size=SIZE, layout=layout)) == _pixels(ref)


def test_a_crop_is_cut_in_millimetres_from_the_local_disc_spacing(cohort):
    from hubkit.dataset_builder.crops import SIDE_MM, pick_crops
    from hubkit.dataset_builder.study import find_series

    folder, descr, coords = _study(cohort, 1)
    series, _ = find_series(folder, descr, by_uid=False)
    picks, _ = pick_crops(series, coords=coords, slots=slots.slots_of("crops", "separate"))
    canal = {p.view[:5]: p for p in picks if p.view.endswith("canal")}
    world = {lv: canal[lv].header.pixel_to_patient(canal[lv].region.col, canal[lv].region.row) for lv in canal}
    order = [schema.LEVEL_TITLES[lv] for lv in schema.LEVELS]
    mid = order[2]
    spacing = np.mean([np.linalg.norm(world[mid] - world[o]) for o in (order[1], order[3])])
    assert canal[mid].region.side_mm == pytest.approx(float(np.clip(2 * spacing, *SIDE_MM)), abs=1e-3)
    assert {p.region.side_mm for p in picks if p.view.startswith(mid)} == {canal[mid].region.side_mm}


@pytest.mark.parametrize("layout", ["separate", "mosaic"])
def test_a_mirrored_crops_study_swaps_its_left_and_right_and_nothing_else(cohort, layout):
    from hubkit.training.augment import mirror_study

    folder, descr, coords = _study(cohort, 2)
    study = load_study(folder, descr, "crops", coords, slice_size=SIZE, layout=layout)
    labels = {c: int(v) for c, v in zip(schema.LABEL_COLUMNS, np.random.default_rng(1).integers(0, 3, 25))}
    target = schema.build_target(labels)
    prompt = schema.build_prompt(study.views)
    images, views, m_prompt, m_target = mirror_study(study.images, study.views, prompt, target)
    assert views == study.views and m_prompt == prompt  # the slots keep their order and names
    answer, mirrored = schema.parse_target(target), schema.parse_target(m_target)
    for lv, c in schema.ANSWER_FIELDS:
        assert mirrored[lv][c] == answer[lv][slots.MIRRORED_CONDITION.get(c, c)]
    by_view = dict(zip(study.views, study.images))
    half = SIZE // 2
    for view, im in zip(views, images):
        slot = slots.slot_by_view(view)
        parts = [(slot, im)] if not slot.cells else [
            (cell, im.crop(((i % 2) * half, (i // 2) * half, (i % 2 + 1) * half, (i // 2 + 1) * half)))
            for i, cell in enumerate(slot.cells)]
        for cell, got in parts:
            twin = slots.mirror_view(cell.view)
            if slot.cells:
                j = [c.view for c in slot.cells].index(twin)
                src = by_view[view].crop(((j % 2) * half, (j // 2) * half, (j % 2 + 1) * half, (j // 2 + 1) * half))
            else:
                src = by_view[twin]
            want = ImageOps.mirror(src) if cell.mirrored_flip else src
            assert np.array_equal(np.asarray(got), np.asarray(want)), (view, cell.view)
            if cell.side is None and not cell.mirrored_flip:  # the canal: untouched
                assert np.array_equal(np.asarray(got), np.asarray(src))


def test_the_pipeline_cuts_the_builders_crops_given_the_points_and_says_when_it_has_none(cohort, tmp_path):
    from hubkit.inference.inputs import study_from_input

    folder, descr, coords = _study(cohort)
    built = load_study(folder, descr, "crops", coords, slice_size=SIZE)
    csv = cohort / "train_label_coordinates.csv"
    got, _ = study_from_input(str(folder), SIZE, cohort / "train_series_descriptions.csv", picker="crops",
                              coordinates=str(csv))
    assert got.views == built.views and _pixels(got) == _pixels(built)
    with pytest.raises(ValueError, match="trained on crops at each level's points: pass coordinates=.*never falls "
                                         "back to whole slices"):
        study_from_input(str(folder), SIZE, picker="crops")
