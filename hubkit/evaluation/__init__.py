"""Scoring a model on a dataset split: `hubkit evaluate` and the local `evaluate` metric modules.

run (the pipeline over a split -> predictions, metrics, figures: the files the card reads) · calibration (`hubkit
calibrate`: fit the run's calibration on validation predictions for the official score) · metrics (the official RSNA
score, kappa and friends as offline `evaluate` modules; submission CSV; confusion-matrix plots).
"""

from hubkit.evaluation.run import evaluate_model, load_eval_split

__all__ = ["evaluate_model", "load_eval_split"]
