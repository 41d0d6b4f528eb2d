"""A crops model that ships its localiser (`hubkit.inference.localized`): the pipeline and `hubkit predict` find a
DICOM study's points by themselves, say which they used, and give a level they cannot place the class priors."""

from __future__ import annotations

import csv
import json
import warnings

import pytest

from hubkit import schema
from tests.fixtures.localizer import located_model

pytest.importorskip("torch")


def _probs_of_csv(path) -> dict[str, list[float]]:
    with open(path) as fh:
        return {r["row_id"]: [float(r[k]) for k in schema.SUBMISSION_COLUMNS] for r in csv.DictReader(fh)}


def _labels(probs: dict[str, list[float]]) -> dict[str, str]:
    return {k: schema.CODES[max(range(3), key=p.__getitem__)] for k, p in probs.items()}


def test_predict_from_the_hub_repo_alone_localises_and_matches_evaluate(local_hub, tmp_path):
    """`hubkit predict` on a test folder with no coordinates, from the model's Hub repo alone (the localiser travels
    in it), gives the labels `hubkit evaluate` gives on the same studies cropped at the same localiser's points."""
    import shutil

    from hubkit.evaluation import evaluate_model
    from hubkit.eval_record import predictions_file
    from hubkit.inference.predict import predict_folder
    from hubkit.publish import push_run_folder

    data, ds, run = located_model()
    run = shutil.copytree(run, tmp_path / "run")
    push_run_folder(run, "owner/lumbar-crops-loc", token=local_hub.owner_token)
    report = predict_folder(data, "owner/lumbar-crops-loc", tmp_path / "sub.csv", batch_size=2, calibrate=False,
                            progress=False)
    assert report.studies == 3 and not report.failed
    got = _probs_of_csv(tmp_path / "sub.csv")
    evaluate_model(run, ds, split="train", output=tmp_path / "eval", batch_size=2, progress=False, calibrate=False)
    want = {f"{rec['study_id']}_{col}": p for rec in map(json.loads, predictions_file(tmp_path / "eval")
                                                         .read_text().splitlines()) for col, p in rec["probs"].items()}
    assert _labels(got) == _labels(want) and got.keys() == want.keys()
    assert all(g == pytest.approx(want[k], abs=1e-4) for k, g in got.items())  # the same crops, not just labels
    assert len({tuple(p) for p in got.values()}) > 3  # the model read the studies (not one constant answer)


def test_the_pipeline_says_which_points_it_used_and_gives_an_unplaced_level_the_priors(monkeypatch):
    """A study whose L1/L2 the localiser cannot place (as a sagittal series cut short above L2/L3 would be): one
    warning naming the level, 'unplaced_levels' in the output, the class priors in that level's five fields only,
    and the points used for the others."""
    from hubkit.inference import localized
    from hubkit.inference.pipeline import load_pipeline
    from hubkit.inference.predict import class_priors
    from hubkit.localizer.locate import Localizer

    data, _, run = located_model()
    study = sorted((data / "test_images").iterdir())[0]
    descriptions = str(data / "test_series_descriptions.csv")
    pipe = load_pipeline(str(run))
    assert pipe.facts.localizer and pipe.facts.localizer.endswith("localizer")
    whole = pipe(str(study), series_descriptions=descriptions, calibrate=False)
    assert whole["points"] and "unplaced_levels" not in whole

    locate = Localizer.locate

    def cut_short(self, series):
        rows, notes, placed = locate(self, series)
        return [r for r in rows if r["level"] != "L1/L2"], notes + ["L1/L2: not found"], placed

    monkeypatch.setattr(Localizer, "locate", cut_short)
    localized._localizer.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pipe(str(study), series_descriptions=descriptions, calibrate=False)
    unplaced = [w for w in caught if issubclass(w.category, localized.UnplacedLevelWarning)]
    assert len(unplaced) == 1 and "L1/L2" in str(unplaced[0].message)
    assert out["unplaced_levels"] == ["L1L2"] and all(p["level"] != "L1/L2" for p in out["points"])
    priors = class_priors(pipe.facts.label_counts)
    for c in schema.CONDITIONS:
        assert out["probs"][schema.label_column(c, "L1L2")] == priors[schema.label_column(c, "L1L2")]
        assert out["levels"]["L1L2"][c]["label"] == "N"
    others = [col for col in schema.LABEL_COLUMNS if not col.endswith("l1_l2")]
    assert any(out["probs"][col] != priors[col] for col in others)
    assert schema.parse_target(out["json"])["L1L2"] == {c: "N" for c in schema.CONDITIONS}


def test_the_card_shows_the_localisers_errors_and_picture(tmp_path):
    """The model card of a run that ships a localiser: its source and hash, its out-of-fold errors, the picture of
    one study (shipped beside it), and consumers told the pipeline localises by itself."""
    import shutil

    from hubkit.cards.model import render_model_card
    from hubkit.localizer import FOLDER
    from hubkit.localizer.figure import EXAMPLE_FILE

    _, _, run = located_model()
    run = shutil.copytree(run, tmp_path / "run")
    text = render_model_card(run, None, "owner/lumbar-crops-loc")
    assert "### Level localiser" in text and "`loc` (sha256" in text and "| right level |" in text
    assert f"]({FOLDER}/{EXAMPLE_FILE})" in text and (run / FOLDER / EXAMPLE_FILE).is_file()
    assert "find a DICOM study's points with that localiser" in text


def test_the_picture_of_a_real_cohorts_study_stays_in_the_run_folder(tmp_path):
    """Trained on a cohort that is not synthetic (RSNA's own), the localiser's picture is a training image: the
    card says where it is kept and links nothing, and a push leaves it out."""
    import dataclasses
    import shutil

    from hubkit.cards.model import render_model_card
    from hubkit.localizer import EXAMPLE_FILE, FOLDER
    from hubkit.publish import _picture
    from hubkit.run_record import read_run, write_run

    _, _, run = located_model()
    assert _picture(run) == [f"{FOLDER}/{EXAMPLE_FILE}"]  # the synthetic cohort's picture is published
    run = shutil.copytree(run, tmp_path / "run")
    rec = read_run(run)
    real = dataclasses.replace(rec.dataset, manifest={**rec.manifest, "synthetic": False})
    write_run(run, dataclasses.replace(rec, dataset=real))
    text = render_model_card(run, None, "owner/lumbar-crops-loc")
    assert f"]({FOLDER}/{EXAMPLE_FILE})" not in text and "not in this repo" in text
    assert _picture(run) == []
