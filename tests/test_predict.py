"""`hubkit predict` on a synthetic competition test folder: the submission scores like `hubkit evaluate`, a resumed
run writes the one-go file, two CPU processes (gloo) write it too, unreadable studies get the priors."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubkit import schema
from hubkit.cli import cli
from hubkit.inference import resume as resume_mod
from hubkit.inference.predict import UnreadableStudyWarning, class_priors, find_studies, predict_folder
from tests.fixtures.competition import calibrated_tiny_run, competition_folder
from tests.fixtures.submissions import assert_same_submission
from tests.fixtures.tiny_run import trained_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two busy ones
REPO = Path(__file__).resolve().parents[1]
BATCH = 2


@pytest.fixture(scope="module")
def one_go(tmp_path_factory) -> Path:
    """The submission of the calibrated tiny run, written in one uninterrupted run through the CLI."""
    data, _ = competition_folder()
    out = tmp_path_factory.mktemp("one-go") / "submission.csv"
    res = CliRunner().invoke(cli, ["predict", str(data), "--model", str(calibrated_tiny_run()), "--output", str(out),
                                   "--batch-size", str(BATCH)])
    assert res.exit_code == 0, res.output
    assert "5 studies (5 predicted now, 0 from an earlier run, 0 unreadable: priors), calibrated" in res.output
    return out


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _score_csv(path: Path, ds_dir: Path) -> float:
    """The official-metric module on the CSV against the dataset's labels."""
    import datasets

    from hubkit.evaluation.metrics import load_metric

    labels = {str(r["study_id"]): r for r in datasets.load_from_disk(str(ds_dir))["train"]}
    table = _read(path)
    refs = []
    for t in table:
        study, column = t["row_id"].split("_", 1)
        v = labels[study][column]
        refs.append(-1 if v is None else int(v))
    return load_metric("rsna_lumbar_metric").compute(
        row_ids=[t["row_id"] for t in table], references=refs,
        predictions=[[float(t[k]) for k in schema.SUBMISSION_COLUMNS] for t in table])["rsna_score"]


def test_submission_scores_as_evaluate_does_calibrated_and_raw(one_go, tmp_path):
    from hubkit.evaluation import evaluate_model

    data, ds = competition_folder()
    table = _read(one_go)
    studies = [p.name for p in find_studies(data)[1]]
    assert len(table) == 25 * len(studies)
    assert [t["row_id"] for t in table] == [f"{s}_{c}" for s in studies for c in schema.LABEL_COLUMNS]
    res = evaluate_model(calibrated_tiny_run(), ds, split="train", output=tmp_path / "eval", batch_size=BATCH,
                         progress=False)["finetuned"]
    assert res["calibrated"] and res["rsna_score"] != pytest.approx(res["rsna_score_raw"], abs=1e-3)
    assert _score_csv(one_go, ds) == pytest.approx(res["rsna_score"], abs=1e-6)
    raw = predict_folder(data, calibrated_tiny_run(), tmp_path / "raw.csv", batch_size=BATCH, calibrate=False,
                         progress=False)
    assert not raw.calibrated
    assert _score_csv(tmp_path / "raw.csv", ds) == pytest.approx(res["rsna_score_raw"], abs=1e-6)


def test_interrupted_run_resumes_to_the_one_go_file(one_go, tmp_path, monkeypatch):
    data, _ = competition_folder()
    out = tmp_path / "sub.csv"
    append, calls = resume_mod.append, []

    def dies_after_first_batch(path, rows):
        if calls:
            raise KeyboardInterrupt  # killed while the second batch was on the device
        calls.append(path)
        append(path, rows)

    monkeypatch.setattr(resume_mod, "append", dies_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(data, calibrated_tiny_run(), out, batch_size=BATCH, progress=False)
    monkeypatch.setattr(resume_mod, "append", append)
    assert len(_read(out)) == 25 * BATCH and (tmp_path / ".sub.csv.predict.json").is_file()
    with pytest.raises(ValueError, match=r"written by .*calibrated probabilities.*; this run is .*raw probabilities.*"
                                         r"Pass --overwrite"):
        predict_folder(data, calibrated_tiny_run(), out, batch_size=BATCH, calibrate=False, progress=False)
    report = predict_folder(data, calibrated_tiny_run(), out, batch_size=BATCH, progress=False)
    assert (report.reused, report.predicted) == (BATCH, 5 - BATCH)
    assert_same_submission(out, one_go)  # the last batch is shorter here: equal as numbers, not as bytes

    lines = one_go.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:1 + 25 * 3 + 11]) + lines[1 + 25 * 3 + 11][:17])  # killed inside a write
    report = predict_folder(data, calibrated_tiny_run(), out, batch_size=BATCH, progress=False)
    assert (report.reused, report.predicted) == (3, 2)
    assert_same_submission(out, one_go)
    again = predict_folder(data, calibrated_tiny_run(), out, batch_size=BATCH, progress=False)
    assert again.predicted == 0
    assert_same_submission(out, one_go)


def test_reading_worker_processes_write_the_one_go_file(one_go, tmp_path):
    data, _ = competition_folder()
    report = predict_folder(data, calibrated_tiny_run(), tmp_path / "sub.csv", batch_size=BATCH, num_workers=2,
                            progress=False)
    assert report.predicted == 5
    assert_same_submission(tmp_path / "sub.csv", one_go)


def test_two_cpu_processes_write_the_one_go_file(one_go, tmp_path):
    data, _ = competition_folder()
    out = tmp_path / "sub.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "hubkit.cli",
           "predict", str(data), "--model", str(calibrated_tiny_run()), "--output", str(out),
           "--batch-size", str(BATCH)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("wrote ") == 1  # rank 0 reports, once
    assert_same_submission(out, one_go)  # other processes, other thread counts: equal as numbers
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["sub.csv"]  # parts merged


def test_a_finished_file_of_another_model_is_refused_naming_both_until_overwrite(one_go, tmp_path):
    data, _ = competition_folder()
    out = tmp_path / "sub.csv"
    shutil.copy(one_go, out)
    shutil.copy(one_go.with_name(f".{one_go.name}.predict.json"), tmp_path / ".sub.csv.predict.json")  # its note
    _, base = trained_tiny_run()  # other weights
    args = ["predict", str(data), "--model", str(base), "--slice-size", "64", "--output", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "Traceback" not in res.output
    first = res.output.strip().splitlines()[-1]
    assert f"model {calibrated_tiny_run()}" in first and f"this run is model {base}" in first and "--overwrite" in first
    assert out.read_bytes() == one_go.read_bytes()  # kept as it was
    res = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert res.exit_code == 0 and "5 predicted now, 0 from an earlier run" in res.output, res.output
    assert out.read_bytes() != one_go.read_bytes()
    res = CliRunner().invoke(cli, args)  # now it is this model's file: kept, nothing to do
    assert res.exit_code == 0 and "all were there already" in res.output
    foreign = tmp_path / "foreign.csv"
    shutil.copy(one_go, foreign)  # a file hubkit predict did not write here (no note beside it)
    res = CliRunner().invoke(cli, ["predict", str(data), "--model", str(base), "--slice-size", "64", "--output",
                                   str(foreign)])
    assert res.exit_code == 1 and "did not write it" in res.output and foreign.read_bytes() == one_go.read_bytes()


def test_unreadable_study_gets_priors_and_a_warning(tmp_path):
    data, _ = competition_folder()
    copy = tmp_path / "rsna"
    shutil.copytree(data, copy, copy_function=os.link)  # the same files, plus one broken study
    (copy / "test_images" / "123" / "9").mkdir(parents=True)
    (copy / "test_images" / "123" / "9" / "1.dcm").write_bytes(b"not a DICOM file")
    run, _ = trained_tiny_run()  # no calibration, no label counts: the fixed RSNA prior
    with pytest.warns(UnreadableStudyWarning, match=r"^study 123 cannot be read: .*123: .+; wrote the class priors"):
        report = predict_folder(copy, run, tmp_path / "sub.csv", batch_size=BATCH, progress=False)
    assert [sid for sid, _ in report.failed] == ["123"] and not report.calibrated
    rows = {t["row_id"]: [float(t[k]) for k in schema.SUBMISSION_COLUMNS] for t in _read(tmp_path / "sub.csv")}
    assert list(rows)[:25] == [f"123_{c}" for c in schema.LABEL_COLUMNS]  # numeric ids by value: 123 first
    for c, p in class_priors(None).items():
        assert rows[f"123_{c}"] == pytest.approx(p, rel=1e-12)


def test_class_priors_minimise_the_weighted_loss_of_the_label_counts():
    counts = {c: [80, 15, 5, 3] for c in schema.CONDITIONS}
    p = class_priors(counts)[schema.label_column("canal", "L1L2")]
    want = [81 * 1, 16 * 2, 6 * 4]
    assert p == pytest.approx([x / sum(want) for x in want])
    rsna = class_priors({})
    spinal, sub = rsna["spinal_canal_stenosis_l4_l5"], rsna["left_subarticular_stenosis_l4_l5"]
    assert sum(spinal) == pytest.approx(1) and spinal[0] > sub[0]  # RSNA: subarticular grades are worse


def test_bad_folders_and_outputs_fail_in_one_line(tmp_path, one_go):
    data, _ = competition_folder()
    res = CliRunner().invoke(cli, ["predict", str(tmp_path), "--model", "x/y", "--output", str(tmp_path / "s.csv")])
    assert res.exit_code != 0 and "no test_images/ folder" in res.output and "Traceback" not in res.output
    other = tmp_path / "other.csv"
    other.write_text(one_go.read_text().replace(find_studies(data)[1][0].name, "42"))
    shutil.copy(one_go.with_name(f".{one_go.name}.predict.json"), tmp_path / ".other.csv.predict.json")
    with pytest.raises(ValueError, match="holds study 42, which is not in this test folder"):
        predict_folder(data, calibrated_tiny_run(), other, progress=False)
    with pytest.raises(ValueError, match="--batch-size must be >= 1"):
        predict_folder(data, calibrated_tiny_run(), tmp_path / "b.csv", batch_size=0)
    _, base = trained_tiny_run()  # a model with no dataset manifest: no slice size to read DICOM at
    with pytest.raises(ValueError, match="pass --slice-size N"):
        predict_folder(data, base, tmp_path / "c.csv", progress=False)
    with pytest.raises(ValueError, match="not a model folder"):
        predict_folder(data, tmp_path / "no-such-run", tmp_path / "d.csv", progress=False)
    assert not any(p.name.startswith((".c.csv", "c.csv", ".d.csv", "d.csv")) for p in tmp_path.iterdir())
