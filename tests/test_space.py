"""`hubkit space` (`hubkit.space.writer`, `cards.space`): the Space's files, its metadata against the card checks,
the push to the loopback Hub (a Space repo holding only the app's files, private), and the model card's link."""

from __future__ import annotations

import ast
import shutil

import pytest
from click.testing import CliRunner

from hubkit.cards.metadata import card_problems
from hubkit.cards.space import LINK_START, linked_space, render_space_readme, with_space_link
from hubkit.cli import cli
from hubkit.space import APP_FILE, REQUIREMENTS_FILE


def _names(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_the_space_folder_holds_the_app_its_requirements_readme_and_wheel(tmp_path):
    res = CliRunner().invoke(cli, ["space", "owner/lumbar-demo", "--model", "owner/lumbar-model", "--output",
                                   str(tmp_path / "sp")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sp"
    names = _names(out)
    wheels = [n for n in names if n.endswith(".whl")]
    assert names == {APP_FILE, REQUIREMENTS_FILE, "README.md", *wheels} and len(wheels) == 1
    app = (out / APP_FILE).read_text()
    ast.parse(app)
    assert '"owner/lumbar-model"' in app and "hubkit.space.app" in app and "--no-deps" in app
    reqs = [line for line in (out / REQUIREMENTS_FILE).read_text().splitlines() if not line.startswith("#")]
    names = {r.split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in reqs}
    assert {"torch", "transformers", "peft", "accelerate", "pydicom", "huggingface-hub"} <= names
    assert not names & {"trl", "datasets", "gradio", "pytest", "unsloth"}  # the inference extra only
    readme = (out / "README.md").read_text()
    assert card_problems(readme, "space") == []
    assert "sdk: gradio" in readme and "owner/lumbar-model" in readme and wheels[0] in readme
    assert "pushed" not in res.output and "--push-too" in res.output


def test_requirements_keep_the_inference_extras_and_every_environment_marker():
    from hubkit.space.writer import requirements

    got = requirements(['torch>=2.6; python_version < "3.14"', 'peft<0.22,>=0.21; extra == "inference"',
                        'trl==1.15.0; extra == "train"', 'hubkit-lumbar[inference]; extra == "space"',
                        'bitsandbytes; sys_platform == "linux" and extra == "inference"',
                        'pylibjpeg>=2; extra == "decoders"', "pyyaml>=6"])
    assert got == ['bitsandbytes; sys_platform == "linux"', "peft<0.22,>=0.21", "pyyaml>=6",
                   'torch>=2.6; python_version < "3.14"']


def test_the_card_checks_refuse_what_the_spaces_configuration_refuses():
    good = render_space_readme("me/demo", "me/model", gradio_version="6.31.0", python_version="3.11", wheel=None)
    assert card_problems(good, "space") == []
    for old, new, problem in (("sdk: gradio", "sdk: streamlitt", '"sdk"'), ("colorFrom: blue", "colorFrom: teal",
                              '"colorFrom"'), ("sdk_version: 6.31.0", "sdk_version: latest", '"sdk_version"'),
                              ("app_file: app.py", "app_file: app.js", '"app_file"')):
        problems = card_problems(good.replace(old, new), "space")
        assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_models_card_gains_one_link_and_a_second_space_replaces_it():
    card = "---\nlicense: other\n---\n\n# My model\n\nText.\n"
    once = with_space_link(card, "me/demo", "https://hub/spaces/me/demo")
    assert once.count(LINK_START) == 1 and once.index(LINK_START) > once.index("# My model")
    assert with_space_link(once, "me/demo", "https://hub/spaces/me/demo") == once
    other = with_space_link(once, "me/demo2", "https://hub/spaces/me/demo2")
    assert other.count(LINK_START) == 1 and "me/demo2" in other and "spaces/me/demo)" not in other
    assert with_space_link("no heading\n", "me/d", "u").count(LINK_START) == 1
    untitled = with_space_link("---\nlicense: other\n---\nText.\n", "me/d", "u")
    assert untitled.startswith("---\nlicense: other\n---\n") and untitled.index(LINK_START) < untitled.index("Text.")
    assert linked_space(other) == ("me/demo2", "https://hub/spaces/me/demo2") and linked_space(card) is None


def test_push_makes_a_private_space_of_the_apps_files_only_and_the_model_card_links_it(local_hub, tmp_path):
    from huggingface_hub import HfApi

    from hubkit.publish import push_run_folder
    from tests.fixtures.tiny_run import trained_tiny_run

    api = HfApi(token=local_hub.owner_token)
    run = shutil.copytree(trained_tiny_run()[0], tmp_path / "run")
    push_run_folder(run, "owner/space-model", token=local_hub.owner_token)
    res = CliRunner().invoke(cli, ["space", "owner/space-demo", "--model", "owner/space-model"])
    assert res.exit_code == 0, res.output
    info = api.repo_info("owner/space-demo", repo_type="space")
    assert info.private
    files = set(api.list_repo_files("owner/space-demo", repo_type="space")) - {".gitattributes"}  # the Hub's own
    assert {APP_FILE, REQUIREMENTS_FILE, "README.md"} <= files and len(files) == 4
    assert not any(f.endswith((".safetensors", ".bin", ".pt")) for f in files)
    for f in files:  # no token in any file it pushed
        path = api.hf_hub_download("owner/space-demo", f, repo_type="space", cache_dir=str(tmp_path / "c"))
        data = open(path, "rb").read()
        assert local_hub.owner_token.encode() not in data and b"hf_" not in data.replace(b"hf_hub", b"")
    card = open(api.hf_hub_download("owner/space-model", "README.md", cache_dir=str(tmp_path / "c2"))).read()
    assert card.count(LINK_START) == 1 and "/spaces/owner/space-demo" in card
    head = api.repo_info("owner/space-model").sha
    again = CliRunner().invoke(cli, ["space", "owner/space-demo", "--model", "owner/space-model"])
    assert again.exit_code == 0 and api.repo_info("owner/space-model").sha == head
    push_run_folder(run, "owner/space-model", files="card", token=local_hub.owner_token)  # rendered again: kept
    card = open(api.hf_hub_download("owner/space-model", "README.md", cache_dir=str(tmp_path / "c3"))).read()
    assert card.count(LINK_START) == 1 and "/spaces/owner/space-demo" in card


@pytest.mark.parametrize("space, model, says", [("not-a-repo", "owner/m", "the Space"),
                                                ("owner/s", "runs/seed/x", "--model")])
def test_a_space_or_model_that_is_not_a_repo_id_is_one_line(space, model, says, tmp_path):
    res = CliRunner().invoke(cli, ["space", space, "--model", model, "--output", str(tmp_path / "sp")])
    assert res.exit_code == 1 and says in res.output and "OWNER/NAME" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_model_repo_it_cannot_read_stops_it_before_any_space_is_pushed(local_hub):
    from huggingface_hub import HfApi

    res = CliRunner().invoke(cli, ["space", "owner/space-of-nothing", "--model", "owner/no-such-model"])
    assert res.exit_code == 1 and "owner/no-such-model" in res.output and len(res.output.strip().splitlines()) == 1
    assert not HfApi(token=local_hub.owner_token).repo_exists("owner/space-of-nothing", repo_type="space")
