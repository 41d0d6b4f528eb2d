"""Calibrated probabilities: the run's small `calibration.json` (read and written by `hubkit.run_record`), applied to
`{column: [pN, pM, pS]}`.

`hubkit calibrate` fits it on a validation split's predictions to minimise the official RSNA score
(`hubkit.evaluation.calibration`); the pipeline applies it by default when the model folder or Hub repo has one
(call parameter `calibrate=False` turns it off), and so do `hubkit evaluate` and `hubkit predict`.

    >>> from hubkit.inference.calibration import Calibration
    >>> from hubkit.schema import LABEL_COLUMNS
    >>> cal = Calibration(t_spinal=2.0)
    >>> out = cal.apply({c: [0.64, 0.32, 0.04] for c in LABEL_COLUMNS})
    >>> [round(x, 3) for x in out["spinal_canal_stenosis_l1_l2"]]            # p ** (1 / 2), renormalised
    [0.511, 0.361, 0.128]
    >>> [round(x, 3) for x in out["left_neural_foraminal_narrowing_l1_l2"]]  # foraminal temperature 1: unchanged
    [0.64, 0.32, 0.04]

What it changes, and what it does not: each group's temperature T scales the log-probabilities by 1/T, which
never moves a row's most likely grade; the severe-spinal scale multiplies P(severe) of spinal rows before they are
renormalised, which can (a spinal row whose Severe was close to its top grade). The answer stays the model's own:
the pipeline's `json` and `labels` (and `hubkit evaluate`'s κ) are the decoder's argmax of the raw probabilities;
only the probabilities (`probs`, what the submission and the official score use) are calibrated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from hubkit.schema import CONDITION_GROUP, GROUPS, LABEL_COLUMNS, parse_column

SCHEMA_VERSION = 1
# Group of each of the 25 label columns, in official column order (the order of the arrays below).
COLUMN_GROUPS: tuple[str, ...] = tuple(CONDITION_GROUP[parse_column(c)[0]] for c in LABEL_COLUMNS)

__all__ = ["SCHEMA_VERSION", "Calibration"]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Per-group temperatures and the severe-spinal scale, plus where they were fitted (for the card)."""

    # Bumped when a field's meaning changes: a reader refuses a version it does not know instead of misapplying it.
    schema_version: int = SCHEMA_VERSION
    # One temperature per official group (log-probabilities divided by it, then renormalised): the group losses are
    # averaged separately, and a model is often over-confident on one group and not on another. 1 = unchanged.
    t_spinal: float = 1.0
    t_foraminal: float = 1.0
    t_subarticular: float = 1.0
    # Multiplies P(severe) of every spinal row after its temperature, then the row is renormalised: the
    # any-severe-spinal term scores the largest P(severe) over a study's five levels, which a temperature alone
    # cannot tune apart from the spinal rows' own loss (top teams scaled this term too). 1 = unchanged.
    severe_spinal_scale: float = 1.0
    # Provenance, shown by the card and by `hubkit calibrate`, never used to apply: the split and dataset the
    # parameters were fitted on, its number of studies, and its official score before and after.
    split: str | None = None
    dataset: str | None = None
    n_studies: int = 0
    score_raw: float | None = None
    score_calibrated: float | None = None

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"calibration schema_version {self.schema_version} is not {SCHEMA_VERSION}; refit it "
                             "with this hubkit (`hubkit calibrate RUN --eval EVAL`)")
        for name in ("t_spinal", "t_foraminal", "t_subarticular", "severe_spinal_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"calibration {name} must be a finite number > 0, got {v!r}")

    @property
    def temperatures(self) -> dict[str, float]:
        return {g: float(getattr(self, f"t_{g}")) for g in GROUPS}

    @property
    def is_identity(self) -> bool:
        return all(t == 1.0 for t in self.temperatures.values()) and self.severe_spinal_scale == 1.0

    def apply_array(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated copy of an array [..., 25, 3] (columns in official order, rows summing to anything > 0)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape[-2:] != (len(LABEL_COLUMNS), 3):
            raise ValueError(f"expected probabilities of shape [..., {len(LABEL_COLUMNS)}, 3], got {p.shape}")
        inv_t = np.array([1.0 / self.temperatures[g] for g in COLUMN_GROUPS])
        bias = np.zeros((len(LABEL_COLUMNS), 3))
        bias[[g == "spinal" for g in COLUMN_GROUPS], 2] = math.log(self.severe_spinal_scale)
        with np.errstate(divide="ignore"):  # an exact 0 stays 0 (log -inf, exp 0)
            logits = np.log(p / p.sum(-1, keepdims=True)) * inv_t[:, None] + bias
        logits -= logits.max(-1, keepdims=True)
        out = np.exp(logits)
        return out / out.sum(-1, keepdims=True)

    def apply(self, probs: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
        """`{RSNA label column: [pN, pM, pS]}` (all 25) -> the same shape, calibrated; ValueError naming a gap."""
        missing = [c for c in LABEL_COLUMNS if c not in probs]
        if missing:
            raise ValueError(f"calibration needs all 25 label columns; {missing[0]} is missing")
        out = self.apply_array(np.array([probs[c] for c in LABEL_COLUMNS], dtype=np.float64))
        return {c: out[i].tolist() for i, c in enumerate(LABEL_COLUMNS)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "calibration") -> "Calibration":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; refit it with this hubkit (`hubkit calibrate`)")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None
