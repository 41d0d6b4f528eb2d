"""Calibration: fitted to the official score (hubkit.evaluation.calibration), applied by inference
(hubkit.inference.calibration) in the pipeline and `hubkit evaluate`; `hubkit calibrate` writes and pushes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hubkit import schema
from hubkit.evaluation.calibration import fit_calibration, official_score
from hubkit.inference.calibration import Calibration
from hubkit.run_record import read_calibration, write_calibration
from tests.fixtures.competition import calibrated_tiny_run, competition_folder
from tests.fixtures.submissions import assert_same_submission
from tests.fixtures.tiny_run import make_study, trained_tiny_run

N_COLS = len(schema.LABEL_COLUMNS)


def _cohort(seed: int, studies: int = 200, power: float = 3.0, severe_factor: float = 1.0):
    """Labels drawn from true per-row distributions, and a model that states those distributions too sharply
    (`power` > 1) and with P(severe) scaled by `severe_factor`."""
    rng = np.random.default_rng(seed)
    true = rng.dirichlet([6, 2, 1], size=(studies, N_COLS))
    refs = np.array([[rng.choice(3, p=p) for p in study] for study in true])
    refs[rng.random(refs.shape) < 0.03] = -1  # some labels missing, as in RSNA
    model = true ** power
    model[..., 2] *= severe_factor
    return model / model.sum(-1, keepdims=True), refs


def _official(probs, refs) -> float:
    from hubkit.evaluation.metrics.rsna_lumbar_metric import rsna_score

    ids = [f"{s}_{c}" for s in range(len(refs)) for c in schema.LABEL_COLUMNS]
    return rsna_score(ids, np.asarray(probs).reshape(-1, 3), np.asarray(refs).reshape(-1))["rsna_score"]


def test_vectorised_objective_equals_the_official_metric_module():
    probs, refs = _cohort(1, studies=9)
    refs[3, :5] = -1  # a study without any labelled spinal row: left out of the any-severe term
    probs[0, 0] = [1.0, 0.0, 0.0]  # an exact zero: clipped as the scorer clips
    assert official_score(probs * 3.0, refs) == pytest.approx(_official(probs, refs), rel=1e-12)
    with pytest.raises(ValueError, match="no labelled subarticular rows"):
        official_score(probs, np.where(np.arange(N_COLS) >= 15, -1, refs))


def test_apply_keeps_the_argmax_of_every_temperature_and_matches_the_array_path():
    probs, _ = _cohort(2, studies=6)
    cal = Calibration(t_spinal=0.5, t_foraminal=2.0, t_subarticular=3.0, severe_spinal_scale=1.0)
    out = cal.apply_array(probs)
    assert np.allclose(out.sum(-1), 1) and (out.argmax(-1) == probs.argmax(-1)).all()
    by_column = cal.apply({c: probs[0, i].tolist() for i, c in enumerate(schema.LABEL_COLUMNS)})
    assert np.allclose([by_column[c] for c in schema.LABEL_COLUMNS], out[0], rtol=1e-12)
    assert np.allclose(Calibration().apply_array(probs), probs) and Calibration().is_identity
    scaled = Calibration(severe_spinal_scale=3.0).apply_array(probs)
    spinal = [g == "spinal" for g in np.array([schema.CONDITION_GROUP[schema.parse_column(c)[0]]
                                               for c in schema.LABEL_COLUMNS])]
    assert (scaled[:, spinal, 2] > probs[:, spinal, 2]).all()
    assert np.allclose(scaled[:, ~np.array(spinal)], probs[:, ~np.array(spinal)])
    with pytest.raises(ValueError, match="needs all 25 label columns"):
        cal.apply({schema.LABEL_COLUMNS[0]: [1, 1, 1]})


def test_fit_on_one_cohort_lowers_the_official_score_of_another():
    probs, refs = _cohort(3, severe_factor=0.4)
    cal = fit_calibration(probs, refs, split="validation", dataset="me/ds")
    assert cal.n_studies == 200 and cal.split == "validation" and cal.dataset == "me/ds"
    assert cal.score_raw == pytest.approx(_official(probs, refs), rel=1e-12)
    assert cal.score_calibrated < cal.score_raw - 0.01
    assert all(t > 1.5 for t in cal.temperatures.values())  # over-confident everywhere: softened
    assert cal.severe_spinal_scale > 1.2  # P(severe) stated too low: raised
    held_probs, held_refs = _cohort(4, studies=60, severe_factor=0.4)
    assert _official(cal.apply_array(held_probs), held_refs) < _official(held_probs, held_refs) - 0.01
    assert fit_calibration(probs, refs, split="validation", dataset="me/ds") == cal  # deterministic


def test_fit_never_makes_the_score_worse():
    probs, refs = _cohort(5, studies=40, power=1.0)  # already calibrated: little or nothing to gain
    cal = fit_calibration(probs, refs)
    assert cal.score_calibrated <= cal.score_raw
    with pytest.raises(ValueError, match=r"expected probs \[studies, 25, 3\]"):
        fit_calibration(probs[:, :3], refs)


def test_file_round_trip_and_one_line_errors(tmp_path):
    assert read_calibration(tmp_path) is None
    cal = Calibration(t_spinal=1.25, severe_spinal_scale=0.8, split="validation", n_studies=30, score_raw=0.6,
                      score_calibrated=0.55)
    path = write_calibration(tmp_path, cal)
    assert path.name == "calibration.json" and read_calibration(tmp_path) == cal
    path.write_text(json.dumps({**cal.to_dict(), "schema_version": 99}))
    with pytest.raises(ValueError, match="calibration.json: calibration schema_version 99 is not 1; refit"):
        read_calibration(tmp_path)
    path.write_text(json.dumps({"t_spinal": 1.0, "bias": 2}))
    with pytest.raises(ValueError, match=r"calibration.json: unknown key\(s\) \['bias'\]"):
        read_calibration(tmp_path)
    path.write_text("{")
    with pytest.raises(ValueError, match="calibration.json: not valid JSON"):
        read_calibration(tmp_path)
    with pytest.raises(ValueError, match="t_foraminal must be a finite number > 0"):
        Calibration(t_foraminal=0.0)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::hubkit.inference.pipeline.MissingViewsWarning")
def test_pipeline_applies_it_by_default_and_calibrate_false_turns_it_off():
    from transformers import pipeline

    import hubkit  # noqa: F401  (registers the task)

    pipe = pipeline("lumbar-classify", model=str(calibrated_tiny_run()))
    cal = read_calibration(calibrated_tiny_run())
    study = make_study(3, 21)
    row = {"images": study.images, "views": study.views, "study_id": "c1"}
    out, raw = pipe(row), pipe(row, calibrate=False)
    assert out["calibrated"] and not raw["calibrated"]
    assert out["json"] == raw["json"]  # the answer is the decoder's, whatever the probabilities
    for c in schema.LABEL_COLUMNS:
        assert out["probs"][c] == pytest.approx(cal.apply(raw["probs"])[c], rel=1e-12)
    assert out["probs"] != raw["probs"]
    lv, c = "L4L5", "canal"
    assert list(out["levels"][lv][c]["probs"].values()) == out["probs"][schema.label_column(c, lv)]
    uncalibrated = pipeline("lumbar-classify", model=str(trained_tiny_run()[0]))
    assert not uncalibrated(row)["calibrated"] and uncalibrated(row)["probs"] == raw["probs"]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::hubkit.inference.pipeline.MissingViewsWarning")
def test_calibration_json_travels_with_the_adapter_through_the_hub(local_hub):
    from hubkit.inference.pipeline import load_pipeline
    from hubkit.publish import push_run_folder

    push_run_folder(calibrated_tiny_run(), "owner/lumbar-calibrated", token=local_hub.owner_token)  # `hubkit push`
    study = make_study(2, 52)
    out = load_pipeline("owner/lumbar-calibrated")({"images": study.images, "views": study.views})
    assert out["calibrated"]


@pytest.mark.usefixtures("one_thread")
def test_evaluate_calibrate_and_evaluate_again(tmp_path, local_hub):
    from huggingface_hub import HfApi

    from hubkit.cli import cli
    from hubkit.evaluation import evaluate_model

    _, ds = competition_folder()
    run = shutil.copytree(trained_tiny_run()[0], tmp_path / "run")
    first = evaluate_model(run, ds, split="train", output=tmp_path / "e1", batch_size=2, progress=False)["finetuned"]
    assert not first["calibrated"] and first["rsna_score_raw"] == first["rsna_score"]
    with pytest.warns(UserWarning, match="fitting on the train split's predictions; fit on validation"):
        res = CliRunner().invoke(cli, ["calibrate", str(run), "--eval", str(tmp_path / "e1"), "--push", "owner/cal"])
    assert res.exit_code == 0, res.output
    cal = read_calibration(run)
    assert cal.split == "train" and cal.n_studies == 5 and cal.dataset == str(ds)
    assert f"{cal.score_raw:.4f} raw -> {cal.score_calibrated:.4f} calibrated" in res.output
    assert cal.score_raw == pytest.approx(first["rsna_score"], rel=1e-9)
    files = set(HfApi(token=local_hub.owner_token).list_repo_files("owner/cal"))
    assert files - {".gitattributes"} == {"calibration.json", "README.md"}  # with the card that shows it
    card = HfApi(token=local_hub.owner_token).hf_hub_download("owner/cal", "README.md", cache_dir=str(tmp_path / "c"))
    text = Path(card).read_text()
    assert 'model="owner/cal"' in text and "OWNER/NAME" not in text and "## Calibration" in text

    second = evaluate_model(run, ds, split="train", output=tmp_path / "e2", batch_size=2, progress=False)["finetuned"]
    assert second["calibrated"] and second["rsna_score_raw"] == pytest.approx(first["rsna_score"], rel=1e-9)
    assert second["rsna_score"] == pytest.approx(cal.score_calibrated, rel=1e-9)
    assert second["kappa"] == first["kappa"]  # labels are the decoder's either way
    saved = json.loads((tmp_path / "e2" / "results_finetuned.json").read_text())
    assert saved["calibrated"] and saved["calibration"]["t_spinal"] == cal.t_spinal
    line = json.loads((tmp_path / "e2" / "predictions.jsonl").read_text().splitlines()[0])
    assert line["probs_calibrated"] == cal.apply(line["probs"])
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(run), "--dataset", str(ds), "--split", "train",
                                   "--output", str(tmp_path / "e3"), "--batch-size", "2", "--no-calibration"])
    assert res.exit_code == 0, res.output
    third = json.loads((tmp_path / "e3" / "results_finetuned.json").read_text())
    assert not third["calibrated"] and third["rsna_score"] == pytest.approx(first["rsna_score"], rel=1e-12)
    assert_same_submission(tmp_path / "e3" / "predictions.csv", tmp_path / "e1" / "predictions.csv")
