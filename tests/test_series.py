"""dataset_builder.series: any scanner's series, in any vendor's words, in any folder layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from hubkit.dataset_builder.dicom import Plane
from hubkit.dataset_builder.series import classify, tokens
from hubkit.schema import SeriesKind

SAG, AX, COR = Plane.SAGITTAL, Plane.AXIAL, Plane.CORONAL
ST2, ST1, AT2 = SeriesKind.SAG_T2, SeriesKind.SAG_T1, SeriesKind.AX_T2

CASES = [  # description, plane from geometry, TR, TE, TI, ImageType, expected kind
    ("Sagittal T2/STIR", None, None, None, None, (), ST2),  # RSNA's own words: taken as they are
    ("Sagittal T1", None, None, None, None, (), ST1),
    ("Axial T2", None, None, None, None, (), AT2),
    ("t2_tse_sag_384", SAG, 3500, 104, None, (), ST2),  # Siemens
    ("t1_tse_sag_320", SAG, 650, 9.5, None, (), ST1),
    ("t2_tse_tra_384", AX, 4000, 98, None, (), AT2),  # "tra", not "ax"
    ("t2_tirm_sag_p2", SAG, 4000, 45, 160, (), ST2),  # STIR
    ("T2_TSE_STIR_SAG_P2", SAG, 3800, 48, 220, (), ST2),
    ("t2_tse_dixon_sag_320_F", SAG, 4000, 90, None, ("DERIVED", "PRIMARY", "DIXON", "FAT"), None),
    ("T1 FSE SAG", SAG, 550, 10, 0, (), ST1),  # GE (TI 0 = no inversion)
    ("AX T2 FRFSE", AX, 3960, 99, 0, (), AT2),
    ("OSag STIR", SAG, 3800, 42, 150, (), ST2),
    ("Sag T1 FLAIR", SAG, 2100, 24, 750, (), ST1),  # a T1-FLAIR is a T1
    ("SAG T2 FLAIR", SAG, 9000, 120, 2500, (), None),  # CSF dark: not for the canal
    ("T2W_TSE SAG", SAG, 3000, 120, None, (), ST2),  # Philips
    ("sT1W_TSE", SAG, 600, 10, None, (), ST1),
    ("T2W_TSE TRA", AX, 3000, 110, None, (), AT2),
    ("T2WI_SAG", SAG, 3000, 100, None, (), ST2),  # Canon
    ("STIR_SAG", SAG, 4000, 40, 160, (), ST2),
    ("SAG T2 T11-S1", SAG, 3000, 100, None, (), ST2),  # T11 is a vertebra, not a weighting
    ("3-Plane Loc", SAG, 1000, 83, None, (), None),  # localizers, diffusion, gradient echo: none of the three
    ("localizer", SAG, 8.6, 4, None, (), None),
    ("AX DWI b50-b700", AX, 9543, 72, None, (), None),
    ("AX T2* MEDIC", AX, 600, 15, None, (), None),
    ("SAG PD FS", SAG, 3000, 30, None, (), None),
    ("T2 COR", COR, 3000, 100, None, (), None),  # coronal: not an RSNA slot
    ("", SAG, 3500, 100, None, (), ST2),  # no description: the times decide
    ("", SAG, 600, 10, None, (), ST1),
    ("", AX, 4000, 95, None, (), AT2),
    ("", SAG, 4000, 45, 160, (), ST2),
    ("", SAG, 2500, 50, None, (), None),  # between the windows: unknown, not guessed
    ("T2 SAG", SAG, 500, 10, None, (), ST1),  # times beat a renamed protocol ...
    ("SAG STIR", SAG, 3500, 100, None, (), ST2),  # ... except T2 vs STIR, which share the slot
    ("Series 5", SAG, 3500, 100, None, (), ST2),  # words that name no weighting: the times
]


@pytest.mark.parametrize("desc,plane,tr,te,ti,image_type,kind", CASES, ids=[f"{c[0]!r}-{c[1]}" for c in CASES])
def test_classify(desc, plane, tr, te, ti, image_type, kind):
    got = classify(desc, plane, tr, te, ti, image_type)
    assert got.kind is kind, got.reason
    assert got.reason and "\n" not in got.reason


def test_tokens_split_vendor_glue():
    assert tokens("sT2W_TSE") == ["s", "t2w", "tse"]
    assert tokens("FST2_SAGC") == ["fs", "t2", "sag"]
    assert "t2star" in tokens("AX T2* MEDIC") and "t11" not in tokens("SAG T2 T11-S1")


# --------------------------------------------------------------------------- one study, re-labelled three ways
VENDOR = {"Sagittal T2/STIR": "t2_tse_sag_384", "Sagittal T1": "T1 FSE SAG", "Axial T2": "AX T2 FRFSE"}


def _rewrite(study: Path, out: Path, how: str) -> Path:
    """A copy of `study` with every series' description rewritten (`vendor`), removed (`no-description`, the
    times stay), or with every file in one flat folder (`flat`)."""
    out.mkdir(parents=True)
    for f in sorted(study.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        if how == "vendor":
            ds.SeriesDescription = VENDOR[ds.SeriesDescription]
        elif how == "no-description":
            del ds.SeriesDescription
        dst = out / f"{f.parent.name}-{f.name}" if how == "flat" else out / f.parent.name / f.name
        dst.parent.mkdir(exist_ok=True)
        ds.save_as(dst)
    return out


@pytest.fixture(scope="module")
def one_study(tmp_path_factory):
    from hubkit.devkit.synth import synth_cohort

    root = synth_cohort(tmp_path_factory.mktemp("series") / "c", 1, seed=21, progress=False,
                        rates={"missing_series": 0.0, "two_axial": 0.0})
    return next((root / "train_images").iterdir())


@pytest.mark.parametrize("how", ["vendor", "no-description", "flat"])
def test_relabelled_study_gives_the_same_views_pixels_and_labels(one_study, how, tmp_path):
    from hubkit.dataset_builder.study import load_study
    from hubkit.inference.pipeline import load_pipeline
    from tests.fixtures.tiny_run import trained_tiny_run

    ref = load_study(one_study, slice_size=64)
    variant = _rewrite(one_study, tmp_path / one_study.name, how)
    got = load_study(variant, slice_size=64)
    assert got.views == ref.views and len(ref.views) == 8
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got.images, ref.images))
    pipe = load_pipeline(trained_tiny_run()[0])
    assert pipe(str(variant))["json"] == pipe(str(one_study))["json"]


def test_descriptions_table_wins_and_is_found_beside_the_images_folder(one_study, tmp_path):
    from hubkit.dataset_builder.study import load_study
    from hubkit.inference.inputs import study_from_input

    series = sorted(p.name for p in one_study.iterdir())
    blind = _rewrite(one_study, tmp_path / "test_images" / one_study.name, "no-description")
    wrong = {s: "localizer" for s in series}  # the table wins over the headers (and over the times)
    with pytest.raises(ValueError, match="no usable slice"):
        study_from_input(str(blind), slice_size=64, descriptions=wrong)
    # the competition layout: test_images/<study>/ beside test_series_descriptions.csv
    real = {p.name: pydicom.dcmread(next(p.iterdir())).SeriesDescription for p in one_study.iterdir()}
    rows = "".join(f"{one_study.name},{s},{d}\n" for s, d in real.items())
    (tmp_path / "test_series_descriptions.csv").write_text("study_id,series_id,series_description\n" + rows)
    shutil.rmtree(blind)
    _rewrite(one_study, blind, "vendor")
    for f in blind.rglob("*.dcm"):  # headers say nothing useful now; only the CSV does
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "series"
        del ds.RepetitionTime
        ds.save_as(f)
    study, _ = study_from_input(str(blind), slice_size=64)
    assert study.views == load_study(one_study, slice_size=64).views
