"""build-dataset: features, split, card, report, picker modes, and every bad-input rule of issue 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hubkit.config import BuildConfig
from hubkit.dataset_builder import rsna_csv
from hubkit.dataset_builder.build import build_dataset, split_studies
from hubkit.schema import CONDITIONS, LABEL_COLUMNS, LEVELS, parse_target


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from hubkit.devkit.synth import synth_cohort

    return synth_cohort(tmp_path_factory.mktemp("c") / "cohort", 10, seed=3, progress=False,
                        rates={"angled_axial": 0.5, "two_axial": 0.3})


@pytest.fixture(scope="module")
def built(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "ds"
    import datasets

    build_dataset(BuildConfig(data_dir=str(cohort), num_proc=2, slice_size=128), out, progress=False)
    return out, datasets.load_from_disk(str(out))


def _copy(cohort: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(cohort, dst)
    return dst


def test_dataset_features_split_and_targets(built):
    import datasets

    out, _ = built
    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"train", "validation"}
    assert (len(dd["train"]), len(dd["validation"])) == (9, 1)
    feats = dd["train"].features
    assert isinstance(feats["images"], datasets.List) and isinstance(feats["images"].feature, datasets.Image)
    for col in LABEL_COLUMNS:
        assert isinstance(feats[col], datasets.ClassLabel)
        assert feats[col].names == ["Normal/Mild", "Moderate", "Severe"]
    for row in dd["train"]:
        assert 1 <= len(row["images"]) <= 8 and len(row["images"]) == len(row["views"])
        assert row["images"][0].mode == "L" and row["images"][0].size == (128, 128)
        ans = parse_target(row["target"])
        assert list(ans) == list(LEVELS) and all(list(ans[lv]) == list(CONDITIONS) for lv in LEVELS)
        assert f"{len(row['views'])} lumbar spine MRI image(s) ({', '.join(row['views'])})" in row["prompt"]


def test_labels_match_csv_and_missing_stay_missing(built, cohort):
    import datasets

    dd = datasets.load_from_disk(str(built[0]))
    csv = rsna_csv.read_labels(cohort)
    for split in dd.values():
        for row in split:
            assert {c: row[c] for c in LABEL_COLUMNS} == csv[row["study_id"]]


def test_card_and_report(built):
    out, dd = built
    card = (out / "README.md").read_text()
    assert "| Spinal Canal Stenosis |" in card and "Label distribution" in card
    assert "label_distribution.png" in card and (out / "label_distribution.png").stat().st_size > 1000
    from huggingface_hub import DatasetCard

    from hubkit.cards.dataset import render_dataset_card
    from hubkit.manifest import read_manifest

    data = DatasetCard(card).data
    assert "medical" in data.tags and "synthetic" in data.tags
    assert data.license == "cc0-1.0" and "no restriction" in card  # a hubkit synth cohort: no RSNA terms
    assert 'load_from_disk("ds")' in card and "OWNER/NAME\")" not in card
    report = json.loads((out / "build_report.json").read_text())
    assert report["splits"] == {"train": 9, "validation": 1} and report["studies_built"] == 10
    # the manifest: the build's facts, which travel with the dataset into runs, cards and the pipeline
    manifest = read_manifest(out)
    assert manifest["slice_size"] == 128 and manifest["picker"] == "coords" and manifest["synthetic"]
    assert manifest["splits"] == report["splits"] and manifest["fingerprints"] == report["fingerprints"]
    assert manifest["images"] == {k: sum(len(v) for v in dd[k]["views"]) for k in dd}
    assert sum(sum(v) for v in manifest["label_counts"].values()) == 10 * 25
    # real RSNA data: the competition's terms, with the link the Hub asks for; the snippet names the pushed repo
    rsna = render_dataset_card({**manifest, "synthetic": False}, repo_id="me/lumbar-ds")
    data = DatasetCard(rsna).data
    assert "never be redistributed" in rsna and data.license == "other" and data.license_link.startswith("https://")
    assert 'load_dataset("me/lumbar-ds", streaming=True)' in rsna


def test_split_is_deterministic_and_by_study():
    ids = [str(i) for i in range(1000, 1040)]
    a, b = split_studies(ids, 0.1, 0), split_studies(list(reversed(ids)), 0.1, 0)
    assert a == b and len(a[1]) == 4 and not set(a[0]) & set(a[1])
    assert split_studies(ids, 0.1, 1) != a


def test_geometry_picker_matches_coords_on_synthetic(cohort):
    """Geometry mode (inference, no labels) lands on the coordinate slice or its neighbour (<= 6 mm away)."""
    from hubkit.dataset_builder.dicom import read_series
    from hubkit.dataset_builder.study import load_study

    descr = rsna_csv.read_descriptions(cohort)
    coords = rsna_csv.read_coordinates(cohort)
    dists = []
    for sid in sorted(descr)[:6]:
        a = load_study(cohort / "train_images" / sid, descr[sid], "coords", coords.get(sid), slice_size=64)
        g = load_study(cohort / "train_images" / sid, descr[sid], "geometry", None, slice_size=64)
        assert a.views == g.views
        for (view, sa, ia), (_, sg, ig) in zip(a.picks, g.picks):
            ha = read_series(cohort / "train_images" / sid / sa).by_instance(ia)
            hg = read_series(cohort / "train_images" / sid / sg).by_instance(ig)
            axis = 0 if view.startswith("Sagittal") else 2
            dists.append(abs(float(ha.center[axis] - hg.center[axis])))
    assert max(dists) <= 6.0, dists
    assert np.mean(dists) <= 3.5, dists


def test_label_visible_in_pixels(tmp_path):
    """A trivial statistic on the picked midline slice separates canal N from S far above chance."""
    from hubkit.dataset_builder.study import load_study
    from hubkit.devkit.synth import synth_cohort

    root = synth_cohort(tmp_path / "c", 6, seed=11, progress=False, label_probs=(0.5, 0.0, 0.5))
    descr, coords, labels = (rsna_csv.read_descriptions(root), rsna_csv.read_coordinates(root),
                             rsna_csv.read_labels(root))
    stats = {0: [], 2: []}
    for sid in descr:
        s = load_study(root / "train_images" / sid, descr[sid], "coords", coords.get(sid), slice_size=448)
        if "Sagittal T2" not in s.views:
            continue
        img = np.asarray(s.images[s.views.index("Sagittal T2")], dtype=float)
        canal_rows = [r for r in coords[sid] if r["condition"] == "Spinal Canal Stenosis"]
        for r in canal_rows:
            from hubkit.dataset_builder.dicom import read_series

            h = read_series(root / "train_images" / sid / r["series_id"]).by_instance(r["instance_number"])
            x, y = r["x"] * 448 / h.columns, r["y"] * 448 / h.rows
            box = img[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4]
            lv = r["level"].replace("/", "")
            grade = labels[sid][f"spinal_canal_stenosis_{lv[:2].lower()}_{lv[2:].lower()}"]
            if grade in stats:
                stats[grade].append(box.mean())
    n, s = np.array(stats[0]), np.array(stats[2])
    assert len(n) >= 5 and len(s) >= 5
    # AUC of "darker box => severe": must be far above chance (0.5).
    auc = np.mean([[float(a < b) + 0.5 * float(a == b) for b in n] for a in s])
    assert auc > 0.95, auc


# ---------------------------------------------------------------- bad input

def test_missing_csv_and_column(cohort, tmp_path):
    data = _copy(cohort, tmp_path)
    (data / "train_series_descriptions.csv").unlink()
    with pytest.raises(rsna_csv.CsvError, match="train_series_descriptions.csv: file not found"):
        build_dataset(BuildConfig(data_dir=str(data)), tmp_path / "out")
    df = pd.read_csv(cohort / "train.csv").drop(columns=["left_subarticular_stenosis_l4_l5"])
    shutil.copy(cohort / "train_series_descriptions.csv", data)
    df.to_csv(data / "train.csv", index=False)
    with pytest.raises(rsna_csv.CsvError, match="missing column.*left_subarticular_stenosis_l4_l5"):
        build_dataset(BuildConfig(data_dir=str(data)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_label_value_names_study_and_column(cohort, tmp_path):
    data = _copy(cohort, tmp_path)
    df = pd.read_csv(cohort / "train.csv", dtype=str)
    df.loc[2, "right_neural_foraminal_narrowing_l3_l4"] = "Severe!"
    df.to_csv(data / "train.csv", index=False)
    sid = str(int(df.loc[2, "study_id"]))
    with pytest.raises(rsna_csv.CsvError, match=f"study {sid} column right_neural_foraminal_narrowing_l3_l4"):
        build_dataset(BuildConfig(data_dir=str(data)), tmp_path / "out")


def test_malformed_and_duplicate_ids_are_skipped_and_reported(cohort, tmp_path):
    """Bad ids in any CSV: a warning naming file and line, the row (or the ambiguous study) left out, the rest built."""
    from click.testing import CliRunner

    from hubkit.cli import cli

    data = _copy(cohort, tmp_path)
    labels = pd.read_csv(cohort / "train.csv", dtype=str)
    dup_sid, bad_row = labels.loc[1, "study_id"], labels.loc[3].copy()
    bad_row["study_id"] = "12ab"
    labels = pd.concat([labels, labels.loc[[1]], bad_row.to_frame().T], ignore_index=True)
    labels.to_csv(data / "train.csv", index=False)
    series = pd.read_csv(cohort / "train_series_descriptions.csv", dtype=str)
    series.loc[0, "series_id"] = "n/a"
    series.to_csv(data / "train_series_descriptions.csv", index=False)
    coords = pd.read_csv(cohort / "train_label_coordinates.csv", dtype=str)
    coords.loc[0, "x"] = "left"
    coords.to_csv(data / "train_label_coordinates.csv", index=False)

    res = CliRunner().invoke(cli, ["build-dataset", str(data), "--output", str(tmp_path / "out"),
                                   "--image-size", "64"])
    assert res.exit_code == 0, res.output
    n = len(labels) + 1  # header line
    assert f"warning: train.csv:{n}: study_id '12ab' is not a number" in res.output
    assert f"warning: train.csv:{n - 1}: study_id {dup_sid} also on line 3" in res.output
    assert "warning: train_series_descriptions.csv:2: series_id 'n/a' is not a number" in res.output
    assert "warning: train_label_coordinates.csv:2: " in res.output
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert [(r["file"], r["line"]) for r in report["csv_rows_skipped"]] == [
        ("train.csv", n - 1), ("train.csv", n), ("train_series_descriptions.csv", 2),
        ("train_label_coordinates.csv", 2)]
    assert report["studies_built"] == 9  # 10 studies, the duplicated one left out
    assert dup_sid not in report["picks"]


def test_missing_study_series_and_bad_files_are_reported(cohort, tmp_path):
    data = _copy(cohort, tmp_path)
    sids = sorted(p.name for p in (data / "train_images").iterdir())
    shutil.rmtree(data / "train_images" / sids[0])  # whole study folder missing
    descr = rsna_csv.read_descriptions(data)
    t1 = next(s for s, d in descr[sids[1]].items() if d == "Sagittal T1")
    shutil.rmtree(data / "train_images" / sids[1] / t1)  # one series missing
    # Broken files in a third study: a non-DICOM file, a truncated picked slice, a header-only file.
    coords = rsna_csv.read_coordinates(data)[sids[2]]
    canal = next(r for r in coords if r["condition"] == "Spinal Canal Stenosis")
    picked = data / "train_images" / sids[2] / canal["series_id"] / f"{canal['instance_number']}.dcm"
    picked.write_bytes(picked.read_bytes()[:-5000])
    # A non-DICOM file where the left foramen's slice should be: reported, and the slot falls back to geometry.
    left = next(r for r in coords if r["condition"] == "Left Neural Foraminal Narrowing")
    (data / "train_images" / sids[2] / left["series_id"] / f"{left['instance_number']}.dcm").write_text("not a dicom")
    out = tmp_path / "out"
    report = build_dataset(BuildConfig(data_dir=str(data), validation_fraction=0.0), out)
    import datasets

    dd = datasets.load_from_disk(str(out))
    # the missing study is skipped, the rest are built; no validation split was asked for
    assert len(dd["train"]) == 9 and report["splits"] == {"train": 9} and "validation" in report["empty_splits"]
    report = json.loads((out / "build_report.json").read_text())
    assert [s["study_id"] for s in report["studies_skipped"]] == [sids[0]]
    assert "study folder not found" in report["studies_skipped"][0]["reason"]
    skipped = {Path(f["file"]).name: f["reason"] for f in report["files_skipped"]}
    assert "not a DICOM file" in skipped[f"{left['instance_number']}.dcm"]
    assert "truncated" in skipped[picked.name]
    assert any(t1 in f["file"] and "folder is missing" in f["reason"] for f in report["files_skipped"])
    row1 = dd["train"][[r for r in dd["train"]["study_id"]].index(sids[1])]
    assert "Sagittal T1 left" not in row1["views"] and len(row1["views"]) == 6
    row2 = dd["train"][[r for r in dd["train"]["study_id"]].index(sids[2])]
    assert "Sagittal T2" not in row2["views"] and "Sagittal T1 left" in row2["views"]
    notes = next(e["notes"] for e in report["studies_with_notes"] if e["study_id"] == sids[2])
    assert any(n.startswith(f"Sagittal T1 left: instance {left['instance_number']} missing or unreadable")
               for n in notes), notes


def test_compressed_without_decoder_names_package(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    from hubkit.dataset_builder.dicom import DicomError, read_header
    from hubkit.dataset_builder.pixels import load_slice

    ds = pydicom.examples.mr.copy()
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "c.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match=r"pip install 'hubkit-lumbar\[decoders\]'"):
        load_slice(read_header(path), 64)


def test_no_patient_data_reaches_dataset_card_or_report(built, cohort):
    """Only whitelisted header tags are read: names and birth dates from the DICOMs appear nowhere in the output."""
    import pydicom

    out, dd = built
    any_file = next((cohort / "train_images").rglob("*.dcm"))
    ds = pydicom.dcmread(any_file, stop_before_pixels=True)
    secrets = [str(ds.PatientName), str(ds.PatientBirthDate)]
    assert all(secrets) and "SYNTH" in secrets[0]
    blobs = [(out / "README.md").read_text(), (out / "build_report.json").read_text()]
    for split in dd.values():
        for col in ("study_id", "prompt", "target"):
            blobs.append("\n".join(split[col]))
        blobs.append("\n".join(v for views in split["views"] for v in views))
        assert not {"PatientName", "PatientBirthDate", "PatientID"} & set(split.column_names)
    for arrow in out.rglob("*.arrow"):
        blobs.append(arrow.read_bytes().decode("latin-1"))
    for secret in secrets:
        assert not any(secret in b for b in blobs), secret


def test_killed_build_resumes_without_redoing_studies(tmp_path):
    """SIGKILL `hubkit build-dataset` midway: the re-run reuses every finished study and gives the same dataset."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import datasets

    from hubkit.devkit.synth import synth_cohort

    root = synth_cohort(tmp_path / "c", 24, seed=5, progress=False)
    out = tmp_path / "ds"
    studies = tmp_path / ".ds.build" / "studies"
    cmd = [sys.executable, "-m", "hubkit.cli", "build-dataset", str(root), "--output", str(out), "--image-size", "64"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(studies.glob("[0-9]*"))) < 6:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    done_before = len(list(studies.glob("[0-9]*")))
    assert 6 <= done_before < 24, f"kill landed outside the build ({done_before} studies cached)"
    assert not (out / "build_report.json").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads((out / "build_report.json").read_text())
    assert report["studies_reused"] == done_before and report["studies_built"] == 24
    assert not studies.exists()  # the work folder goes once the build succeeded

    clean_report = build_dataset(BuildConfig(data_dir=str(root), slice_size=64), tmp_path / "clean")
    clean = datasets.load_from_disk(str(tmp_path / "clean"))
    resumed = datasets.load_from_disk(str(out))
    for split in ("train", "validation"):
        assert report["fingerprints"][split] == clean_report["fingerprints"][split]
        assert resumed[split]._fingerprint == datasets.load_from_disk(str(tmp_path / "clean"))[split]._fingerprint
        assert resumed[split]["target"] == clean[split]["target"]


def test_content_fingerprint_ignores_num_proc(cohort, tmp_path):
    one = build_dataset(BuildConfig(data_dir=str(cohort), slice_size=64, num_proc=1), tmp_path / "one")["fingerprints"]
    two = build_dataset(BuildConfig(data_dir=str(cohort), slice_size=64, num_proc=2), tmp_path / "two")["fingerprints"]
    assert one == two
    other = build_dataset(BuildConfig(data_dir=str(cohort), slice_size=72), tmp_path / "other")
    assert other["fingerprints"]["train"] != one["train"]


def test_png_encoding_is_lossless():
    import io

    from PIL import Image

    from hubkit.dataset_builder.studies_pass import encode_png

    rng = np.random.default_rng(0)
    for shape in ((1, 1), (3, 7), (448, 448), (17, 300)):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        for mode, img in (("L", Image.fromarray(a, mode="L")), ("RGB", Image.fromarray(a, mode="L").convert("RGB"))):
            back = Image.open(io.BytesIO(encode_png(img)["bytes"]))
            assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(img)), (shape, mode)
