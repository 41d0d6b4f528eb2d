"""Hard-label classification metrics for the RSNA 2024 lumbar spine task (a local `evaluate` module).

Load it with `evaluate.load("/abs/path/lumbar_classification.py")` (see `hubkit.evaluation.metrics.load_metric`). evaluate
copies this file into its module cache and imports it from there, so it uses absolute imports of installed
libraries only (numpy, datasets, evaluate) and keeps its few constants local; `tests/test_metrics.py` checks that
they match `hubkit.schema`. Every number is computed from the 3x3 confusion matrix with numpy, so the results do
not depend on the scikit-learn version (the tests cross-check against scikit-learn).

Inputs, one element per (study, condition, level) row:
- `predictions`: predicted class index (0 = Normal/Mild, 1 = Moderate, 2 = Severe).
- `references`: true class index, or -1 when the label is missing. Missing rows are dropped and counted
  (`n_missing`); their prediction is not checked.
- `conditions`: the row's condition key (`canal`, `lf`, `rf`, `ls`, `rs`) for the per-condition numbers.
- `parse_failures` (optional keyword, not a per-row feature): one bool per generated answer (study), True where the
  answer could not be parsed -> `parse_failure_rate`, `n_parse_failures`, `n_answers` (None when not given).

Returned keys (overall; the same set with the suffix `_{condition}` per condition present in `conditions`):
- `kappa`: Cohen's kappa (unweighted); `qwk`: quadratic-weighted kappa. None when undefined (both raters constant).
- `accuracy`: raw accuracy; `weighted_accuracy`: accuracy with sample weights 1/2/4 by true class (2**class).
- `f1_weighted`: F1 averaged over classes weighted by support (sklearn `average="weighted"`, zero_division=0).
- `recall_normal_mild`, `recall_moderate`, `recall_severe`: per-class recall (None when the class is absent).
- `confusion_matrix`: 3x3 nested list, rows = true class, columns = predicted class.
- `rsna_proxy`: the seed's "RSNA weighted score proxy": the official weighted log loss (weights 1/2/4, all labelled
  rows pooled, no grouping) of HARD one-hot predictions clipped to [1e-7, 1 - 1e-7] (no renormalisation). A wrong
  row costs -ln(1e-7) = 16.118, a right one -ln(1 - 1e-7) ~ 1e-7, so
  `rsna_proxy = 16.118 * (1 - weighted_accuracy) + 1e-7 * weighted_accuracy`: a weighted error rate scaled by
  16.1, NOT a competition score (use `rsna_lumbar_metric` on probabilities for that).
- `n`: labelled rows scored. Overall only: `n_missing`, `parse_failure_rate`, `n_parse_failures`, `n_answers`.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

N_CLASSES = 3
CLASS_NAMES = ("normal_mild", "moderate", "severe")  # == hubkit.schema.SUBMISSION_COLUMNS
CONDITION_ORDER = ("canal", "lf", "rf", "ls", "rs")  # == hubkit.schema.CONDITIONS
PROXY_EPS = 1e-7  # the seed's clip; -ln(1e-7) = 16.118

_DESCRIPTION = (
    "Cohen's kappa, quadratic kappa, weighted accuracy (1/2/4), weighted F1, per-class recall, confusion matrices "
    "and the seed's hard-label RSNA proxy for the RSNA 2024 lumbar spine task."
)
_INPUTS = """
Args:
    predictions (list of int): predicted class per row, 0 = Normal/Mild, 1 = Moderate, 2 = Severe.
    references (list of int): true class per row, -1 = missing (dropped, counted in n_missing).
    conditions (list of str): condition key per row (canal, lf, rf, ls, rs).
    parse_failures (list of bool, optional): one flag per generated answer, True = unparseable.
Returns:
    dict: kappa, qwk, accuracy, weighted_accuracy, f1_weighted, recall_*, confusion_matrix, rsna_proxy, n
    (overall and suffixed _{condition}), n_missing, parse_failure_rate, n_parse_failures, n_answers.
Example:
    >>> m = evaluate.load("hubkit/metrics/lumbar_classification.py")
    >>> m.compute(predictions=[0, 2], references=[0, 2], conditions=["canal", "lf"])["kappa"]
    1.0
"""


def confusion(references: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """3x3 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    np.add.at(cm, (references, predictions), 1)
    return cm


def kappa_from_confusion(cm: np.ndarray, weights: str | None = None) -> float | None:
    """Cohen's kappa 1 - sum(W*O) / sum(W*E) (same definition as sklearn.metrics.cohen_kappa_score)."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    if n == 0:
        return None
    i, j = np.indices(cm.shape)
    w = (i - j) ** 2 if weights == "quadratic" else (i != j).astype(np.float64)
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    denom = (w * expected).sum()
    if denom == 0:  # both raters used one and the same class: kappa is undefined
        return None
    return float(1.0 - (w * cm).sum() / denom)


def summarise(cm: np.ndarray) -> dict:
    """All per-subset numbers from one confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    n = int(cm.sum())
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    tp = np.diag(cm).astype(np.float64)
    class_w = 2.0 ** np.arange(N_CLASSES)
    out: dict = {"n": n}
    if n == 0:
        out.update(kappa=None, qwk=None, accuracy=None, weighted_accuracy=None, f1_weighted=None, rsna_proxy=None)
    else:
        out["kappa"] = kappa_from_confusion(cm)
        out["qwk"] = kappa_from_confusion(cm, "quadratic")
        out["accuracy"] = float(tp.sum() / n)
        out["weighted_accuracy"] = float((class_w * tp).sum() / (class_w * support).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(support > 0, tp / support, 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        out["f1_weighted"] = float((f1 * support).sum() / n)
        # Seed proxy: weighted log loss of one-hot predictions clipped to [eps, 1 - eps], rows pooled.
        row_w = class_w[:, None] * np.ones((1, N_CLASSES))
        cost = np.where(np.eye(N_CLASSES, dtype=bool), -np.log1p(-PROXY_EPS), -np.log(PROXY_EPS))
        out["rsna_proxy"] = float((row_w * cm * cost).sum() / (row_w * cm).sum())
    for k, name in enumerate(CLASS_NAMES):
        out[f"recall_{name}"] = float(tp[k] / support[k]) if support[k] > 0 else None
    out["confusion_matrix"] = cm.tolist()
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class LumbarClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                    "conditions": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, conditions, parse_failures=None):
        preds = np.asarray(predictions, dtype=np.int64).reshape(-1)
        refs = np.asarray(references, dtype=np.int64).reshape(-1)
        conds = np.asarray(conditions, dtype=object).reshape(-1)
        if not (len(preds) == len(refs) == len(conds)):
            raise ValueError(
                f"lengths differ: {len(preds)} predictions, {len(refs)} references, {len(conds)} conditions"
            )
        if np.any((refs < -1) | (refs >= N_CLASSES)):
            raise ValueError(f"references must be -1 (missing) or 0..{N_CLASSES - 1}, got {sorted(set(refs.tolist()))}")
        keep = refs >= 0
        bad = keep & ((preds < 0) | (preds >= N_CLASSES))
        if np.any(bad):
            got = sorted(set(preds[bad].tolist()))
            raise ValueError(f"predictions must be 0..{N_CLASSES - 1} on labelled rows, got {got}")
        preds, refs, conds = preds[keep], refs[keep], conds[keep]

        results = summarise(confusion(refs, preds))
        present = set(conds.tolist())
        order = [c for c in CONDITION_ORDER if c in present] + sorted(present - set(CONDITION_ORDER))
        for c in order:
            m = conds == c
            for key, value in summarise(confusion(refs[m], preds[m])).items():
                results[f"{key}_{c}"] = value
        results["n_missing"] = int((~keep).sum())

        if parse_failures is None:
            results.update(parse_failure_rate=None, n_parse_failures=None, n_answers=None)
        else:
            flags = np.asarray(parse_failures, dtype=bool).reshape(-1)
            results["n_answers"] = int(flags.size)
            results["n_parse_failures"] = int(flags.sum())
            results["parse_failure_rate"] = float(flags.mean()) if flags.size else None
        return results
