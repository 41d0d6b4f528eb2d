"""`hubkit calibrate`: fit the run's calibration.json on a validation split's predictions to minimise the official
RSNA score; applying it is inference's job (`hubkit.inference.calibration`).

    hubkit evaluate --model runs/a --dataset me/lumbar-ds --split validation --output runs/a/eval
    hubkit calibrate runs/a --eval runs/a/eval          # -> runs/a/calibration.json

    >>> import numpy as np
    >>> from hubkit.evaluation.calibration import fit_calibration
    >>> rng = np.random.default_rng(0)
    >>> refs = rng.choice(3, size=(40, 25), p=[0.8, 0.15, 0.05])
    >>> probs = np.where(np.eye(3)[refs] == 1, 0.98, 0.01)       # over-confident: mostly right, always sure
    >>> probs[rng.random((40, 25)) < 0.1] = [0.01, 0.01, 0.98]
    >>> cal = fit_calibration(probs, refs)
    >>> cal.score_calibrated < cal.score_raw and cal.t_foraminal > 1   # softened
    True

What is fitted: a temperature per official group (spinal / foraminal / subarticular) and a scale on the spinal
rows' P(severe) (see `Calibration`). The search is deterministic and numpy only: coordinate descent over the four
parameters in log space, each step a grid over the bounds (which contains the identity) refined by a golden-section
search, a change kept only when it lowers the score, so the fitted score is never above the raw one. The objective is
`official_score`, a vectorised restatement of `hubkit/evaluation/metrics/rsna_lumbar_metric.py` (a test holds the
two equal); the raw and calibrated scores written to the file come from that module itself.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from hubkit import schema
from hubkit.eval_record import predictions_file, read_eval
from hubkit.inference.calibration import COLUMN_GROUPS, Calibration
from hubkit.run_record import check_finished, write_calibration

EPS = 1e-15  # the scorer's clip (rsna_lumbar_metric.EPS: that module loads datasets and evaluate on import)
# Each parameter stays in [1/4, 4]: wide enough for any model's over- or under-confidence, narrow enough that a
# small validation split cannot push a parameter to an extreme that only fits its few studies.
BOUNDS = (math.log(0.25), math.log(4.0))
PARAMS = ("t_spinal", "t_foraminal", "t_subarticular", "severe_spinal_scale")
_GRID = 17  # odd: the grid's middle point is the identity (log 1 = 0)
_GOLDEN_STEPS = 40
_ROUNDS = 6

__all__ = ["official_score", "fit_calibration", "load_predictions", "calibrate_run"]


def official_score(probs: np.ndarray, refs: np.ndarray) -> float:
    """The official RSNA 2024 score of arrays: probs [studies, 25, 3], refs [studies, 25] (-1 = missing), columns
    in official order. Raises ValueError when a group or the any-severe term has no labelled row."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(refs, dtype=np.int64)
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1.0 - EPS)
    labelled = y >= 0
    w = np.where(labelled, 2.0 ** np.clip(y, 0, None), 0.0)
    log_true = np.log(np.take_along_axis(p, np.clip(y, 0, None)[..., None], -1)[..., 0])
    groups = np.array(COLUMN_GROUPS)
    losses = []
    for g in schema.GROUPS:
        m = labelled & (groups == g)[None, :]
        if not m.any():
            raise ValueError(f"no labelled {g} rows: the official score is undefined")
        losses.append(float(-(w * log_true)[m].sum() / w[m].sum()))
    spinal = labelled & (groups == "spinal")[None, :]
    has = spinal.any(1)
    y_s = (spinal & (y == 2)).any(1)[has]
    w_s = np.where(spinal, w, 0.0).max(1)[has]
    q_s = np.where(spinal, p[..., 2], -np.inf).max(1)[has]
    losses.append(float(-(w_s * np.where(y_s, np.log(q_s), np.log(1.0 - q_s))).sum() / w_s.sum()))
    return float(np.mean(losses))


def _calibration(x: np.ndarray, **provenance) -> Calibration:
    return Calibration(**{k: float(math.exp(v)) for k, v in zip(PARAMS, x)}, **provenance)


def _minimise_1d(f, lo: float, hi: float, x0: float, f0: float) -> tuple[float, float]:
    """Best point of f on [lo, hi]: a grid refined by golden section around its best point; returns (x0, f0)
    unless a point scores strictly lower than f0 (the current parameter and its score)."""
    grid = np.linspace(lo, hi, _GRID)
    values = [f(x) for x in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, _GRID - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(_GOLDEN_STEPS):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    best = min([(values[i], grid[i]), (fc, c), (fd, d)])
    return (best[1], best[0]) if best[0] < f0 else (x0, f0)


def fit_calibration(probs: np.ndarray, refs: np.ndarray, *, split: str | None = None,
                    dataset: str | None = None) -> Calibration:
    """The temperatures and severe-spinal scale that minimise the official score of (probs, refs).

    Args:
        probs: [studies, 25, 3] raw model probabilities, columns in `schema.LABEL_COLUMNS` order.
        refs: [studies, 25] true grades 0/1/2, -1 = missing.
        split, dataset: where they come from (stored in the result, for the card).

    Raises:
        ValueError: shapes differ, or a group has no labelled row (the score is undefined).
    """
    from hubkit.evaluation.metrics.rsna_lumbar_metric import rsna_score

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(refs, dtype=np.int64)
    if p.ndim != 3 or p.shape[1:] != (len(schema.LABEL_COLUMNS), 3) or y.shape != p.shape[:2]:
        raise ValueError(f"expected probs [studies, 25, 3] and refs [studies, 25], got {p.shape} and {y.shape}")
    x = np.zeros(len(PARAMS))

    def score_at(vec: np.ndarray) -> float:
        return official_score(_calibration(vec).apply_array(p), y)

    best = score_at(x)
    for _ in range(_ROUNDS):
        before = best
        for k in range(len(PARAMS)):
            def f(v, k=k):
                trial = x.copy()
                trial[k] = v
                return score_at(trial)

            x[k], best = _minimise_1d(f, *BOUNDS, x[k], best)
        if before - best < 1e-9:
            break

    def official(arr: np.ndarray) -> float:
        ids = [f"{s}_{c}" for s in range(len(y)) for c in schema.LABEL_COLUMNS]
        return rsna_score(ids, arr.reshape(-1, 3), y.reshape(-1))["rsna_score"]

    fitted = _calibration(x)
    return _calibration(x, split=split, dataset=dataset, n_studies=int(len(y)), score_raw=official(p),
                        score_calibrated=official(fitted.apply_array(p)))


def load_predictions(eval_dir: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(study ids, raw probs [studies, 25, 3], refs [studies, 25]) from the predictions.jsonl `hubkit evaluate`
    wrote (its `probs` are always the model's raw probabilities).

    Raises:
        FileNotFoundError: no predictions.jsonl in the folder.
        ValueError: a line lacks probabilities or references.
    """
    path = predictions_file(eval_dir, "finetuned", "jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `hubkit evaluate --split validation --output {eval_dir}` "
                                "first")
    ids, probs, refs = [], [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        try:
            probs.append([rec["probs"][c] for c in schema.LABEL_COLUMNS])
            codes = rec["references"]
            refs.append([-1 if codes[lv][c] is None else schema.CODES.index(codes[lv][c])
                         for c in schema.CONDITIONS for lv in schema.LEVELS])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: no probabilities/references for every label column ({e}); re-run "
                             "`hubkit evaluate`") from None
        ids.append(str(rec.get("study_id")))
    if not ids:
        raise ValueError(f"{path}: no predictions")
    return ids, np.asarray(probs, dtype=np.float64), np.asarray(refs, dtype=np.int64)


def calibrate_run(run_dir: str | os.PathLike, eval_dir: str | os.PathLike, push: str | None = None) -> Calibration:
    """Fit on EVAL_DIR's predictions (a `hubkit evaluate` folder of RUN_DIR's model) and write RUN_DIR's
    calibration; with `push`, publish it with the card it changes to that model repo, in one commit.

    Raises:
        FileNotFoundError: RUN_DIR is not a finished run folder, or EVAL_DIR has no predictions.
        ValueError: the predictions cannot be scored (see `load_predictions`, `fit_calibration`).
        HubError: `push` cannot be published (checked before anything is fitted).
    """
    run = Path(run_dir)
    check_finished(run)
    if push:
        from hubkit.publish import check

        check(push, "model")
    _, probs, refs = load_predictions(eval_dir)
    record = read_eval(eval_dir)
    split = record.split if record is not None else None
    if split == "train":
        warnings.warn(f"{eval_dir}: fitting on the train split's predictions; fit on validation predictions so the "
                      "temperatures reflect unseen studies", stacklevel=2)
    cal = fit_calibration(probs, refs, split=split, dataset=record.dataset if record is not None else None)
    write_calibration(run, cal)
    if push:
        from hubkit.publish import push_run_folder

        push_run_folder(run, push, files="calibration")
    return cal
