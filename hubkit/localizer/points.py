"""The points a crops build cuts at when it is given a localiser (`build-dataset --picker crops --localizer`).

A classifier must train on the errors it will see: at inference the crops come from the localiser, so training
crops do too (a classifier trained on annotators' crops and run on a localiser's loses much of its score). For the
studies the localiser was trained on, that means its out-of-fold points (`oof_coordinates.csv`: each predicted by
the fold that never saw the study); any other study (another cohort, a study added since) is located by its final
model. Which applies is decided by the data, not by a flag: the localiser's config names the studies it trained on
and a fingerprint of their annotated coordinates, and only a cohort whose own coordinates of those studies hash
the same gets the out-of-fold points.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from hubkit.localizer import EXAMPLE_FILE, METRICS_FILE, OOF_FILE, SHIPPED


def coordinates_fingerprint(coords: Mapping[str, list[dict]], ids: Iterable[str]) -> str:
    """16 hex digits of the annotated coordinates of `ids` (what a localiser was trained on)."""
    return hashlib.sha256(json.dumps({s: coords.get(s, []) for s in ids}, sort_keys=True).encode()).hexdigest()[:16]


def open_localizer(source: str | os.PathLike) -> Path:
    """The folder of a localiser: a local folder as it is, a Hub repo id downloaded (its localiser files only).

    Raises:
        FileNotFoundError: neither a folder nor a repo id. ValueError: a folder that holds no localiser.
        HubError: the repo cannot be read.
    """
    from hubkit import sources

    from . import net

    loc = sources.locate(source, "localizer")
    if loc.path is not None:
        folder = loc.path
    else:
        from hubkit.hub.transfer import download_snapshot

        folder = download_snapshot(loc.repo_id, "model", allow_patterns=[net.WEIGHTS_FILE, net.CONFIG_FILE, OOF_FILE,
                                                                          METRICS_FILE])
    for name in (net.WEIGHTS_FILE, net.CONFIG_FILE):
        if not (Path(folder) / name).is_file():
            raise ValueError(f"{source}: not a localiser (no {name}); write one with `hubkit localizer train`")
    return Path(folder)


def localized_coordinates(source: str | os.PathLike, data_dir: str | os.PathLike, study_ids: Iterable[str],
                          descriptions: Mapping[str, Mapping[str, str]],
                          progress: bool = False) -> tuple[dict[str, list[dict]], dict, Path]:
    """({study_id: rows in train_label_coordinates.csv's typed form}, facts for the manifest) for the studies of
    an RSNA-layout folder: out-of-fold points where the localiser was trained on this cohort's studies, its final
    model's elsewhere (see the module docstring). The facts: source (a repo id, or a folder's name), digest, how
    many studies took each kind of point; and the localiser's folder."""
    from hubkit.dataset_builder import rsna_csv
    from hubkit.sources import display_name

    from . import net
    from .locate import Localizer, study_series

    folder = open_localizer(source)
    config = json.loads((folder / net.CONFIG_FILE).read_text())
    trained = config.get("trained_on", {})
    ids = [str(s) for s in study_ids]
    oof: dict[str, list[dict]] = {}
    if (folder / OOF_FILE).is_file() and trained.get("study_ids"):
        annotated = rsna_csv.read_coordinates(data_dir, required=False)
        if coordinates_fingerprint(annotated, trained["study_ids"]) == trained.get("coordinates_fingerprint"):
            oof = rsna_csv.read_coordinates_csv(folder / OOF_FILE)
            oof = {s: oof.get(s, []) for s in trained["study_ids"]}
    todo = [s for s in ids if s not in oof]
    out = {s: [dict(r) for r in oof[s]] for s in ids if s in oof}
    if todo:
        localizer = Localizer(folder)
        bar = todo
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(todo, desc="localise studies", unit="study")
        for sid in bar:
            if (Path(data_dir) / "train_images" / sid).is_dir():
                out[sid] = localizer.locate(study_series(data_dir, sid, descriptions))[0]
    facts = {"source": display_name(source), "digest": net.digest(folder),
             "out_of_fold": sum(1 for s in ids if s in oof), "located": len(todo),
             "metrics": config.get("metrics")}
    return out, facts, folder


def copy_localizer(folder: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """The localiser's files (weights, config, metrics, the card's picture) copied into DEST/localizer/; returns
    that folder."""
    import shutil

    from . import net

    out = Path(dest) / net.FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SHIPPED, EXAMPLE_FILE):
        if (Path(folder) / name).is_file():
            shutil.copyfile(Path(folder) / name, out / name)
    return out


def ship_localizer(dataset: str | os.PathLike, manifest: Mapping, run_dir: str | os.PathLike) -> Path | None:
    """Training's part: the localiser a crops dataset was cut with (its manifest names it, its folder or repo holds
    it in `localizer/`) copied into the run folder, so that the model ships it and the pipeline localises with the
    very networks whose errors training saw. None for a dataset built without one.

    Raises:
        ValueError: the dataset lacks the localiser's files, or they are not the ones its manifest names.
    """
    from hubkit import sources

    from . import net

    named = manifest.get("localizer") if manifest else None
    if not named:
        return None
    loc = sources.locate(dataset, "dataset")
    if loc.path is not None:
        folder = Path(loc.path) / net.FOLDER
    else:
        from hubkit.hub.transfer import download_snapshot

        folder = download_snapshot(loc.repo_id, "dataset", allow_patterns=[f"{net.FOLDER}/*"]) / net.FOLDER
    if not (folder / net.WEIGHTS_FILE).is_file() or net.digest(folder) != named.get("digest"):
        raise ValueError(f"{dataset}: its crops were cut at the localiser {named.get('source')} (sha256 "
                         f"{str(named.get('digest'))[:12]}), but the dataset does not hold that localiser in "
                         f"{net.FOLDER}/; rebuild it with this hubkit (`build-dataset --localizer`)")
    return copy_localizer(folder, run_dir)
