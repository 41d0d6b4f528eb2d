"""The level localiser's room: where each level's structures are in a study, without the annotators' coordinates.

net (the U-Net and its files) · locate (a study's series -> points in train_label_coordinates.csv's format, the
rows the crops picker cuts at) · fit (`hubkit localizer train`: K folds, out-of-fold points, metrics). The pipeline
imports `net` and `locate` only; `fit` is training's.
"""

# The localiser's files, and where a dataset built at its points, a run trained on one and the model's repo keep
# them (here, a light module: the records name them without importing torch or numpy).
FOLDER = "localizer"
WEIGHTS_FILE, CONFIG_FILE = "localizer.safetensors", "localizer.json"
METRICS_FILE, OOF_FILE = "metrics.json", "oof_coordinates.csv"
# The picture of one study with its points: it shows a training image, so it is published only where the training
# images may be (a synthetic cohort); RSNA imagery is never redistributed.
EXAMPLE_FILE = "localizer_example.png"
# What travels with a dataset and a model: the networks, their facts and errors.
SHIPPED = (WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE)


def picture_to_publish(folder, synthetic: bool) -> str | None:
    """EXAMPLE_FILE when the picture in the localiser folder FOLDER may be published (a card shows it, a push
    uploads it): it is a training image, so only for a synthetic cohort; None otherwise."""
    from pathlib import Path

    return EXAMPLE_FILE if synthetic and (Path(folder) / EXAMPLE_FILE).is_file() else None
