"""The level localiser's room: where each level's structures are in a study, without the annotators' coordinates.

net (the U-Net and its files) · locate (a study's series -> points in train_label_coordinates.csv's format, the
rows the crops picker cuts at) · fit (`hubkit localizer train`: K folds, out-of-fold points, metrics). The pipeline
imports `net` and `locate` only; `fit` is training's.
"""

# Where a dataset built at a localiser's points, a run trained on one, and the model's repo keep the localiser's
# files (a light module: the records name it without importing torch or numpy).
FOLDER = "localizer"
