"""A crops model's DICOM study without the caller's points: its shipped localiser finds them (`hubkit.localizer`),
and a level it cannot place gets the class priors for its five fields, named in a warning and in the output, never
graded from empty crops as if they were seen.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Mapping


class UnplacedLevelWarning(UserWarning):
    """The localiser could not place a level of a study: that level's fields hold the class priors."""


@functools.lru_cache(maxsize=4)
def _localizer(folder: str):
    from hubkit.localizer.locate import Localizer

    return Localizer(folder)


def localize(study_dir: Path, descriptions: Mapping[str, str] | None, folder: str) -> tuple[list[dict], list[str],
                                                                                              list[str], tuple]:
    """(points in train_label_coordinates.csv's typed form, the localiser's notes, the levels it placed nothing
    at, the series it found: `find_series`' answer, which `load_study(found=...)` then crops from without reading
    the study's headers again) for one study folder."""
    from hubkit.dataset_builder.study import find_series
    from hubkit.schema import LEVEL_TITLES, LEVELS

    found = find_series(study_dir, descriptions, by_uid=not descriptions)
    rows, notes, _ = _localizer(str(folder)).locate(found[0])
    placed = {r["level"] for r in rows}
    return rows, notes, [lv for lv in LEVELS if LEVEL_TITLES[lv] not in placed], found


def with_priors(out: dict[str, Any], unplaced: list[str], label_counts: dict | None) -> dict[str, Any]:
    """`out` (the pipeline's answer for one study) with the fields of every level in `unplaced` set to the class
    priors (`predict.class_priors`: label, probabilities, the JSON), and a warning naming the levels."""
    if not unplaced:
        return out
    from hubkit import schema

    from .predict import class_priors

    priors = class_priors(label_counts)
    titles = ", ".join(schema.LEVEL_TITLES[lv] for lv in unplaced)
    warnings.warn(f"study {out.get('study_id')}: the localiser could not place {titles}; those levels' fields hold "
                  "the class priors, not a reading of the images (see the output's 'unplaced_levels')",
                  UnplacedLevelWarning, stacklevel=3)
    probs = dict(out["probs"])
    for lv in unplaced:
        for c in schema.CONDITIONS:
            p = list(priors[schema.label_column(c, lv)])
            probs[schema.label_column(c, lv)] = p
            code = schema.CODES[max(range(3), key=p.__getitem__)]
            out["levels"][lv][c] = {"label": code, "severity": schema.SEVERITY_NAMES[schema.CODES.index(code)],
                                    "probs": dict(zip(schema.CODES, p))}
    codes = [out["levels"][lv][c]["label"] for lv, c in schema.ANSWER_FIELDS]
    return {**out, "probs": probs, "json": schema.answer_text(codes), "unplaced_levels": list(unplaced)}
