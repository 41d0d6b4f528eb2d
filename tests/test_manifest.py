"""hubkit.manifest: the build's facts travel with the dataset into the run, the card and the pipeline (CLI end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubkit.cli import cli
from hubkit.run_record import read_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built_160(tmp_path_factory):
    """6 synthetic studies built at --image-size 160 --picker geometry, also pushed to the loopback Hub."""
    root = tmp_path_factory.mktemp("m160")
    runner = CliRunner()
    for args in (["synth", str(root / "cohort"), "--studies", "6", "--seed", "4"],
                 ["build-dataset", str(root / "cohort"), "--output", str(root / "ds"), "--image-size", "160",
                  "--picker", "geometry", "--validation-fraction", "0.34", "--push", "owner/ds-160"],
                 ["base", "tiny", str(root / "base")]):
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, res.output
    return root


def _train(root: Path, dataset: str, out: Path) -> Path:
    res = CliRunner().invoke(cli, ["train", "--dataset", dataset, "--base-model", str(root / "base"), "--config",
                                   "tiny-cpu", "--output", str(out), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("where", ["local", "hub"])
def test_slice_size_and_picker_travel_from_build_to_run_card_and_pipeline(built_160, where, local_hub):
    from hubkit.cards.model import render_model_card
    from hubkit.inference.pipeline import load_pipeline

    root = built_160
    run = _train(root, str(root / "ds") if where == "local" else "owner/ds-160", root / f"run-{where}")
    meta = read_run(run)
    manifest = meta.dataset.manifest
    assert manifest["slice_size"] == 160 and manifest["picker"] == "geometry"
    assert manifest == json.loads((root / "ds" / "hubkit_dataset.json").read_text())  # copied, not re-derived
    assert meta.vision_input_size == 128  # the tower's input: another quantity, under its own name

    card = render_model_card(run)
    assert "picked with `geometry` by `hubkit build-dataset`, stored at 160×160" in card
    assert "them at 160×160" in card and "448" not in card

    pipe = load_pipeline(run)
    study_dir = sorted((root / "cohort" / "train_images").iterdir())[0]
    study = pipe.preprocess(str(study_dir))["studies"][0]  # no slice size given: the run's is used
    assert study.images and {im.size for im in study.images} == {(160, 160)}
