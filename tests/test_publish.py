"""`hubkit push` (hubkit.publish): private by default, one commit, no commit when nothing changed, every linked file
in the repo, and a dataset that loads from the Hub as it was built."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubkit.cli import cli


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory) -> Path:
    from hubkit.devkit.synth import synth_cohort

    root = tmp_path_factory.mktemp("pub")
    synth_cohort(root / "cohort", 4, seed=17, progress=False)
    res = CliRunner().invoke(cli, ["-q", "build-dataset", str(root / "cohort"), "--output", str(root / "ds"),
                                   "--image-size", "64", "--validation-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    return root / "ds"


def _commits(api, repo: str, repo_type: str) -> str:
    return api.repo_info(repo, repo_type=repo_type).sha


def _linked(card: str) -> set[str]:
    """Files a card links to (images and relative links)."""
    return {m for m in re.findall(r"\]\(([^)#]+)\)", card) if not m.startswith(("http://", "https://"))}


def test_push_dataset_once_then_again_without_a_commit(ds_dir, local_hub, tmp_path):
    import datasets
    from huggingface_hub import HfApi

    api = HfApi(token=local_hub.owner_token)
    res = CliRunner().invoke(cli, ["push", str(ds_dir), "owner/pub-ds"])
    assert res.exit_code == 0 and "(private; committed" in res.output, res.output
    head = _commits(api, "owner/pub-ds", "dataset")
    assert api.repo_info("owner/pub-ds", repo_type="dataset").private
    files = set(api.list_repo_files("owner/pub-ds", repo_type="dataset"))
    assert {"README.md", "hubkit_dataset.json", "label_distribution.png"} <= files
    assert any(f.startswith("data/train-") and f.endswith(".parquet") for f in files)
    card = Path(api.hf_hub_download("owner/pub-ds", "README.md", repo_type="dataset",
                                    cache_dir=str(tmp_path / "c"))).read_text()
    assert 'load_dataset("owner/pub-ds"' in card and "OWNER/NAME" not in card
    assert _linked(card) <= files, _linked(card) - files  # every file the card links to is in the repo
    from hubkit.cards.metadata import card_problems

    assert card_problems(card, "dataset") == []

    res = CliRunner().invoke(cli, ["push", str(ds_dir), "owner/pub-ds"])
    assert res.exit_code == 0 and "nothing changed, no new commit" in res.output, res.output
    assert _commits(api, "owner/pub-ds", "dataset") == head

    local = datasets.load_from_disk(str(ds_dir))
    remote = datasets.load_dataset("owner/pub-ds", cache_dir=str(tmp_path / "dc"))
    for split in local:
        assert remote[split]["study_id"] == local[split]["study_id"]
        assert remote[split].features == local[split].features


def test_push_run_folder_private_one_commit_and_a_change_commits(local_hub, tmp_path):
    from huggingface_hub import HfApi

    from tests.fixtures.tiny_run import trained_tiny_run

    api = HfApi(token=local_hub.owner_token)
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run()[0], run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "big.bin").write_bytes(b"x" * 1000)
    res = CliRunner().invoke(cli, ["push", str(run), "owner/pub-run"])
    assert res.exit_code == 0 and "committed" in res.output, res.output
    repo = "owner/pub-run"
    assert api.repo_info(repo).private
    files = set(api.list_repo_files(repo))
    assert {"adapter_model.safetensors", "adapter_config.json", "hubkit_config.json", "README.md"} <= files
    assert not any(f.startswith("checkpoints/") for f in files)
    head = _commits(api, repo, "model")
    res = CliRunner().invoke(cli, ["push", str(run), repo])
    assert "nothing changed, no new commit" in res.output and _commits(api, repo, "model") == head
    from hubkit.inference.calibration import Calibration
    from hubkit.run_record import write_calibration

    write_calibration(run, Calibration(t_spinal=1.5, split="validation", n_studies=3, score_raw=0.5,
                                       score_calibrated=0.4))  # a new file, and the card that now shows it
    res = CliRunner().invoke(cli, ["push", str(run), repo])
    assert "committed" in res.output and _commits(api, repo, "model") != head
    assert {"calibration.json", "README.md"} <= set(api.list_repo_files(repo))


def test_push_refuses_what_hubkit_did_not_build(tmp_path):
    res = CliRunner().invoke(cli, ["push", str(tmp_path), "owner/x"])
    assert res.exit_code == 1 and "not a dataset folder" in res.output
    from tests.fixtures.records import run_folder

    run_folder(tmp_path, "me/base")  # a run record, no adapter yet
    res = CliRunner().invoke(cli, ["push", str(tmp_path), "owner/x"])
    assert res.exit_code == 1 and "without an adapter yet" in res.output


def _no_placeholder_or_local_path(text: str, repo: str, *local: Path) -> None:
    import tempfile

    name = repo.split("/")[1]
    assert "OWNER/NAME" not in text and "# NAME" not in text and f"# {name}" in text
    assert f'"{repo}"' in text or f"`{repo}`" in text or f"/{repo}" in text
    for path in (tempfile.gettempdir(), *map(str, local)):
        assert path not in text, f"the pushed card names the local path {path}"


def test_every_pushed_card_is_rendered_for_its_repo_without_local_paths(local_hub, ds_dir, tmp_path):
    from huggingface_hub import HfApi

    from hubkit.cards.model import write_model_card
    from tests.fixtures.competition import calibrated_tiny_run
    from tests.fixtures.tiny_run import trained_tiny_run

    api = HfApi(token=local_hub.owner_token)
    run = Path(shutil.copytree(calibrated_tiny_run(), tmp_path / "run"))
    write_model_card(run)  # rendered without a repo id, as `hubkit train` without --push does
    assert "OWNER/NAME" in (run / "README.md").read_text()
    base = trained_tiny_run()[1]

    def pushed(repo: str, repo_type: str = "model") -> str:
        return Path(api.hf_hub_download(repo, "README.md", repo_type=repo_type,
                                        cache_dir=str(tmp_path / "dl" / repo))).read_text()

    for args, repo in ((["push", str(run), "owner/pushed-run"], "owner/pushed-run"),
                       (["card", str(run), "--push", "owner/card-run"], "owner/card-run"),
                       (["push", str(ds_dir), "owner/pushed-ds"], "owner/pushed-ds")):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        kind = "dataset" if "ds" in repo else "model"
        _no_placeholder_or_local_path(pushed(repo, kind), repo, run, base, ds_dir)
