"""The competition's submission CSV, `row_id,normal_mild,moderate,severe` with 25 rows per study: what
`hubkit predict` writes and `hubkit evaluate` writes as predictions.csv (one writer, so the two files agree).

    >>> from hubkit.inference.submission import study_rows
    >>> from hubkit.schema import LABEL_COLUMNS
    >>> rows = study_rows("42", {c: [0.5, 0.25, 0.25] for c in LABEL_COLUMNS})
    >>> rows[0]
    ['42_spinal_canal_stenosis_l1_l2', '0.5', '0.25', '0.25']

Probabilities are normalised per row, clipped at `SUBMISSION_EPS` (the scorer's own clip, so clipping here changes
nothing it would not) and renormalised; values are written with `repr`, so reading a file back gives the floats
that were written.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hubkit.schema import LABEL_COLUMNS, SUBMISSION_COLUMNS

SUBMISSION_EPS = 1e-15  # same clip as the scorer
HEADER: tuple[str, ...] = ("row_id", *SUBMISSION_COLUMNS)

__all__ = ["SUBMISSION_EPS", "HEADER", "normalise_probs", "study_rows", "write_rows", "write_submission_csv",
           "read_submission"]


def normalise_probs(p: Sequence[float], where: str) -> list[float]:
    """`p` divided by its sum; ValueError naming `where` unless it is 3 finite values >= 0 with a positive sum."""
    arr = np.asarray(p, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise ValueError(f"{where}: probabilities must be 3 finite values >= 0 with a positive sum, got {p!r}")
    return (arr / arr.sum()).tolist()


def study_rows(study_id: int | str, probs: Mapping[str, Sequence[float]]) -> list[list[str]]:
    """The 25 CSV rows of one study (`[row_id, p_normal_mild, p_moderate, p_severe]` as text), in official column
    order, from `{RSNA label column: [3 probabilities]}`. Raises ValueError naming a missing or unknown column."""
    unknown = sorted(set(probs) - set(LABEL_COLUMNS))
    if unknown:
        raise ValueError(f"study {study_id}: {unknown[0]!r} is not an RSNA label column")
    missing = [c for c in LABEL_COLUMNS if c not in probs]
    if missing:
        raise ValueError(f"study {study_id}: {len(missing)} of 25 rows missing, e.g. {missing[0]}")
    out = []
    for c in LABEL_COLUMNS:
        p = np.clip(np.asarray(normalise_probs(probs[c], f"{study_id}_{c}")), SUBMISSION_EPS, 1.0)
        out.append([f"{study_id}_{c}", *(repr(float(x)) for x in p / p.sum())])
    return out


def write_rows(fh, rows: Sequence[Sequence[str]]) -> None:
    """Append CSV rows to an open text file (opened with newline=""), in the one dialect every writer here uses."""
    csv.writer(fh).writerows(rows)


def write_submission_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Kaggle format `row_id,normal_mild,moderate,severe`: 25 rows per study, studies in first-seen order.

    Each row needs `row_id` and `probs` (e.g. `hubkit.evaluation.metrics.study_rows`' rows).
    Raises ValueError unless every study has each of the 25 label columns exactly once.
    """
    by_study: dict[str, dict[str, Sequence[float]]] = {}
    for r in rows:
        study, column = str(r["row_id"]).split("_", 1)
        if column not in LABEL_COLUMNS:
            raise ValueError(f"{r['row_id']!r}: {column!r} is not an RSNA label column")
        cols = by_study.setdefault(study, {})
        if column in cols:
            raise ValueError(f"duplicate row {r['row_id']!r}")
        cols[column] = r["probs"]
    lines = [line for study, cols in by_study.items() for line in study_rows(study, cols)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        write_rows(fh, [HEADER, *lines])
    return path


def read_submission(path: str | os.PathLike) -> dict[str, list[list[str]]]:
    """{study_id: its 25 rows} of the complete studies of a submission file, in file order; a study cut short at
    the end (a run killed while writing) is left out, so it is predicted again.

    Raises:
        ValueError: the file is not a submission (header), or a study's rows are out of order or repeated.
    """
    path = Path(path)
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    if not table:
        return {}
    if tuple(table[0]) != HEADER:
        raise ValueError(f"{path}: not a submission file (header {','.join(table[0])[:60]!r}); delete it or choose "
                         "another --output")
    studies: dict[str, list[list[str]]] = {}
    body = table[1:]
    for i in range(0, len(body), len(LABEL_COLUMNS)):
        chunk = body[i:i + len(LABEL_COLUMNS)]
        study = chunk[0][0].split("_", 1)[0] if chunk and chunk[0] else ""
        want = [f"{study}_{c}" for c in LABEL_COLUMNS]
        complete = len(chunk) == len(LABEL_COLUMNS) and all(len(r) == len(HEADER) for r in chunk)
        if not complete and i + len(LABEL_COLUMNS) >= len(body):
            break  # the interrupted study at the end
        if not complete or [r[0] for r in chunk] != want or study in studies:
            raise ValueError(f"{path}: rows {i + 2}-{i + 1 + len(LABEL_COLUMNS)} are not one study's 25 rows in "
                             "order; delete the file or choose another --output")
        studies[study] = chunk
    return studies
