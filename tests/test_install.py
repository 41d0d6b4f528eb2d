"""Installable by consumers: the wheel's contents and dependencies, an inference-only environment that runs the
pipeline without trl, datasets, evaluate or the plotting/logging stack, and the same beside the newest transformers
and huggingface-hub the index has (no network: the fresh venvs borrow the already-installed packages their
dependency closure names, and the newer ones come from the wheels `make install` downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
TRAIN_ONLY = ("trl", "datasets", "evaluate", "matplotlib", "tensorboard", "pandas", "sklearn")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)
    return next(out.glob("hubkit_lumbar-*.whl"))


def _metadata(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode().splitlines()


def _source_files() -> list[str]:
    """Every module and data file the wheel must hold, at its installed path (pyproject's package-dir mapping)."""
    roots = {"hubkit": REPO / "hubkit", "hubkit/cards": REPO / "cards",
             "hubkit/dataset_builder": REPO / "dataset_builder", "hubkit/configs": REPO / "configs"}
    out = []
    for prefix, root in roots.items():
        for path in root.rglob("*"):
            if path.suffix in (".py", ".md", ".jinja", ".yaml") and "__pycache__" not in path.parts:
                out.append(f"{prefix}/{path.relative_to(root).as_posix()}")
    return out


def test_wheel_holds_every_source_file_a_licence_and_a_slim_base(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in _source_files() if f not in names]
    assert not missing, f"not in the wheel (a package missing from pyproject's list?): {missing[:5]}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = _metadata(wheel)
    assert "Name: hubkit-lumbar" in meta  # not "hubkit": that name on the public index is someone else's
    assert "License-Expression: Apache-2.0" in meta and (REPO / "LICENSE").read_text().lstrip().startswith(
        "Apache License")
    from hubkit._imports import SOURCE_URL

    assert f"Project-URL: Repository, {SOURCE_URL}" in meta  # the card's install-from-source line uses it
    reqs = [Requirement(line.split(": ", 1)[1]) for line in meta if line.startswith("Requires-Dist:")]
    base = {r.name.lower() for r in reqs if r.marker is None}
    inference = {r.name.lower(): r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "inference"})}
    assert {"pydicom", "huggingface-hub"} <= base and not base & {"torch", "transformers", "trl", "datasets"}
    assert {"torch", "transformers", "peft", "accelerate"} <= set(inference)
    # a consumer's current releases are accepted: no pin, no cap at the training stack's versions
    assert "5.25.0" in inference["transformers"].specifier and "5.17.0" in inference["transformers"].specifier
    assert "2.15.0" in inference["torch"].specifier
    hub = next(r for r in reqs if r.name == "huggingface-hub" and r.marker is None)
    assert "2.4.0" in hub.specifier and "1.33.0" in hub.specifier


def _closure(names: set[str]) -> set[metadata.Distribution]:
    """The installed distributions `names` need, transitively (markers evaluated, extras not taken)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional platform package (e.g. CUDA libraries on this CPU build)
        seen[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return set(seen.values())


NEWER_STACK = Path(sys.prefix) / "newer-stack"  # wheels `make install` downloaded: the newest transformers and its deps
NEWER = ("transformers", "huggingface_hub", "tokenizers", "safetensors")  # never borrowed when newer ones are given


def _inference_venv(wheel: Path, tmp_path: Path, newer: Path | None = None) -> tuple[Path, Path]:
    """(python, site-packages) of a fresh venv holding the wheel, its base + inference closure borrowed from this
    environment and, with `newer`, transformers and what it needs installed offline from that folder of wheels."""
    meta = _metadata(wheel)
    reqs = [Requirement(line.split(": ", 1)[1]) for line in meta if line.startswith("Requires-Dist:")]
    base = {r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": "inference"})}
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python*/site-packages"))
    with zipfile.ZipFile(wheel) as z:  # a wheel is installed by unpacking it
        z.extractall(site)
    if newer is not None:
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(newer),
                              "--target", str(site), "transformers"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    skip = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")} if newer is not None else set()
    for dist in _closure(base):
        if dist.metadata["Name"].lower().replace("-", "_") in skip | ({*NEWER} if newer is not None else set()):
            continue
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (borrowed / top).exists() and not top.startswith(("hubkit", "__editable__")):
                (borrowed / top).symlink_to(src)
    (site / "borrowed.pth").write_text(str(borrowed) + "\n")
    for top in TRAIN_ONLY:
        assert not (borrowed / top).exists(), f"{top} is in the inference install's dependency closure"
    return env / "bin" / "python", site


def _study_pngs(tmp_path: Path):
    from tests.fixtures.tiny_run import make_study

    study = make_study(3, 5)
    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for i, im in enumerate(study.images):
        im.save(images / f"{i}.png")
        paths.append(str(images / f"{i}.png"))
    return paths, study.views


def _run_pipeline(python: Path, site: Path, model: str, paths, views, cwd: Path, env: dict) -> dict:
    code = f"""
import importlib.util, json, sys
import hubkit, transformers, huggingface_hub
from transformers import pipeline
assert hubkit.__file__.startswith({str(site)!r}), hubkit.__file__   # the wheel, not the checkout
clf = pipeline("lumbar-classify", model={model!r})
out = clf({{"images": {paths!r}, "views": {views!r}}})
missing = [m for m in {TRAIN_ONLY!r} if importlib.util.find_spec(m) is not None]
print(json.dumps({{"json": out["json"], "importable": missing, "transformers": transformers.__version__,
                  "hub": huggingface_hub.__version__}}))
"""
    res = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=cwd,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_inference_only_install_runs_the_pipeline(wheel, tmp_path):
    from tests.fixtures.tiny_run import trained_tiny_run

    python, site = _inference_venv(wheel, tmp_path)
    run, _ = trained_tiny_run()
    paths, views = _study_pngs(tmp_path)
    got = _run_pipeline(python, site, str(run), paths, views, tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert got["importable"] == []
    from hubkit.inference.pipeline import load_pipeline

    assert got["json"] == load_pipeline(run)({"images": paths, "views": views})["json"]


@pytest.mark.skipif(not any(NEWER_STACK.glob("transformers-*.whl")),
                    reason="no newer transformers was downloaded at install time (index unreachable, or none newer)")
def test_inference_install_beside_the_newest_transformers_runs_the_pipeline_from_the_hub(wheel, tmp_path,
                                                                                          local_hub):
    """The inference extra's ranges are real: the newest transformers and huggingface-hub the index had when this
    checkout was installed (newer than the training pin), with the pipeline loading an adapter repo pushed by
    hubkit from the loopback Hub."""
    import os
    import shutil

    from hubkit.inference.pipeline import load_pipeline
    from hubkit.publish import push_run_folder
    from tests.fixtures.tiny_run import trained_tiny_run

    from packaging.version import Version

    newest = max((p.name.split("-")[1] for p in NEWER_STACK.glob("transformers-*.whl")), key=Version)
    python, site = _inference_venv(wheel, tmp_path, NEWER_STACK)
    run = shutil.copytree(trained_tiny_run()[0], tmp_path / "run")
    push_run_folder(run, "owner/newer-stack", token=local_hub.owner_token)
    paths, views = _study_pngs(tmp_path)
    env = {k: os.environ[k] for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_DISABLE_XET") if k in os.environ}
    got = _run_pipeline(python, site, "owner/newer-stack", paths, views, tmp_path,
                        {**env, "HF_HOME": str(tmp_path / "hf-home")})
    assert got["transformers"] == newest != "5.17.0" and got["importable"] == []
    assert got["json"] == load_pipeline(run)({"images": paths, "views": views})["json"]


def test_citation_file_matches_the_package_and_the_cards():
    import yaml

    from hubkit import __version__
    from hubkit._imports import SOURCE_URL
    from hubkit.cards.citation import HUBKIT

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["version"] == __version__ and cff["license"] == "Apache-2.0" and cff["repository-code"] == SOURCE_URL
    assert cff["title"] in HUBKIT and f"version = {{{__version__}}}" in HUBKIT
