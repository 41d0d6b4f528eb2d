"""A user's first hour, through the CLI: failures come before the long work, in one line, with what to do."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubkit.cli import cli


def _invoke(args: list[str], **env):
    res = CliRunner().invoke(cli, args, env=env or None)
    return res.exit_code, res.output


def _one_line_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from hubkit.devkit.synth import synth_cohort

    return synth_cohort(tmp_path_factory.mktemp("pf") / "cohort", 6, seed=13, progress=False)


@pytest.fixture(scope="module")
def built(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pfds") / "ds"
    code, text = _invoke(["-q", "build-dataset", str(cohort), "--output", str(out), "--image-size", "64",
                          "--validation-fraction", "0.34"])
    assert code == 0, text
    return out


def test_wrong_token_fails_before_the_build_writes_anything(cohort, tmp_path):
    out = tmp_path / "ds"
    code, text = _invoke(["build-dataset", str(cohort), "--output", str(out), "--push", "owner/pf-ds"],
                         HF_TOKEN="hf_wrong_token_123")
    assert code == 1 and "rejected the token" in _one_line_error(text)
    assert not out.exists() and not (tmp_path / ".ds.build").exists()
    code, text = _invoke(["build-dataset", str(cohort), "--output", str(out), "--push", "other/pf-ds"])
    assert code == 1 and "cannot create or write" in _one_line_error(text) and not out.exists()


def test_wrong_token_fails_before_training_loads_a_model(built, tmp_path, monkeypatch):
    from hubkit.devkit.base_models import write_tiny_base
    from hubkit.training import backends

    loaded = []
    monkeypatch.setattr(backends, "load_trl_model", lambda *a, **k: loaded.append(a))
    base = write_tiny_base(tmp_path / "base")
    code, text = _invoke(["train", "--dataset", str(built), "--base-model", str(base), "--config", "tiny-cpu",
                          "--output", str(tmp_path / "run"), "--max-steps", "2", "--push", "owner/pf-run"],
                         HF_TOKEN="hf_wrong_token_123")
    assert code == 1 and "rejected the token" in _one_line_error(text) and not loaded


@pytest.mark.parametrize("base,expect", [
    ("owner/no-such-base", "was not found"),  # misspelled
    ("other/private-base", "was not found"),  # private, another user's: the Hub cannot say which of the two
    ("no/such/thing", "not a Hub repo id"),
])
def test_bad_base_model_is_one_line(built, tmp_path, local_hub, base, expect):
    from huggingface_hub import HfApi

    if base.startswith("other/"):
        HfApi(token=local_hub.other_token).create_repo(base, private=True, exist_ok=True)
    code, text = _invoke(["train", "--dataset", str(built), "--base-model", base, "--config", "tiny-cpu",
                          "--output", str(tmp_path / "run"), "--max-steps", "2"])
    assert code == 1 and expect in _one_line_error(text)


def test_gated_base_model_names_the_page_where_terms_are_accepted(built, tmp_path, local_hub):
    from huggingface_hub import HfApi

    from hubkit.devkit.base_models import write_tiny_base

    repo = "other/gated-base"
    api = HfApi(token=local_hub.other_token)
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=write_tiny_base(tmp_path / "b"), repo_id=repo, allow_patterns=["*.json"])
    local_hub.hub.set_gated("model", repo, gated=True, allowed=())
    code, text = _invoke(["train", "--dataset", str(built), "--base-model", repo, "--config", "tiny-cpu",
                          "--output", str(tmp_path / "run"), "--max-steps", "2"])
    line = _one_line_error(text)
    assert code == 1 and f"base model {repo} is gated: accept its terms at" in line and f"/{repo}" in line
    assert not (tmp_path / "run").exists()


def test_bad_yaml_and_unknown_recipe_are_one_line(built, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("learning_rate: [1\n")
    code, text = _invoke(["train", "--dataset", str(built), "--base-model", "x/y", "--config", str(bad),
                          "--output", str(tmp_path / "run")])
    assert code == 1 and "not valid YAML at line" in _one_line_error(text)
    code, text = _invoke(["train", "--dataset", str(built), "--base-model", "x/y", "--config", "no-such-recipe",
                          "--output", str(tmp_path / "run")])
    assert code == 1 and "shipped recipes" in _one_line_error(text) and "tiny-cpu" in text


def test_usage_errors_exit_2(tmp_path):
    code, text = _invoke(["build-dataset", str(tmp_path), "--output", str(tmp_path / "o"), "--picker", "nope"])
    assert code == 2 and "Traceback" not in text


def test_busy_port_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, text = _invoke(["hub", "serve", "--root", str(tmp_path / "hub"), "--port", str(port)])
    assert code == 1 and "choose another --port" in _one_line_error(text)


def _break_every_file(study_dir: Path) -> None:
    for f in study_dir.rglob("*.dcm"):
        f.write_bytes(b"not a dicom file")


def test_no_study_built_lists_the_reasons_and_the_report(cohort, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    for study in (data / "train_images").iterdir():
        _break_every_file(study)
    out = tmp_path / "ds"
    code, text = _invoke(["build-dataset", str(data), "--output", str(out)])
    line = _one_line_error(text)
    assert code == 1 and "0 of 6 studies could be built" in line and "not a DICOM file" in line
    assert str(out / "build_report.json") in line and len(json.loads((out / "build_report.json").read_text())
                                                           ["studies_skipped"]) == 6


def test_a_split_whose_studies_all_fail_is_named_and_the_rest_saved(cohort, tmp_path):
    import shutil

    import datasets

    from hubkit.config import BuildConfig
    from hubkit.dataset_builder.build import plan_records

    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    splits, _, _ = plan_records(BuildConfig(data_dir=str(data), validation_fraction=0.34))
    for rec in splits["validation"]:
        _break_every_file(data / "train_images" / rec["study_id"])
    out = tmp_path / "ds"
    code, text = _invoke(["build-dataset", str(data), "--output", str(out), "--validation-fraction", "0.34",
                          "--image-size", "64"])
    assert code == 0, text
    assert "split 'validation' is empty: all 2 studies drawn for it were skipped" in text
    assert set(datasets.load_from_disk(str(out))) == {"train"} and len(datasets.load_from_disk(str(out))["train"]) == 4


def test_unfinished_run_folder_given_to_evaluate(built, tmp_path):
    from tests.fixtures.records import run_folder

    run = run_folder(tmp_path / "run", "me/base")  # a run record, checkpoints, no adapter yet
    (run / "checkpoints").mkdir()
    code, text = _invoke(["evaluate", "--model", str(run), "--dataset", str(built), "--output", str(tmp_path / "e")])
    assert code == 1 and "without an adapter yet" in _one_line_error(text)


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, tmp_path):
    from hubkit.devkit import synth

    def boom(*a, **k):
        raise RuntimeError("something nobody expected\nwith a second line")

    monkeypatch.setattr(synth, "synth_cohort", boom)
    code, text = _invoke(["synth", str(tmp_path / "c")])
    assert code == 1 and "RuntimeError: something nobody expected (--debug" in _one_line_error(text)
    res = CliRunner().invoke(cli, ["--debug", "synth", str(tmp_path / "c")])
    assert isinstance(res.exception, RuntimeError)


def test_ctrl_c_exits_130_and_says_what_was_kept(monkeypatch, tmp_path):
    from hubkit.dataset_builder import build

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_dataset", interrupted)
    code, text = _invoke(["build-dataset", str(tmp_path), "--output", str(tmp_path / "ds")])
    assert code == 130 and "interrupted: finished studies stay in" in text and "resume" in text


def test_disk_check_says_how_much(tmp_path):
    from hubkit.preflight import check_disk, free_bytes

    check_disk(tmp_path, 1, "a tiny thing")
    with pytest.raises(ValueError, match=r"needs about .* GiB but only .* GiB is free"):
        check_disk(tmp_path / "not" / "yet", free_bytes(tmp_path) * 2, "the build")
