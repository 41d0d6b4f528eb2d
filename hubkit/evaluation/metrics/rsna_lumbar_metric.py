"""The official RSNA 2024 lumbar spine metric, re-implemented with numpy (a local `evaluate` module).

Follows https://www.kaggle.com/code/metric/rsna-lumbar-metric-71549 (v10) as written up in
the competition's scorer (restated in its docstring below). Lower is better.

Inputs, one element per submission row:
- `row_ids`: f"{study_id}_{label_column}", e.g. "4003253_spinal_canal_stenosis_l1_l2".
- `predictions`: [P(normal_mild), P(moderate), P(severe)]; finite and >= 0 (the official QC), any positive scale.
- `references`: true class index 0/1/2, or -1 when the label is missing.

Computation:
1. Rows whose reference is -1 are dropped (the replicas' `solution.dropna()`); counted in `rsna_n_missing`.
2. Each prediction row is divided by its sum, then clipped to [eps, 1 - eps] with eps = 1e-15 (the historical
   sklearn `log_loss` eps; no renormalisation after the clip, which moves a sum by at most 2e-15). Doing this
   here keeps the result independent of the scikit-learn version (newer sklearn clips at float64 machine eps
   and no longer renormalises).
3. Sample weight = 2 ** true class: Normal/Mild 1, Moderate 2, Severe 4.
4. Group = the first of "spinal", "foraminal", "subarticular" contained in the row id, so left and right
   foraminal rows are pooled into ONE group, and likewise subarticular. Per group:
   L_g = -sum_i w_i * ln p_i[y_i] / sum_i w_i.
5. any_severe_spinal, per study over its LABELLED spinal rows (the official code takes the study maxima over the
   solution's rows after NaN rows are dropped, and the submission is aligned to those rows):
   label y_s = 1 if any of them is Severe, weight w_s = max of their sample weights (4 / 2 / 1),
   prediction q_s = max of their (normalised, clipped) P(severe). Binary weighted log loss over studies:
   -sum_s w_s * (y_s ln q_s + (1 - y_s) ln(1 - q_s)) / sum_s w_s. Studies without labelled spinal rows are left out.
6. rsna_score = mean of the four losses (np.average with weights [1, 1, 1, any_severe_scalar = 1]).

Returned keys: rsna_score, rsna_spinal, rsna_foraminal, rsna_subarticular, rsna_any_severe_spinal (None when
the part has no labelled rows; rsna_score is None when any part is None), rsna_n_rows (labelled rows scored),
rsna_n_missing, rsna_n_studies (studies in the any-severe term), rsna_eps.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

GROUPS = ("spinal", "foraminal", "subarticular")
N_CLASSES = 3
EPS = 1e-15

_DESCRIPTION = (
    "Official RSNA 2024 lumbar spine metric: weighted (1/2/4) log loss per condition group "
    "(spinal, foraminal, subarticular) plus any_severe_spinal, averaged."
)
_INPUTS = """
Args:
    row_ids (list of str): f"{study_id}_{condition}_{level}", e.g. "4003253_spinal_canal_stenosis_l1_l2".
    predictions (list of [float, float, float]): P(normal_mild), P(moderate), P(severe); renormalised per row.
    references (list of int): true class 0/1/2, -1 = missing (dropped).
    eps (float, optional): clip for probabilities, default 1e-15.
Returns:
    dict: rsna_score, rsna_spinal, rsna_foraminal, rsna_subarticular, rsna_any_severe_spinal, rsna_n_rows,
    rsna_n_missing, rsna_n_studies, rsna_eps.
"""


def group_of(row_id: str) -> str:
    """The official grouping: first of spinal / foraminal / subarticular contained in the row id."""
    for g in GROUPS:
        if g in row_id:
            return g
    raise ValueError(f"row id {row_id!r} contains none of {GROUPS}")


def weighted_log_loss(p_true: np.ndarray, weights: np.ndarray) -> float | None:
    """-sum w ln p / sum w, where p_true is the (clipped) probability given to the true class."""
    if p_true.size == 0:
        return None
    return float(-(weights * np.log(p_true)).sum() / weights.sum())


def rsna_score(row_ids, predictions, references, eps: float = EPS) -> dict:
    ids = [str(r) for r in row_ids]
    probs = np.asarray(predictions, dtype=np.float64)
    refs = np.asarray(references, dtype=np.int64).reshape(-1)
    if probs.ndim != 2 or probs.shape[1] != N_CLASSES:
        raise ValueError(f"predictions must have shape (n, {N_CLASSES}), got {probs.shape}")
    if not (len(ids) == len(probs) == len(refs)):
        raise ValueError(f"lengths differ: {len(ids)} row ids, {len(probs)} predictions, {len(refs)} references")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate row ids")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("predictions must be finite and >= 0 (official QC)")
    if np.any((refs < -1) | (refs >= N_CLASSES)):
        raise ValueError(f"references must be -1 (missing) or 0..{N_CLASSES - 1}")
    keep = refs >= 0
    ids = [r for r, k in zip(ids, keep) if k]
    probs, refs = probs[keep], refs[keep]
    sums = probs.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError("a prediction row sums to 0; it cannot be normalised")
    probs = np.clip(probs / sums, eps, 1.0 - eps)
    weights = 2.0 ** refs
    groups = np.array([group_of(r) for r in ids], dtype=object)
    studies = np.array([r.split("_", 1)[0] for r in ids], dtype=object)
    p_true = probs[np.arange(len(refs)), refs]

    out: dict = {}
    for g in GROUPS:
        m = groups == g
        out[f"rsna_{g}"] = weighted_log_loss(p_true[m], weights[m])

    spinal = groups == "spinal"
    study_ids = list(dict.fromkeys(studies[spinal].tolist()))
    y_s, w_s, q_s = [], [], []
    for s in study_ids:
        m = spinal & (studies == s)
        y_s.append(float(np.any(refs[m] == 2)))
        w_s.append(weights[m].max())
        q_s.append(probs[m, 2].max())
    y_s, w_s, q_s = np.array(y_s), np.array(w_s), np.array(q_s)
    if len(study_ids):
        out["rsna_any_severe_spinal"] = weighted_log_loss(np.where(y_s == 1, q_s, 1.0 - q_s), w_s)
    else:
        out["rsna_any_severe_spinal"] = None

    parts = [out[f"rsna_{g}"] for g in GROUPS] + [out["rsna_any_severe_spinal"]]
    any_severe_scalar = 1.0
    out["rsna_score"] = (
        None if any(p is None for p in parts) else float(np.average(parts, weights=[1, 1, 1, any_severe_scalar]))
    )
    out.update(rsna_n_rows=int(keep.sum()), rsna_n_missing=int((~keep).sum()), rsna_n_studies=len(study_ids),
               rsna_eps=eps)
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class RsnaLumbarMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            reference_urls=["https://www.kaggle.com/code/metric/rsna-lumbar-metric-71549"],
            features=datasets.Features(
                {
                    "row_ids": datasets.Value("string"),
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int32"),
                }
            ),
        )

    def _compute(self, row_ids, predictions, references, eps: float = EPS):
        return rsna_score(row_ids, predictions, references, eps=eps)
