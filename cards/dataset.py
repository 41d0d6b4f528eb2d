"""The dataset card (README.md) and label chart written next to a built dataset; a pure function of the build."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from hubkit.schema import CONDITION_TITLES, CONDITIONS, LEVELS, label_column

RSNA_TERMS = ("RSNA 2024 imagery is licensed for non-commercial research and must never be redistributed: keep "
              "this dataset private. Synthetic cohorts made with `hubkit synth` carry no such restriction.")
PICKER_TEXT = {
    "coords": "slices chosen from train_label_coordinates.csv (midline Sag T2, left/right parasagittal Sag T1, "
              "one Axial T2 per level)",
    "geometry": "slices chosen from DICOM geometry only (the rule the inference pipeline uses)",
}


def label_counts(dd) -> dict[str, list[int]]:
    """condition -> [N, M, S, missing] summed over levels and splits."""
    cols = [label_column(c, lv) for c in CONDITIONS for lv in LEVELS]
    # one Arrow read per split: rows of {label column: class index, -1 = missing}
    return label_counts_of(row for split in dd.values()
                           for row in split.select_columns(cols).with_format("arrow")[:].to_pylist())


def label_counts_of(label_dicts) -> dict[str, list[int]]:
    """`label_counts` from the studies' label dicts ({label column: class index, -1 = missing}) instead of a
    built dataset: lets the builder draw the chart before the dataset exists."""
    counts = {c: [0, 0, 0, 0] for c in CONDITIONS}
    for labels in label_dicts:
        for c in CONDITIONS:
            for lv in LEVELS:
                v = int(labels[label_column(c, lv)])
                counts[c][v if v >= 0 else 3] += 1
    return counts


def plot_label_distribution(counts: dict[str, list[int]], path: Path) -> Path:
    """Stacked bar chart of N/M/S per condition (log-free, percentages annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    names = [CONDITION_TITLES[c] for c in CONDITIONS]
    bottom = [0.0] * len(CONDITIONS)
    for k, (label, color) in enumerate(zip(("Normal/Mild", "Moderate", "Severe"), ("#9ecae1", "#fd8d3c", "#d62728"))):
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


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "–"


def render_dataset_card(cfg, dd, report: dict, repo_id: str | None = None,
                        counts: dict[str, list[int]] | None = None) -> str:
    """README.md text for a built dataset (YAML front matter through huggingface_hub's DatasetCardData).

    `counts`: `label_counts(dd)` when the caller has it already."""
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = counts or label_counts(dd)
    rows = []
    for c in CONDITIONS:
        n, m, s, miss = counts[c]
        tot = n + m + s
        rows.append({"name": CONDITION_TITLES[c], "n": n, "m": m, "s": s, "missing": miss,
                     "pn": _pct(n, tot), "pm": _pct(m, tot), "ps": _pct(s, tot)})
    splits = [{"name": k, "studies": len(v), "images": sum(len(x) for x in v["views"])} for k, v in dd.items()]
    n_rows = sum(len(v) for v in dd.values())
    size = "n<1K" if n_rows < 1000 else "1K<n<10K"
    data = DatasetCardData(
        license="other", license_name="rsna-2024-lumbar-terms", task_categories=["image-text-to-text"],
        tags=["medical", "radiology", "mri", "lumbar-spine", "rsna-2024", "hubkit"], size_categories=[size],
        pretty_name="RSNA 2024 lumbar spine — hubkit slices",
    )
    template = resources.files("hubkit.cards").joinpath("dataset_card.md").read_text()
    source = Path(cfg.data_dir)
    synthetic = (source / "hubkit_synth.json").is_file()
    if synthetic:
        data.tags.append("synthetic")
    card = DatasetCard.from_template(
        data, template_str=template, pretty_name="RSNA 2024 lumbar spine — hubkit slices",
        max_images=8, image_size=cfg.image_size, terms=RSNA_TERMS, source_name=source.name,
        source_kind="synthetic phantom cohort from `hubkit synth`, RSNA 2024 layout" if synthetic
        else "RSNA 2024 layout", studies_built=report["studies_built"],
        n_skipped=len(report["studies_skipped"]), picker=cfg.picker, picker_text=PICKER_TEXT[cfg.picker],
        splits=splits, seed=cfg.seed, validation_fraction=cfg.validation_fraction, label_rows=rows,
        repo_hint=repo_id or "OWNER/NAME",
    )
    return str(card)


def write_dataset_card(out: Path, cfg, dd, report: dict, repo_id: str | None = None,
                       chart: tuple[dict, Path] | None = None) -> Path:
    """Write README.md and label_distribution.png into the dataset folder.

    `chart`: (label counts, PNG) drawn earlier by `plot_label_distribution` (the builder draws it while its workers
    run); copied when its counts are this dataset's, else the chart is drawn here."""
    counts = label_counts(dd)
    if chart is not None and chart[0] == counts and Path(chart[1]).is_file():
        shutil.copyfile(chart[1], Path(out) / "label_distribution.png")
    else:
        plot_label_distribution(counts, Path(out) / "label_distribution.png")
    path = Path(out) / "README.md"
    path.write_text(render_dataset_card(cfg, dd, report, repo_id, counts))
    return path
