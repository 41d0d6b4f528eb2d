"""The dataset manifest (`hubkit_dataset.json`): the facts of a build that travel with the dataset.

`hubkit build-dataset` writes it beside the data and pushes it with the dataset; `hubkit train` copies it into the
run's `hubkit_config.json`; the model card and the pipeline read it from there. So the slice size the pipeline
reads DICOM at, the picker the card names and the label table it shows are the build's own, never re-defaulted or
scraped from another card's prose.

    from hubkit.manifest import read_manifest
    m = read_manifest("me/lumbar-ds")           # or a local dataset folder; None if the dataset has none
    m["slice_size"], m["picker"], m["label_counts"]["canal"]   # [N, M, S, missing]
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from hubkit.schema import CONDITIONS, LEVELS, label_column

MANIFEST_FILE = "hubkit_dataset.json"
# Written by `hubkit synth` at a cohort's root: a build from such a folder is marked synthetic.
SYNTH_MARKER = "hubkit_synth.json"
# Bump when a field changes meaning; readers refuse a newer schema than they know.
SCHEMA_VERSION = 1


def label_counts_of(label_dicts: Iterable[Mapping[str, int | None]]) -> dict[str, list[int]]:
    """condition -> [N, M, S, missing] summed over levels, from label dicts ({label column: class index, -1 = missing})."""
    counts = {c: [0, 0, 0, 0] for c in CONDITIONS}
    for labels in label_dicts:
        for c in CONDITIONS:
            for lv in LEVELS:
                v = labels.get(label_column(c, lv))
                v = -1 if v is None else int(v)
                counts[c][v if v >= 0 else 3] += 1
    return counts


def label_counts(dd) -> dict[str, list[int]]:
    """`label_counts_of` over every split of a built `DatasetDict` (one Arrow read per split, no image decoding)."""
    cols = [label_column(c, lv) for c in CONDITIONS for lv in LEVELS]
    return label_counts_of(row for split in dd.values()
                           for row in split.select_columns(cols).with_format("arrow")[:].to_pylist())


def build_manifest(cfg, dd, report: Mapping[str, Any], localizer: Mapping[str, Any] | None = None) -> dict:
    """The manifest of a finished build: `cfg` (BuildConfig), the saved `DatasetDict`, its build report
    (`dataset_builder.report.write_report`'s) and, for crops at a localiser's points, that localiser's facts
    (`hubkit.localizer.points.localized_coordinates`')."""
    from hubkit import __version__
    from hubkit.config import config_to_dict

    from hubkit.slots import describe, mode

    slots = mode(cfg.picker).slots(cfg.layout)
    build = config_to_dict(cfg)
    build["data_dir"] = Path(cfg.data_dir).name  # the folder's name only: a local path says nothing elsewhere
    if cfg.localizer:
        from hubkit.sources import display_name

        build["localizer"] = display_name(cfg.localizer)
    return {
        "schema_version": SCHEMA_VERSION,
        "hubkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "slice_size": cfg.slice_size,
        "picker": str(cfg.picker),
        # the picker mode's slots, in order: the images' names in the prompt (`hubkit.slots`)
        "views": [s.view for s in slots],
        "slots": describe(slots),
        **({"crop": crop_spec(cfg)} if mode(cfg.picker).crops else {}),
        # which points the crops were cut at: a localiser's (named, hashed) or, absent, the annotators'
        **({"localizer": dict(localizer)} if localizer else {}),
        "splits": {k: len(v) for k, v in dd.items()},
        "images": {k: sum(len(x) for x in v.select_columns(["views"])["views"]) for k, v in dd.items()},
        "fingerprints": dict(report["fingerprints"]),
        "label_counts": label_counts(dd),
        "studies_built": report.get("studies_built"),
        "studies_skipped": len(report.get("studies_skipped") or []),
        "synthetic": (Path(cfg.data_dir) / SYNTH_MARKER).is_file(),
        "build": build,
    }


def crop_spec(cfg) -> dict:
    """What a crops build's images are (what the pipeline must cut alike): layout, sizes, the mm rule."""
    from hubkit.dataset_builder.crops import RULE, SIDE_MM, SPACING_FACTOR

    cell = cfg.slice_size // 2 if cfg.layout == "mosaic" else cfg.slice_size
    return {"layout": cfg.layout, "image_px": cfg.slice_size, "crop_px": cell, "rule": RULE,
            "side_mm": list(SIDE_MM), "spacing_factor": SPACING_FACTOR}


def write_manifest(folder: str | Path, manifest: Mapping[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def check_manifest(manifest: Any, where: str) -> dict:
    """`manifest` if it is one this hubkit can read; ValueError naming `where` otherwise."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("schema_version"), int):
        raise ValueError(f"{where}: not a hubkit dataset manifest (no schema_version)")
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise ValueError(f"{where}: manifest schema {manifest['schema_version']} is newer than this hubkit reads "
                         f"({SCHEMA_VERSION}); upgrade hubkit")
    for key in ("slice_size", "picker"):
        if key not in manifest:
            raise ValueError(f"{where}: manifest lacks {key!r}")
    return manifest


def read_manifest(source: str | Path, revision: str | None = None) -> dict | None:
    """The manifest of a dataset folder or Hub dataset repo; None when the dataset has none (not built by hubkit,
    or built before manifests existed).

    Raises:
        ValueError: the file is there but is not a manifest this hubkit can read.
        HubError: the Hub repo cannot be reached or is not visible.
    """
    from hubkit.sources import locate

    loc = locate(source, "dataset")
    if loc.path is not None:
        folder = loc.path if loc.path.is_dir() else loc.path.parent
        path = folder / MANIFEST_FILE
        if not path.is_file():
            return None
        return check_manifest(json.loads(path.read_text()), str(path))
    from hubkit.hub import HubFileNotFound, download_file

    try:
        path = download_file(loc.repo_id, MANIFEST_FILE, repo_type="dataset", revision=revision)
    except HubFileNotFound:
        return None
    return check_manifest(json.loads(Path(path).read_text()), f"{loc.repo_id}/{MANIFEST_FILE}")
