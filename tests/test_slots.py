"""hubkit.slots: one table of slots per picker mode, read by the picker, the prompt, the budget, the mirror, the
pipeline and the phantom; a new mode is its table plus one function."""

from __future__ import annotations

import pytest
from PIL import Image

from hubkit import schema, slots
from hubkit.schema import SeriesKind


def test_every_mode_shows_every_condition_at_every_level():
    for picker in slots.modes():
        for layout in slots.mode(picker).layouts:
            table = slots.slots_of(picker, layout)
            shown = {(lv, c) for s in table for cell in (s.cells or (s,)) for c in cell.conditions
                     for lv in ([cell.level] if cell.level else schema.LEVELS)}
            assert shown == set(schema.ANSWER_FIELDS), (picker, layout)
            views = [s.view for s in table]
            assert len(views) == len(set(views)), (picker, layout)


def test_crop_tables_are_level_major_and_the_mosaic_holds_each_levels_four_crops():
    separate, mosaic = slots.slots_of("crops", "separate"), slots.slots_of("crops", "mosaic")
    assert len(separate) == 20 and len(mosaic) == 5 and slots.mode("crops").default_layout == "mosaic"
    assert [s.level for s in separate] == [lv for lv in schema.LEVELS for _ in range(4)]
    for m in mosaic:
        assert m.cells == slots.crop_slots(m.level) and set(m.conditions) == set(schema.CONDITIONS)
    assert slots.views_of("geometry") == list(slots.VIEWS) == slots.views_of("coords")
    assert [slots.series_of_condition(c) for c in ("canal", "lf", "ls")] == [SeriesKind.SAG_T2, SeriesKind.SAG_T1,
                                                                             SeriesKind.AX_T2]


def test_the_mirror_reads_the_table():
    assert slots.mirror_view("Sagittal T1 left") == "Sagittal T1 right"
    assert slots.mirror_view("L4/L5 Sagittal T1 right foramen") == "L4/L5 Sagittal T1 left foramen"
    assert slots.mirror_view("L4/L5 Sagittal T2 canal") == "L4/L5 Sagittal T2 canal"
    assert slots.mirror_cells(slots.slots_of("crops", "mosaic")[3]) == [(0, False), (2, False), (1, False),
                                                                        (3, True)]


def test_views_name_one_slot_everywhere():
    with pytest.raises(ValueError, match="already name other slots"):
        slots.register_mode("clash", {None: (slots.Slot("Sagittal T2", SeriesKind.SAG_T1, None, None, ("lf",)),)},
                            lambda *a, **k: ([], []))
    assert "clash" not in slots.modes()


@pytest.fixture
def toy_mode(monkeypatch):
    """A picker mode registered by a test: one slot, the middle slice of the sagittal T2, and its one function."""
    from hubkit.dataset_builder.slices import Pick, series_by_kind

    def middle(series, *, mode, coords, slots):
        by_kind, notes = series_by_kind(series)
        t2 = by_kind[SeriesKind.SAG_T2]
        if not t2:
            return [], notes + ["no sagittal T2"]
        cut = t2[0].slices
        return [Pick(slots[0].view, t2[0].series_id, cut[len(cut) // 2])], notes

    monkeypatch.setattr(slots, "_MODES", dict(slots._MODES))  # the registry as it was, after the test
    table = (slots.Slot("Sagittal T2 middle slice", SeriesKind.SAG_T2, None, None, ("canal",)),)
    return slots.register_mode("toy", {None: table}, middle)


def test_a_toy_mode_is_its_table_and_one_function(toy_mode, tmp_path):
    import datasets

    from hubkit.config import BuildConfig, TrainConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.base_models import build_processor, build_tokenizer
    from hubkit.devkit.synth import synth_cohort
    from hubkit.inference.inputs import study_from_input
    from hubkit.manifest import read_manifest
    from hubkit.training.augment import mirror_study
    from hubkit.training.data import sequence_budget

    cohort = synth_cohort(tmp_path / "cohort", 2, seed=2, progress=False, rates={"missing_series": 0.0})
    build_dataset(BuildConfig(data_dir=str(cohort), picker="toy", slice_size=32, validation_fraction=0.5),
                  tmp_path / "ds", progress=False)
    row = datasets.load_from_disk(str(tmp_path / "ds"))["train"][0]
    assert row["views"] == ["Sagittal T2 middle slice"] and "1 lumbar spine MRI image(s) (Sagittal T2 middle" \
        in row["prompt"]
    manifest = read_manifest(tmp_path / "ds")
    assert manifest["views"] == ["Sagittal T2 middle slice"] and manifest["slots"][0]["conditions"] == ["canal"]
    study, _ = study_from_input(str(sorted((cohort / "train_images").iterdir())[0]), 32, picker="toy")
    assert study.views == ["Sagittal T2 middle slice"]
    processor = build_processor(build_tokenizer(), 64, 16)
    assert sequence_budget(processor, TrainConfig(), manifest["views"]) < sequence_budget(processor, TrainConfig())
    im = Image.new("L", (8, 8), 3)
    assert mirror_study([im], row["views"], row["prompt"], row["target"])[0] == [im]  # no side: nothing moves
