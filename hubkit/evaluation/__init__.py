"""Scoring a model on a dataset split: `hubkit evaluate` and the local `evaluate` metric modules.

run (the pipeline over a split -> predictions, metrics, figures: the files the card reads) · calibration (`hubkit
calibrate`: fit calibration.json on validation predictions for the official score) · metrics (the official RSNA
score, kappa and friends as offline `evaluate` modules; submission CSV; confusion-matrix plots).
"""

from hubkit.evaluation.run import EVAL_CONFIG, VARIANTS, evaluate_model, load_eval_split, result_files

__all__ = ["EVAL_CONFIG", "VARIANTS", "evaluate_model", "load_eval_split", "result_files"]
