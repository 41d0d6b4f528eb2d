"""The dataset card (README.md) and label chart of a built dataset: a pure function of its manifest.

    from hubkit.cards.dataset import render_dataset_card
    text = render_dataset_card(manifest, repo_id="me/lumbar-ds")     # manifest: hubkit_dataset.json's content

The card only says what the manifest says (`hubkit.manifest`); `hubkit build-dataset` writes it beside the data and
the push re-renders it with the repo id, so its usage snippet names the real repo.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from hubkit.cards.citation import HUBKIT, RSNA, unique
from hubkit.schema import CONDITION_TITLES, CONDITIONS, SEVERITY_NAMES, Picker

CHART_FILE = "label_distribution.png"
COMPETITION_URL = "https://www.kaggle.com/competitions/rsna-2024-lumbar-spine-degenerative-classification"
RSNA_TERMS = ("RSNA 2024 imagery is licensed for non-commercial research and must never be redistributed: keep "
              "this dataset private.")
SYNTHETIC_TERMS = ("Synthetic phantom data made by `hubkit synth`: no patient, no imagery from anyone, no restriction "
                   "on use.")
# The card's metadata licence: the competition's data terms for RSNA builds, none needed for the synthetic phantom.
LICENSES = {
    False: {"license": "other", "license_name": "rsna-2024-lumbar-competition-terms",
            "license_link": f"{COMPETITION_URL}/rules"},
    True: {"license": "cc0-1.0"},
}
PICKER_TEXT = {
    Picker.COORDS: "whole slices chosen from train_label_coordinates.csv (midline Sag T2, left/right parasagittal "
                   "Sag T1, one Axial T2 per level)",
    Picker.GEOMETRY: "whole slices chosen from DICOM geometry only (the rule the inference pipeline uses)",
}


def picker_text(manifest: Mapping[str, Any]) -> str:
    """What the build's picker made of each study, in words (its slot table and, for crops, the crop rule)."""
    picker = str(manifest["picker"])
    crop = manifest.get("crop")
    if crop:
        n = len(manifest.get("views") or ())
        cells = " as one 2×2 mosaic per level" if crop.get("layout") == "mosaic" else ", each its own image"
        loc = manifest.get("localizer")
        where = (f"the points of the localiser {loc.get('source')} (sha256 {str(loc.get('digest'))[:12]}; "
                 f"out of fold for {loc.get('out_of_fold')} studies, located by its final model for "
                 f"{loc.get('located')})" if loc else "train_label_coordinates.csv's points")
        return (f"per-level crops at {where}: the canal on the sagittal T2, each foramen "
                f"on the sagittal T1, both recesses on the axial T2{cells} ({n} images per study, crops of "
                f"{crop.get('crop_px')} px); {crop.get('rule')}")
    if picker in (p.value for p in Picker):
        return PICKER_TEXT[Picker(picker)]
    return f"the {picker!r} picker mode's slots: " + ", ".join(manifest.get("views") or ())


def plot_label_distribution(counts: dict[str, list[int]], path: Path) -> Path:
    """Stacked bar chart of N/M/S per condition (log-free, percentages annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    names = [CONDITION_TITLES[c] for c in CONDITIONS]
    bottom = [0.0] * len(CONDITIONS)
    for k, (label, color) in enumerate(zip(SEVERITY_NAMES, ("#9ecae1", "#fd8d3c", "#d62728"))):
        vals = [counts[c][k] for c in CONDITIONS]
        ax.barh(names, vals, left=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("labels (5 levels × studies)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Label distribution")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for a dataset of `n` rows (datasets' vocabulary: n<1K, 1K<n<10K, ...)."""
    bounds = ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T")
    if n < 1000:
        return "n<1K"
    for k in range(len(bounds) - 1):
        if n < 10 ** (k + 4):
            return f"{bounds[k]}<n<{bounds[k + 1]}"
    return "n>1T"


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "–"


LIMITATIONS = {
    False: [
        "One competition's cohort and its annotators: other scanners, vendors, protocols, populations and readers may "
        "differ, and a model trained here is likely to do worse on them.",
        "Grades are radiologists' reads of the images, not clinical or surgical outcomes; labels the annotators left "
        "out stay missing here (ClassLabel −1).",
        "Most grades are Normal/Mild (see the table): Moderate and Severe are rare, Severe rarest.",
        "Each study is a few picked 2-D slices, not its whole series: what lies outside them is not in this dataset.",
    ],
    True: [
        "A phantom, not anatomy: cylinders and tubes whose radii encode the grades on DICOM files of plausible "
        "geometry. Numbers measured on it demonstrate the workflow, never clinical performance.",
        "Each study is a few picked 2-D slices, not its whole series.",
    ],
}
DEIDENTIFICATION = {
    False: [
        "hubkit reads only a whitelist of DICOM header tags (geometry, timing, windowing, series identity: "
        "`hubkit.dataset_builder.dicom.HEADER_TAGS`); no patient name, id, birth date or other identifying tag "
        "reaches the dataset, its manifest or the build report.",
        "`study_id` and series ids are the source folders' names: RSNA's own anonymised ids.",
        "Pixels are kept as they are: hubkit does not look for text burned into the images. RSNA de-identified its "
        "data before release; de-identify your own scans before building from them.",
        "The images remain under the RSNA competition's terms: never redistribute them, keep the repo private.",
    ],
    True: [
        "No patient: the phantom's DICOM headers carry made-up names, which hubkit never reads (it reads a whitelist "
        "of geometry, timing and windowing tags only).",
    ],
}


def render_dataset_card(manifest: Mapping[str, Any], repo_id: str | None = None, dataset_dir: str | None = None) -> str:
    """README.md text for a built dataset (YAML front matter through huggingface_hub's DatasetCardData).

    Args:
        manifest: the dataset's manifest (`hubkit.manifest.build_manifest`).
        repo_id: the Hub repo it is pushed to; the usage snippet loads it. None: the snippet loads `dataset_dir`.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = manifest["label_counts"]
    rows = []
    for c in CONDITIONS:
        n, m, s, miss = counts[c]
        tot = n + m + s
        rows.append({"name": CONDITION_TITLES[c], "n": n, "m": m, "s": s, "missing": miss,
                     "pn": _pct(n, tot), "pm": _pct(m, tot), "ps": _pct(s, tot)})
    images = manifest.get("images") or {}
    splits = [{"name": k, "studies": v, "images": images.get(k, "–")} for k, v in manifest["splits"].items()]
    n_rows = sum(manifest["splits"].values())
    synthetic = bool(manifest.get("synthetic"))
    build = manifest.get("build") or {}
    tags = ["medical", "radiology", "mri", "lumbar-spine", "rsna-2024", "hubkit"] + (["synthetic"] if synthetic else [])
    pretty = ("Synthetic lumbar spine MRI slices (hubkit phantom)" if synthetic
              else "RSNA 2024 lumbar spine MRI slices (hubkit)")
    data = DatasetCardData(
        task_categories=["image-text-to-text"], tags=tags, size_categories=[size_category(n_rows)],
        pretty_name=pretty, **LICENSES[synthetic],
    )
    picker = str(manifest["picker"])
    template = resources.files("hubkit.cards").joinpath("dataset_card.md").read_text()
    card = DatasetCard.from_template(
        data, template_str=template, title=repo_id.split("/")[-1] if repo_id else pretty,
        max_images=len(manifest.get("views") or ()) or 8, slice_size=manifest["slice_size"],
        terms=SYNTHETIC_TERMS if synthetic else RSNA_TERMS, competition_url=COMPETITION_URL,
        source_name=build.get("data_dir") or "–",
        source_kind="synthetic phantom cohort from `hubkit synth`, RSNA 2024 layout" if synthetic
        else "RSNA 2024 layout", studies_built=manifest.get("studies_built"),
        n_skipped=manifest.get("studies_skipped") or 0, picker=picker, picker_text=picker_text(manifest),
        splits=splits, seed=build.get("seed"), validation_fraction=build.get("validation_fraction"), label_rows=rows,
        repo_id=repo_id, dataset_dir=dataset_dir or "path/to/dataset", chart=CHART_FILE,
        hubkit_version=manifest.get("hubkit_version"), limitations=LIMITATIONS[synthetic],
        deidentification=DEIDENTIFICATION[synthetic],
        citations=unique([HUBKIT] if synthetic else [*RSNA, HUBKIT]),
    )
    return str(card)


def write_dataset_card(out: Path, manifest: Mapping[str, Any], repo_id: str | None = None,
                       chart: tuple[dict, Path] | None = None) -> Path:
    """Write README.md and the label chart into the dataset folder.

    `chart`: (label counts, PNG) drawn earlier by `plot_label_distribution` (the builder draws it while its workers
    run); copied when its counts are this dataset's, else the chart is drawn here."""
    counts = manifest["label_counts"]
    if chart is not None and chart[0] == counts and Path(chart[1]).is_file():
        shutil.copyfile(chart[1], Path(out) / CHART_FILE)
    else:
        plot_label_distribution(counts, Path(out) / CHART_FILE)
    path = Path(out) / "README.md"
    path.write_text(render_dataset_card(manifest, repo_id, dataset_dir=Path(out).name))
    return path
