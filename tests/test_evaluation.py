"""`evaluate_model` on a builder-made dataset with the trained tiny adapter: files, metrics, base comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hubkit import schema
from tests.fixtures.tiny_run import trained_tiny_run


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two busy ones


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """synth cohort -> `build_dataset` (the real builder): 2 train + 2 validation studies, 64 px images."""
    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.synth import synth_cohort

    root = tmp_path_factory.mktemp("eval-data")
    synth_cohort(root / "cohort", 4, seed=5, progress=False)
    build_dataset(BuildConfig(data_dir=str(root / "cohort"), slice_size=64, validation_fraction=0.5), root / "ds")
    return root / "ds"


def test_evaluate_writes_card_files_and_compares_base(dataset_dir, tmp_path):
    from hubkit.evaluation import evaluate_model

    run, base = trained_tiny_run()
    out = tmp_path / "eval"
    res = evaluate_model(str(run), str(dataset_dir), split="validation", output=str(out), compare_base=True,
                         batch_size=2, progress=False)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for variant, csv_name, jsonl in (("finetuned", "predictions.csv", "predictions.jsonl"),
                                     ("base", "predictions_base.csv", "predictions_base.jsonl")):
        assert {f"results_{variant}.json", csv_name, jsonl, f"figures/{variant}/confusion_matrix.png"} <= names
        saved = json.loads((out / f"results_{variant}.json").read_text())
        assert saved["variant"] == variant and saved["n_studies"] == 2 and saved["split"] == "validation"
        assert saved["parse_failure_rate"] == 0 and "_timestamp" in saved
        assert saved["rsna_score"] is not None and len(saved["confusion_matrix"]) == 3
        assert res[variant]["rsna_score"] == pytest.approx(saved["rsna_score"])
        with open(out / csv_name) as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["row_id", "normal_mild", "moderate", "severe"] and len(rows) == 1 + 2 * 25
        assert all(abs(sum(map(float, r[1:])) - 1) < 1e-9 for r in rows[1:])
        lines = [json.loads(x) for x in (out / jsonl).read_text().splitlines()]
        assert [x["study_id"] for x in lines] == [r[0].split("_")[0] for r in rows[1::25]]
        assert all(schema.parse_target(x["json"]) == x["labels"] for x in lines)
    assert json.loads((out / "results_base.json").read_text())["model_id"] == str(base)
    cfg = json.loads((out / "eval_config.json").read_text())
    assert cfg["base_model"] == str(base) and cfg["n_studies"] == 2 and cfg["device"] == "cpu"
    assert set(cfg["timing"]) == {"finetuned", "base"} and cfg["timing"]["base"]["studies_per_s"] > 0
    assert cfg["files"]["finetuned"]["predictions_csv"] == "predictions.csv"


def test_parquet_folder_max_studies_and_errors(dataset_dir, tmp_path):
    import datasets

    from hubkit.evaluation import evaluate_model

    run, base = trained_tiny_run()
    pq = tmp_path / "pq"
    (pq / "data").mkdir(parents=True)
    validation = datasets.load_from_disk(str(dataset_dir))["validation"]
    validation.to_parquet(str(pq / "data" / "validation-00000-of-00001.parquet"))
    res = evaluate_model(run, pq, output=tmp_path / "e1", max_studies=1, batch_size=4, progress=False)
    assert res["base"] is None and res["eval_config"].n_studies == 1
    assert not (tmp_path / "e1" / "results_base.json").exists()
    assert len((tmp_path / "e1" / "predictions.csv").read_text().splitlines()) == 26
    with pytest.raises(ValueError, match="no split 'test'"):
        evaluate_model(run, dataset_dir, split="test", output=tmp_path / "e2", progress=False)
    with pytest.raises(ValueError, match="compare-base needs an adapter"):
        evaluate_model(base, dataset_dir, output=tmp_path / "e3", compare_base=True, progress=False)


def test_dataset_from_the_hub(local_hub, dataset_dir, tmp_path):
    from hubkit.evaluation import evaluate_model
    from hubkit.hub import push_dataset

    push_dataset(dataset_dir, "owner/lumbar-eval-ds", token=local_hub.owner_token)
    run, _ = trained_tiny_run()
    res = evaluate_model(run, "owner/lumbar-eval-ds", output=tmp_path / "hub-eval", batch_size=2, progress=False)
    assert res["eval_config"].n_studies == 2 and (tmp_path / "hub-eval" / "results_finetuned.json").is_file()


def test_a_dataset_folder_given_as_the_model_is_one_line_and_leaves_nothing(dataset_dir, tmp_path):
    from click.testing import CliRunner

    from hubkit.cli import cli

    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(dataset_dir), "--dataset", str(dataset_dir),
                                   "--output", str(out)])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert "a dataset folder, not a model" in lines[0] and "Unrecognized model" not in res.output
    assert not out.exists()  # no empty output folder left behind
