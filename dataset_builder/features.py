"""The explicit `datasets.Features` of a hubkit lumbar dataset (never inferred)."""

from __future__ import annotations

from hubkit.schema import LABEL_COLUMNS, SEVERITY_NAMES

REQUIRED_COLUMNS = ("study_id", "images", "views", "prompt", "target")


def lumbar_features():
    """study_id, images (List(Image)), views, prompt, target, and the 25 labels as ClassLabel (-1 = missing)."""
    import datasets

    cols = {
        "study_id": datasets.Value("string"),
        "images": datasets.List(datasets.Image()),
        "views": datasets.List(datasets.Value("string")),
        "prompt": datasets.Value("string"),
        "target": datasets.Value("string"),
    }
    for c in LABEL_COLUMNS:
        cols[c] = datasets.ClassLabel(names=list(SEVERITY_NAMES))
    return datasets.Features(cols)
