"""Installable by consumers: the wheel's contents and dependencies, and an inference-only environment that runs the
pipeline without trl, datasets, evaluate or the plotting/logging stack (no network: the fresh venv borrows the
already-installed packages its dependency closure names, and nothing else)."""

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


def test_wheel_has_every_room_and_a_slim_base(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("hubkit/inference/pipeline.py", "hubkit/training/recipe.py", "hubkit/evaluation/metrics/__init__.py",
                 "hubkit/devkit/synth.py", "hubkit/dataset_builder/series.py", "hubkit/cards/model_card.md",
                 "hubkit/configs/tiny-cpu.yaml"):
        assert must in names, must
    meta = _metadata(wheel)
    assert "Name: hubkit-lumbar" in meta  # not "hubkit": that name on the public index is someone else's
    base = [Requirement(line.split(": ", 1)[1]) for line in meta if line.startswith("Requires-Dist:")]
    base = {r.name.lower() for r in base if r.marker is None}
    assert {"torch", "transformers", "peft", "pydicom"} <= base
    assert not base & {"trl", "datasets", "evaluate", "matplotlib", "tensorboard", "pandas", "scikit-learn"}


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


def test_inference_only_install_runs_the_pipeline(wheel, tmp_path):
    from tests.fixtures.tiny_run import make_study, trained_tiny_run

    meta = _metadata(wheel)
    base = {Requirement(line.split(": ", 1)[1]).name for line in meta
            if line.startswith("Requires-Dist:") and ";" not in line}
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python*/site-packages"))
    with zipfile.ZipFile(wheel) as z:  # a wheel is installed by unpacking it
        z.extractall(site)
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    for dist in _closure(base):
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (borrowed / top).exists() and not top.startswith(("hubkit", "__editable__")):
                (borrowed / top).symlink_to(src)
    (site / "borrowed.pth").write_text(str(borrowed) + "\n")
    for top in TRAIN_ONLY:
        assert not (borrowed / top).exists(), f"{top} is in the inference install's dependency closure"

    run, _ = trained_tiny_run()
    study = make_study(3, 5)
    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for i, im in enumerate(study.images):
        im.save(images / f"{i}.png")
        paths.append(str(images / f"{i}.png"))
    code = f"""
import importlib.util, json, sys
import hubkit
from transformers import pipeline
assert hubkit.__file__.startswith({str(site)!r}), hubkit.__file__   # the wheel, not the checkout
clf = pipeline("lumbar-classify", model={str(run)!r})
out = clf({{"images": {paths!r}, "views": {study.views!r}}})
missing = [m for m in {TRAIN_ONLY!r} if importlib.util.find_spec(m) is not None]
print(json.dumps({{"json": out["json"], "importable": missing}}))
"""
    res = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["importable"] == []
    from hubkit.inference.pipeline import load_pipeline

    assert got["json"] == load_pipeline(run)({"images": paths, "views": study.views})["json"]
