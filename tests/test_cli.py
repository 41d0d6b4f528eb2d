"""Every verb answers --help with an example; the CLI stays importable without heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from hubkit.cli import cli


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


ALL = list(_commands(cli))


def test_root_help():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0 and "build-dataset" in res.output


@pytest.mark.parametrize("path,cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_verb_has_help_with_example(path, cmd):
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output and f"hubkit {' '.join(path)}" in res.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from hubkit.cli import cli; "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pydicom', 'trl') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_build_dataset_bad_input_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["build-dataset", str(tmp_path), "--output", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "train.csv: file not found" in res.output and "Traceback" not in res.output


def test_synth_build_and_push_private_through_the_cli(tmp_path, local_hub, hub_cache):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    runner = CliRunner()
    res = runner.invoke(cli, ["synth", str(tmp_path / "c"), "--studies", "3", "--seed", "5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["build-dataset", str(tmp_path / "c"), "--output", str(tmp_path / "ds"),
                              "--image-size", "64", "--push", "owner/cli-ds"])
    assert res.exit_code == 0, res.output
    assert "(private)" in res.output
    assert HfApi(token=local_hub.owner_token).repo_info("owner/cli-ds", repo_type="dataset").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=local_hub.other_token).repo_info("owner/cli-ds", repo_type="dataset")
    assert local_hub.owner_token not in res.output


@pytest.mark.parametrize("path,cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_verb_is_in_the_readme_with_an_example(path, cmd):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    verb = "hubkit " + " ".join(path)
    assert f"### `{verb}" in readme or f"/ `{verb}`" in readme, f"README has no section for {verb}"
    assert any(line.startswith(verb + " ") for line in readme.splitlines()), f"README has no example of {verb}"


def test_readme_states_the_two_commands():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_env_reports_versions_devices_and_the_hub_but_never_the_token(monkeypatch):
    import json

    monkeypatch.setenv("HF_TOKEN", "hf_do_not_print_me_123")
    res = CliRunner().invoke(cli, ["env"])
    assert res.exit_code == 0, res.output
    for key in ("- hubkit: 0.1.0", "- torch: ", "- transformers: ", "- huggingface_hub: ", "- accelerators: ",
                "- hub endpoint: ", "- hub token: set (from HF_TOKEN)"):
        assert key in res.output, key
    assert "hf_do_not_print_me_123" not in res.output
    info = json.loads(CliRunner().invoke(cli, ["env", "--json"]).output)
    assert info["hub token"] == "set (from HF_TOKEN)" and "hf_do_not_print_me_123" not in json.dumps(info)
