"""The Space's app without a browser (`hubkit.space.app.report`): an uploaded zip → the 25 fields as the pipeline
gives them, the images the model was given, the localiser's points drawn, the notes; a zip it cannot read → one
sentence."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from hubkit import schema
from hubkit.space.app import HEADERS, StudyError, report, study_folder, table_rows

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def located():
    from tests.fixtures.localizer import located_model, located_pipeline

    return sorted((located_model()[0] / "test_images").iterdir())[0], located_pipeline()


def zipped(study, tmp_path) -> str:
    """The study folder zipped as a user would (the folder itself at the top)."""
    return shutil.make_archive(str(tmp_path / study.name), "zip", study.parent, study.name)


def test_report_shows_the_pipelines_25_fields_the_images_and_the_points(located, tmp_path):
    study, pipe = located
    steps = []
    r = report(pipe, zipped(study, tmp_path), lambda f, desc=None: steps.append((f, desc)))
    want = pipe(str(study))
    assert len(r["rows"]) == 25 and all(len(row) == len(HEADERS) for row in r["rows"])
    assert r["rows"] == table_rows(want)
    assert [row[:2] for row in r["rows"][:2]] == [["Spinal Canal Stenosis", "L1/L2"], ["Spinal Canal Stenosis",
                                                                                          "L2/L3"]]
    for row, (c, lv) in zip(r["rows"], ((c, lv) for c in schema.CONDITIONS for lv in schema.LEVELS)):
        assert row[2] == want["levels"][lv][c]["severity"] and sum(row[3:]) == pytest.approx(1, abs=0.01)
    assert [caption for _, caption in r["images"]] == want["views"]
    assert r["points"] and all(img.size[0] >= 256 for img, _ in r["points"])
    assert {caption.split(":")[0] for _, caption in r["points"]} <= {"canal", "left foramen", "right foramen"}
    assert r["notes"].startswith(f"**Study {study.name}**") and "images given to the model" in r["notes"]
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and len(steps) >= 3


def test_a_zip_of_the_series_themselves_or_nested_deeper_is_found(located, tmp_path):
    study, _ = located
    deeper = tmp_path / "upload" / "patient" / study.name
    shutil.copytree(study, deeper)
    z = shutil.make_archive(str(tmp_path / "deep"), "zip", tmp_path / "upload")
    assert study_folder(z, tmp_path / "w1").name == study.name
    flat = shutil.make_archive(str(tmp_path / study.name), "zip", study)  # the series folders at the top
    found = study_folder(flat, tmp_path / "w2")
    assert found.name == study.name and {p.name for p in found.iterdir()} == {p.name for p in study.iterdir()}


def _zip(path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return str(path)


def test_what_it_cannot_read_is_one_sentence_naming_the_fix(located, tmp_path):
    study, pipe = located
    dcm = next(study.rglob("*.dcm")).read_bytes()
    cases = {
        "not a zip": ((tmp_path / "a.zip").write_bytes(b"plain text") and str(tmp_path / "a.zip"), "not a zip file"),
        "no dicom": (_zip(tmp_path / "b.zip", {"s/readme.txt": b"hi"}), "holds no DICOM files"),
        "two studies": (_zip(tmp_path / "c.zip", {"1/10/1.dcm": dcm, "2/20/1.dcm": dcm}), "holds 2 studies"),
        "no series folders": (_zip(tmp_path / "d.zip", {"1.dcm": dcm, "2.dcm": dcm}), "without series folders"),
        "outside": (_zip(tmp_path / "e.zip", {"../../evil/1/1.dcm": dcm}), "outside its own folder"),
    }
    for name, (upload, says) in cases.items():
        with pytest.raises(StudyError) as e:
            report(pipe, upload)
        assert says in str(e.value) and "\n" not in str(e.value) and str(e.value).endswith("."), name
    assert not (tmp_path.parent / "evil").exists()


def test_a_failure_inside_the_model_is_one_sentence_too(located, tmp_path):
    study, _ = located

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory\nTried to allocate 2.00 GiB")

    with pytest.raises(StudyError) as e:
        report(broken, zipped(study, tmp_path))
    assert str(e.value) == "The model could not grade this study (RuntimeError: CUDA out of memory.)"
