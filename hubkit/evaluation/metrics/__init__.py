"""Evaluation helpers: local `evaluate` modules, per-study rows, Kaggle submission CSV, confusion-matrix plots.

The two metric files next to this one are standalone `evaluate` modules (absolute imports only, no hubkit
imports) loaded by file path, fully offline:
- `lumbar_classification.py`: hard-label numbers (kappa, QWK, weighted accuracy, F1, recall, confusion matrices,
  the seed's hard-label RSNA proxy, parse-failure rate).
- `rsna_lumbar_metric.py`: the official RSNA 2024 score from probabilities.

The submission writer is the consumer's (`hubkit.inference.submission`, re-exported here): `hubkit predict` and
`hubkit evaluate` write the same format through it.

Typical use by the evaluate command::

    rows = [r for s in studies for r in study_rows(s.id, s.labels, probs=s.probs, preds=s.preds)]
    results = compute_all(rows, parse_failures=flags)
    write_submission_csv(out / "submission.csv", rows)
    pngs = plot_confusion_matrices(results, out / "figures")
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hubkit.inference.submission import SUBMISSION_EPS, normalise_probs, write_submission_csv
from hubkit.schema import CODES, CONDITION_TITLES, LABEL_COLUMNS, parse_column

METRIC_NAMES: tuple[str, ...] = ("lumbar_classification", "rsna_lumbar_metric")

__all__ = [
    "METRIC_NAMES",
    "metric_path",
    "load_metric",
    "study_rows",
    "compute_all",
    "write_submission_csv",
    "SUBMISSION_EPS",
    "plot_confusion_matrices",
]


def metric_path(name: str) -> str:
    """Absolute path of the local evaluate module `name` (e.g. "rsna_lumbar_metric")."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; known: {list(METRIC_NAMES)}")
    return str(files("hubkit.evaluation.metrics").joinpath(f"{name}.py"))


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` on the local module file, offline, results kept in memory (no cache arrow files)."""
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    import evaluate  # heavy import (datasets, pyarrow): only when needed

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(name), **kwargs)


def study_rows(
    study_id: int | str,
    labels: Mapping[str, int | None],
    probs: Mapping[str, Sequence[float]] | None = None,
    preds: Mapping[str, int] | None = None,
) -> list[dict]:
    """The 25 scoring rows of one study, in official column order.

    labels: {label_column: class index, or -1 / None / absent = missing}.
    probs:  {label_column: [p_normal_mild, p_moderate, p_severe]} (any positive scale; stored normalised).
    preds:  {label_column: hard class index}. Give probs, preds or both, covering all 25 columns: without preds
            the prediction is argmax(probs); without probs the probabilities are the one-hot of preds (then the
            official score is that of a hard-label submission, i.e. huge).
    Row keys: row_id, study_id, column, condition (short key), level, reference, prediction, probs.
    """
    if probs is None and preds is None:
        raise ValueError("give probs, preds or both")
    unknown = {k for m in (labels, probs or {}, preds or {}) for k in m} - set(LABEL_COLUMNS)
    if unknown:
        raise ValueError(f"unknown label columns: {sorted(unknown)}")
    rows = []
    for column in LABEL_COLUMNS:
        condition, level = parse_column(column)
        if (probs is not None and column not in probs) or (preds is not None and column not in preds):
            raise KeyError(f"study {study_id}: no prediction for {column}")
        p = normalise_probs(probs[column], column) if probs is not None else None
        if preds is not None:
            pred = int(preds[column])
            if pred not in range(len(CODES)):
                raise ValueError(f"study {study_id}: prediction {pred} for {column} is not 0..{len(CODES) - 1}")
        else:
            pred = int(np.argmax(p))
        if p is None:
            p = [1.0 if k == pred else 0.0 for k in range(len(CODES))]
        ref = labels.get(column)
        ref = -1 if ref is None or int(ref) < 0 else int(ref)
        rows.append(
            {
                "row_id": f"{study_id}_{column}",
                "study_id": str(study_id),
                "column": column,
                "condition": condition,
                "level": level,
                "reference": ref,
                "prediction": pred,
                "probs": p,
            }
        )
    return rows


def compute_all(rows: Sequence[Mapping[str, Any]], parse_failures: Sequence[bool] | None = None) -> dict:
    """Run both metric modules on rows from `study_rows`; one flat dict (confusion matrices as nested lists).

    parse_failures: one flag per generated answer (True = unparseable), for `parse_failure_rate`.
    """
    if not rows:
        raise ValueError("no rows to score")
    refs = [int(r["reference"]) for r in rows]
    cls = load_metric("lumbar_classification").compute(
        predictions=[int(r["prediction"]) for r in rows],
        references=refs,
        conditions=[str(r["condition"]) for r in rows],
        parse_failures=None if parse_failures is None else [bool(f) for f in parse_failures],
    )
    rsna = load_metric("rsna_lumbar_metric").compute(
        row_ids=[str(r["row_id"]) for r in rows],
        predictions=[[float(x) for x in r["probs"]] for r in rows],
        references=refs,
    )
    clash = set(cls) & set(rsna)
    if clash:
        raise RuntimeError(f"metric modules return overlapping keys: {sorted(clash)}")
    return {**cls, **rsna}


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def plot_confusion_matrices(results: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Confusion-matrix PNGs (overall + each condition present) for the model card; returns the paths.

    Reads `confusion_matrix[_{cond}]`, `kappa[_{cond}]`, `qwk[_{cond}]`, `n[_{cond}]` from `compute_all` results.
    Files: confusion_matrix.png, confusion_matrix_{cond}.png. Rows = true, columns = predicted, cells = counts,
    shading = row-normalised fraction (recall). Uses the Agg canvas directly (no pyplot, no global backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = [("", "All conditions")] + [
        (f"_{c}", title) for c, title in CONDITION_TITLES.items() if f"confusion_matrix_{c}" in results
    ]
    paths = []
    for suffix, title in panels:
        cm = np.asarray(results[f"confusion_matrix{suffix}"], dtype=np.int64)
        frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig = Figure(figsize=(4.2, 3.9), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=11,
                        color="white" if frac[i, j] > 0.5 else "black")
        ticks = range(len(CODES))
        ax.set_xticks(ticks, labels=list(CODES))
        ax.set_yticks(ticks, labels=list(CODES))
        ax.set_xlabel("Predicted (N = Normal/Mild, M = Moderate, S = Severe)", fontsize=8)
        ax.set_ylabel("True")
        ax.set_title(
            f"{title}\nκ = {_fmt(results.get(f'kappa{suffix}'))}, QWK = {_fmt(results.get(f'qwk{suffix}'))},"
            f" n = {results.get(f'n{suffix}', int(cm.sum()))}",
            fontsize=9,
        )
        fig.tight_layout()
        path = out / f"confusion_matrix{suffix}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
