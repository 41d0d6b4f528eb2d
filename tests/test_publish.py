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


def test_push_run_folder_private_one_commit_and_a_changed_card_commits(local_hub, tmp_path):
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
    (run / "README.md").write_text((run / "README.md").read_text() + "\nA note.\n")
    res = CliRunner().invoke(cli, ["push", str(run), repo])
    assert "committed" in res.output and _commits(api, repo, "model") != head


def test_push_refuses_what_hubkit_did_not_build(tmp_path):
    res = CliRunner().invoke(cli, ["push", str(tmp_path), "owner/x"])
    assert res.exit_code == 1 and "not a dataset folder" in res.output
    (tmp_path / "hubkit_config.json").write_text("{}")
    res = CliRunner().invoke(cli, ["push", str(tmp_path), "owner/x"])
    assert res.exit_code == 1 and "without an adapter yet" in res.output
