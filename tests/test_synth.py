"""Tests for hubkit.devkit.synth: RSNA layout, DICOM tags, geometry conventions, determinism and label visibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest

import hubkit.devkit.synth as synth
from hubkit.schema import CONDITION_TITLES, LABEL_COLUMNS, LEVEL_TITLES, SEVERITY_NAMES

COORD_COLUMNS = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """4 studies, half Normal / half Severe labels so the visibility test sees both grades many times."""
    root = tmp_path_factory.mktemp("synth") / "rsna"
    return synth.synth_cohort(root, 4, seed=7, progress=False, label_probs=(0.5, 0.0, 0.5),
                              rates={"missing_series": 0.0, "nan_study": 0.0})


def _read(root, study_id, series_id, instance):
    return pydicom.dcmread(root / "train_images" / str(study_id) / str(series_id) / f"{instance}.dcm")


def _series(root, study_id, series_id):
    return [pydicom.dcmread(p) for p in (root / "train_images" / str(study_id) / str(series_id)).glob("*.dcm")]


def _patient_point(ds, x, y):
    """DICOM PS3.3 C.7.6.2.1.1: pixel (column x, row y) -> LPS mm."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    ps = np.array(ds.PixelSpacing, float)
    return ipp + x * ps[1] * iop[:3] + y * ps[0] * iop[3:]


def test_layout_and_csv_columns(cohort):
    assert sorted(p.name for p in cohort.iterdir()) == [
        "hubkit_synth.json", "train.csv", "train_images", "train_label_coordinates.csv",
        "train_series_descriptions.csv"]  # the marker lets dataset and model cards say "synthetic"
    train = pd.read_csv(cohort / "train.csv")
    assert list(train.columns) == ["study_id", *LABEL_COLUMNS]
    assert len(train) == 4 and train.study_id.is_unique
    assert train.study_id.astype(str).str.len().between(7, 10).all()
    assert set(train[list(LABEL_COLUMNS)].stack().unique()) <= set(SEVERITY_NAMES)
    sd = pd.read_csv(cohort / "train_series_descriptions.csv")
    assert list(sd.columns) == ["study_id", "series_id", "series_description"]
    assert set(sd.series_description) == {"Sagittal T1", "Sagittal T2/STIR", "Axial T2"}
    co = pd.read_csv(cohort / "train_label_coordinates.csv")
    assert list(co.columns) == COORD_COLUMNS
    assert set(co.condition) == set(CONDITION_TITLES.values()) and set(co.level) == set(LEVEL_TITLES.values())
    # Every study/series on disk is listed, and every coordinate points at an existing file.
    on_disk = {(int(p.parent.name), int(p.name)) for p in (cohort / "train_images").glob("*/*")}
    assert on_disk == set(zip(sd.study_id, sd.series_id))
    for r in co.itertuples():
        assert (cohort / "train_images" / str(r.study_id) / str(r.series_id) / f"{r.instance_number}.dcm").is_file()
    # Coordinates live on the conventional series type: canal->Sag T2, foramina->Sag T1, subarticular->axial.
    m = co.merge(sd, on=["study_id", "series_id"])
    kind = {"Spinal": "Sagittal T2/STIR", "Neural": "Sagittal T1", "Subarticular": "Axial T2"}
    for cond, desc in zip(m.condition, m.series_description):
        assert [v for k, v in kind.items() if k in cond] == [desc]
    assert len(co) == 4 * 25  # no NaNs, no missing series -> one row per label


def test_dicom_tags_and_pixels(cohort):
    sd = pd.read_csv(cohort / "train_series_descriptions.csv")
    sizes = set()
    for r in sd.itertuples():
        dss = _series(cohort, r.study_id, r.series_id)
        ds = dss[0]
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
        assert ds.PatientID == str(r.study_id) and str(ds.PatientName) == f"SYNTH^PATIENT{r.study_id}"
        assert len(ds.PatientBirthDate) == 8 and ds.SeriesDescription == r.series_description
        assert ds.SeriesInstanceUID.endswith(str(r.series_id)) and ds.StudyInstanceUID == str(r.study_id)
        for tag in ("SliceThickness", "SpacingBetweenSlices", "WindowCenter", "WindowWidth", "ImagePositionPatient"):
            assert tag in ds
        arr = ds.pixel_array
        assert arr.dtype == np.uint16 and arr.shape == (ds.Rows, ds.Columns) and arr.max() <= 4095
        assert 384 <= ds.Rows <= 640 and 384 <= ds.Columns <= 640
        sizes.add((ds.Rows, ds.Columns))
        assert sorted(d.InstanceNumber for d in dss) == list(range(1, len(dss) + 1))
        assert len(dss) >= 15  # sagittal 15-19 slices, axial 34-50 (stack) or 15-25 (angled blocks)
    assert len(sizes) > 1  # matrix varies per series


def test_instance_order_not_always_spatial(cohort):
    sd = pd.read_csv(cohort / "train_series_descriptions.csv")
    in_order = []
    for r in sd.itertuples():
        dss = _series(cohort, r.study_id, r.series_id)
        iop = np.array(dss[0].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        by_space = [d.InstanceNumber for d in sorted(dss, key=lambda d: np.dot(d.ImagePositionPatient, normal))]
        in_order.append(by_space == sorted(by_space))
    assert any(in_order) and not all(in_order)


def test_geometry_conventions(cohort):
    """Coordinates map back to the documented LPS positions; left = +x on both sagittal and axial."""
    co = pd.read_csv(cohort / "train_label_coordinates.csv")
    expect = {"Spinal Canal Stenosis": (0, 28), "Left Neural Foraminal Narrowing": (18, 22),
              "Right Neural Foraminal Narrowing": (-18, 22), "Left Subarticular Stenosis": (10, 22),
              "Right Subarticular Stenosis": (-10, 22)}
    disc_z = {LEVEL_TITLES[lv]: z for lv, z in synth.DISC_Z.items()}
    for r in co.itertuples():
        ds = _read(cohort, r.study_id, r.series_id, r.instance_number)
        assert 0 <= r.x < ds.Columns and 0 <= r.y < ds.Rows
        p = _patient_point(ds, r.x, r.y)
        ex, ey = expect[r.condition]
        tol_x = 3.0 if "Subarticular" not in r.condition else 0.5  # sagittal slices are 4-5 mm apart
        assert abs(p[0] - ex) <= tol_x and abs(p[1] - ey) <= 1.0, (r, p)
        assert abs(p[2] - disc_z[r.level]) <= 13.0 + 2.0, (r, p)  # jitter <= 3 + offset <= 10 (+ axial tilt)
        iop = np.array(ds.ImageOrientationPatient, float)
        if r.condition.startswith("Spinal") or "Neural" in r.condition:
            assert np.allclose(iop, [0, 1, 0, 0, 0, -1])


def test_labels_visible(cohort):
    """A trivial statistic (mean of a 6 mm box at the coordinate / image mean) separates Normal from Severe."""
    co = pd.read_csv(cohort / "train_label_coordinates.csv")
    train = pd.read_csv(cohort / "train.csv").set_index("study_id")
    stats = {}
    for r in co.itertuples():
        ds = _read(cohort, r.study_id, r.series_id, r.instance_number)
        a = ds.pixel_array.astype(float)
        h = 3.0 / float(ds.PixelSpacing[0])
        box = a[int(r.y - h):int(r.y + h) + 1, int(r.x - h):int(r.x + h) + 1]
        col = f"{r.condition.lower().replace(' ', '_')}_{r.level.lower().replace('/', '_')}"
        group = r.condition.split()[-2]  # Canal / Foraminal / Subarticular
        stats.setdefault(group, {}).setdefault(train.loc[r.study_id, col], []).append(box.mean() / a.mean())
    assert set(stats) == {"Canal", "Foraminal", "Subarticular"}
    for group, by in stats.items():
        assert len(by["Normal/Mild"]) >= 3 and len(by["Severe"]) >= 3, group
        assert min(by["Normal/Mild"]) > 2 * max(by["Severe"]), (group, by)


def test_determinism(tmp_path):
    a = synth.synth_cohort(tmp_path / "a", 1, seed=3, progress=False)
    b = synth.synth_cohort(tmp_path / "b", 1, seed=3, progress=False)
    for name in ("train.csv", "train_series_descriptions.csv", "train_label_coordinates.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files = sorted(p.relative_to(a) for p in a.rglob("*.dcm"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.dcm"))
    for rel in files[:: max(1, len(files) // 5)]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    c = synth.synth_cohort(tmp_path / "c", 1, seed=4, progress=False)
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()


def test_worker_processes_write_the_same_files(tmp_path):
    a = synth.synth_cohort(tmp_path / "a", 3, seed=8, progress=False)
    b = synth.synth_cohort(tmp_path / "b", 3, seed=8, progress=False, num_proc=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in files)


def test_quirks_missing_series_nan_two_angled_axials(tmp_path):
    rates = {"missing_series": 1.0, "nan_study": 1.0, "two_axial": 1.0, "angled_axial": 1.0}
    root = synth.synth_cohort(tmp_path / "q", 2, seed=11, progress=False, rates=rates)
    train = pd.read_csv(root / "train.csv").set_index("study_id")
    sd = pd.read_csv(root / "train_series_descriptions.csv")
    co = pd.read_csv(root / "train_label_coordinates.csv")
    for sid, g in sd.groupby("study_id"):
        descs = list(g.series_description)
        assert descs.count("Axial T2") == 2 and len(descs) == 3  # one sagittal dropped, two axials
        missing = ({"Sagittal T1", "Sagittal T2/STIR"} - set(descs)).pop()
        cond = "Spinal" if missing == "Sagittal T2/STIR" else "Neural"
        c = co[co.study_id == sid]
        assert not c.condition.str.contains(cond).any()
        assert train.loc[sid].notna().sum() < 25  # labels stay even without the series, a few are NaN
        # NaN labels have no coordinates; the axial points are on the first axial series only.
        labelled = c.condition.str.lower().str.replace(" ", "_") + "_" + c.level.str.lower().str.replace("/", "_")
        assert train.loc[sid, list(labelled)].notna().all()
        assert set(c[c.condition.str.contains("Subarticular")].series_id) == {g[g.series_description == "Axial T2"]
                                                                               .series_id.iloc[0]}
        # Angled per-disc blocks: 15-25 slices, tilted 5-15 degrees about x.
        dss = _series(root, sid, g[g.series_description == "Axial T2"].series_id.iloc[0])
        assert 15 <= len(dss) <= 25
        tilt = {round(np.degrees(np.arcsin(abs(float(d.ImageOrientationPatient[5])))), 1) for d in dss}
        assert all(4.9 <= t <= 15.1 for t in tilt) and len(tilt) > 1


def test_class_mix_close_to_rsna(tmp_path, monkeypatch):
    """Label draw only (rendering/writing stubbed): ~85% N, severe concentrated at L4L5/L5S1."""
    monkeypatch.setattr(synth, "_render", lambda ser, st, rng: np.zeros((len(ser.ipp), 1, 1), np.uint16))
    monkeypatch.setattr(synth, "_write_series", lambda *a, **k: None)
    root = synth.synth_cohort(tmp_path / "mix", 300, seed=0, progress=False)
    train = pd.read_csv(root / "train.csv")
    frac = train[list(LABEL_COLUMNS)].stack().value_counts(normalize=True)
    assert 0.80 <= frac["Normal/Mild"] <= 0.90 and 0.02 <= frac["Severe"] <= 0.07
    sev = lambda suffix: (train[[c for c in LABEL_COLUMNS if c.endswith(suffix)]] == "Severe").mean().mean()
    assert sev("l4_l5") > 2 * sev("l1_l2")
    nan_studies = train[list(LABEL_COLUMNS)].isna().any(axis=1).mean()
    assert 0 < nan_studies < 0.1


@pytest.fixture(scope="module")
def realistic(tmp_path_factory):
    """6 realistic-pose studies, half Normal / half Severe labels."""
    return synth.synth_cohort(tmp_path_factory.mktemp("real") / "rsna", 6, seed=17, progress=False, pose="realistic",
                              label_probs=(0.5, 0.0, 0.5), rates={"missing_series": 0.0, "nan_study": 0.0,
                                                                  "angled_axial": 0.5})


def test_realistic_pose_moves_spaces_and_curves_the_spine(realistic):
    """Tens of millimetres of translation, varied fields of view, tilted discs, axial stacks that end anywhere."""
    co = pd.read_csv(realistic / "train_label_coordinates.csv")
    sd = pd.read_csv(realistic / "train_series_descriptions.csv")
    canal = co[co.condition == "Spinal Canal Stenosis"]
    points, fovs, ax_fovs, axial_counts = {}, [], [], []
    for r in canal.itertuples():
        ds = _read(realistic, r.study_id, r.series_id, r.instance_number)
        points.setdefault(r.study_id, {})[r.level] = _patient_point(ds, r.x, r.y)
        fovs.append(float(ds.PixelSpacing[0]) * ds.Rows)
    for r in sd[sd.series_description == "Axial T2"].itertuples():
        dss = _series(realistic, r.study_id, r.series_id)
        ax_fovs.append(float(dss[0].PixelSpacing[1]) * dss[0].Columns)
        axial_counts.append(len(dss))
    l3 = np.array([p["L3/L4"] for p in points.values()])
    assert (l3.max(0) - l3.min(0) > 15).all(), l3  # the spine is not in the same place in every study
    assert 240 <= min(fovs) and max(fovs) <= 320 and max(fovs) - min(fovs) > 15
    assert 150 <= min(ax_fovs) and max(ax_fovs) <= 220
    for p in points.values():  # a lordotic curve: the discs are not on one vertical line, their spacing varies
        z = np.array([p[lv][2] for lv in sorted(p)])
        y = np.array([p[lv][1] for lv in sorted(p)])
        assert np.ptp(y) > 3 and np.ptp(np.diff(z)) > 0.5
    assert len(set(axial_counts)) > 1
    # Subarticular points exist only where an axial series reaches the level, and lie on their slice.
    sub = co[co.condition.str.contains("Subarticular")]
    assert 0 < len(sub) <= 2 * 5 * 6


def test_realistic_labels_are_visible_at_their_coordinates(realistic):
    """The same statistic against the point's own 30 mm surroundings (fields of view differ, so the image mean is not
    a common scale): a bright lumen at a Normal point, a narrowed dark one at a Severe point."""
    co = pd.read_csv(realistic / "train_label_coordinates.csv")
    train = pd.read_csv(realistic / "train.csv").set_index("study_id")
    stats = {}
    for r in co.itertuples():
        ds = _read(realistic, r.study_id, r.series_id, r.instance_number)
        a, ps = ds.pixel_array.astype(float), float(ds.PixelSpacing[0])

        def box(mm):
            h = mm / ps
            return a[max(0, int(r.y - h)):int(r.y + h) + 1, max(0, int(r.x - h)):int(r.x + h) + 1].mean()

        col = f"{r.condition.lower().replace(' ', '_')}_{r.level.lower().replace('/', '_')}"
        stats.setdefault(r.condition.split()[-2], {}).setdefault(train.loc[r.study_id, col], []).append(
            box(3) / box(15))
    assert set(stats) == {"Canal", "Foraminal", "Subarticular"}
    for group, by in stats.items():
        assert min(by["Normal/Mild"]) > 1.3 * max(by["Severe"]), (group, by)


def test_spines_of_replays_where_each_studys_structures_are(realistic):
    """`spines_of` (what benchmarks measure a localiser against) gives back each study's spine: every annotated
    point lies on its structure's landmark, up to its distance from the slice it was projected onto."""
    from hubkit.schema import CONDITION_TITLES, LEVEL_TITLES, LEVELS

    spines = synth.spines_of(realistic)
    co = pd.read_csv(realistic / "train_label_coordinates.csv")
    assert set(spines) == {str(s) for s in pd.read_csv(realistic / "train.csv").study_id}
    code = {v: k for k, v in CONDITION_TITLES.items()}
    level = {v: k for k, v in LEVEL_TITLES.items()}
    for r in co.itertuples():
        ds = _read(realistic, r.study_id, r.series_id, r.instance_number)
        true = spines[str(r.study_id)].landmark(code[r.condition], LEVELS.index(level[r.level]))
        off = true - _patient_point(ds, r.x, r.y)
        normal = np.cross(*np.array(ds.ImageOrientationPatient, float).reshape(2, 3))
        assert np.linalg.norm(off - (off @ normal) * normal) < 0.01  # in the slice's plane: exactly there
        assert abs(off @ normal) <= 0.75 * float(ds.SpacingBetweenSlices) + 0.01  # the nearest slice
