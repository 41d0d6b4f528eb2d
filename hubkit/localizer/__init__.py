"""The level localiser's room: where each level's structures are in a study, without the annotators' coordinates.

net (the U-Net and its files) · locate (a study's series -> points in train_label_coordinates.csv's format, the
rows the crops picker cuts at) · fit (`hubkit localizer train`: K folds, out-of-fold points, metrics). The pipeline
imports `net` and `locate` only; `fit` is training's.
"""
