"""The answer contract: conditions, levels, severity codes, view names, the slice picker, the seed's prompt and the
compact JSON answer.

Everything that must be identical at build, train, evaluation and inference time lives here.
"""

from __future__ import annotations

import enum
import json
from typing import Mapping, Sequence

# Short condition keys (answer JSON) -> RSNA train.csv column prefix / coordinates `condition` text.
CONDITIONS: tuple[str, ...] = ("canal", "lf", "rf", "ls", "rs")
CONDITION_COLUMNS: dict[str, str] = {
    "canal": "spinal_canal_stenosis",
    "lf": "left_neural_foraminal_narrowing",
    "rf": "right_neural_foraminal_narrowing",
    "ls": "left_subarticular_stenosis",
    "rs": "right_subarticular_stenosis",
}
CONDITION_TITLES: dict[str, str] = {
    "canal": "Spinal Canal Stenosis",
    "lf": "Left Neural Foraminal Narrowing",
    "rf": "Right Neural Foraminal Narrowing",
    "ls": "Left Subarticular Stenosis",
    "rs": "Right Subarticular Stenosis",
}
# The official metric's condition groups (the first of these words in a row id): left and right sides pool into one
# group each, so each group weighs as much in the score as the spinal canal's five rows.
GROUPS: tuple[str, ...] = ("spinal", "foraminal", "subarticular")
CONDITION_GROUP: dict[str, str] = {"canal": "spinal", "lf": "foraminal", "rf": "foraminal", "ls": "subarticular",
                                   "rs": "subarticular"}
# Answer keys (compact) -> RSNA `level` text / column suffix.
LEVELS: tuple[str, ...] = ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1")
LEVEL_TITLES: dict[str, str] = {lv: f"{lv[:2]}/{lv[2:]}" for lv in LEVELS}  # "L1/L2"
LEVEL_SUFFIX: dict[str, str] = {lv: f"{lv[:2].lower()}_{lv[2:].lower()}" for lv in LEVELS}  # "l1_l2"

# Severity codes in class-index order (index = RSNA weight exponent: weight = 2**index).
CODES: tuple[str, ...] = ("N", "M", "S")
SEVERITY_NAMES: tuple[str, ...] = ("Normal/Mild", "Moderate", "Severe")
SUBMISSION_COLUMNS: tuple[str, ...] = ("normal_mild", "moderate", "severe")

# The 25 label columns of train.csv, in the official column order (condition-major).
LABEL_COLUMNS: tuple[str, ...] = tuple(
    f"{CONDITION_COLUMNS[c]}_{LEVEL_SUFFIX[lv]}" for c in CONDITIONS for lv in LEVELS
)
# (level, condition) for each of the 25 answer slots, in answer (level-major) order.
ANSWER_FIELDS: tuple[tuple[str, str], ...] = tuple((lv, c) for lv in LEVELS for c in CONDITIONS)


def label_column(condition: str, level: str) -> str:
    """`label_column("lf", "L4L5")` -> `"left_neural_foraminal_narrowing_l4_l5"`."""
    return f"{CONDITION_COLUMNS[condition]}_{LEVEL_SUFFIX[level]}"


def parse_column(column: str) -> tuple[str, str]:
    """Inverse of `label_column`; raises ValueError naming the column."""
    for c in CONDITIONS:
        for lv in LEVELS:
            if label_column(c, lv) == column:
                return c, lv
    raise ValueError(f"{column!r} is not one of the 25 RSNA label columns")


SEVERITY_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(SEVERITY_NAMES)}


class Picker(str, enum.Enum):
    """The built-in picker modes: how a study becomes images (their slots: `hubkit.slots`, which may register more).
    """

    COORDS = "coords"  # whole slices from train_label_coordinates.csv: the slices the annotators marked
    GEOMETRY = "geometry"  # whole slices from DICOM geometry alone: what the pipeline can always do
    CROPS = "crops"  # per-level crops around each graded structure, at coordinates (`hubkit.dataset_builder.crops`)

    def __str__(self) -> str:
        return self.value


class SeriesKind(str, enum.Enum):
    """The three RSNA 2024 series types, as train_series_descriptions.csv spells them."""

    SAG_T2 = "Sagittal T2/STIR"
    SAG_T1 = "Sagittal T1"
    AX_T2 = "Axial T2"

    def __str__(self) -> str:
        return self.value


# The reference recipe's schema block, verbatim (its card's "How to use"): training and inference prompts use it.
SCHEMA_BLOCK = (
    "Use a compact JSON object. Keys are spinal levels (L1L2..L5S1); each value "
    "is an object whose keys are conditions (canal=spinal canal stenosis, lf=left "
    "neural foraminal narrowing, rf=right neural foraminal narrowing, ls=left "
    "subarticular stenosis, rs=right subarticular stenosis) and whose values are "
    'severity codes ("N"=Normal/Mild, "M"=Moderate, "S"=Severe).'
)


def build_prompt(views: Sequence[str]) -> str:
    """The reference recipe's exact training prompt for images described by `views` (one description per image)."""
    return (
        f"You are provided with {len(views)} lumbar spine MRI image(s) ({', '.join(views)}). "
        "Classify all degenerative conditions at each spinal level from L1/L2 to L5/S1.\n\n"
        f"{SCHEMA_BLOCK}"
    )


def labels_to_codes(labels: Mapping[str, int | None]) -> dict[str, dict[str, str | None]]:
    """Map {label_column: class index or None/-1} to {level: {condition: code or None}}."""
    out: dict[str, dict[str, str | None]] = {}
    for lv in LEVELS:
        out[lv] = {}
        for c in CONDITIONS:
            v = labels.get(label_column(c, lv))
            out[lv][c] = None if v is None or v < 0 else CODES[v]
    return out


def build_target(labels: Mapping[str, int | None], missing: str = "N") -> str:
    """The compact answer JSON (no spaces) for one study.

    Missing labels are written as `missing` (the seed's behaviour: "N") because the answer must always have all
    25 fields; the dataset keeps them missing in the ClassLabel columns so metrics drop them.
    """
    codes = labels_to_codes(labels)
    return answer_text([codes[lv][c] or missing for lv, c in ANSWER_FIELDS])


def parse_target(text: str) -> dict[str, dict[str, str]]:
    """Parse and validate a compact answer; raises ValueError saying what is wrong."""
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError(f"answer repeats key(s) {sorted({k for k in keys if keys.count(k) > 1})}")
        return dict(pairs)

    obj = json.loads(text, object_pairs_hook=no_duplicates)  # json.loads alone keeps the last duplicate silently
    if not isinstance(obj, dict) or list(obj) != list(LEVELS):
        raise ValueError(f"answer levels must be {list(LEVELS)}, got {list(obj) if isinstance(obj, dict) else obj!r}")
    for lv in LEVELS:
        if not isinstance(obj[lv], dict) or list(obj[lv]) != list(CONDITIONS):
            raise ValueError(f"answer {lv} must have keys {list(CONDITIONS)}")
        for c in CONDITIONS:
            if obj[lv][c] not in CODES:
                raise ValueError(f"answer {lv}.{c}={obj[lv][c]!r} is not one of {list(CODES)}")
    return obj


def answer_template() -> list[str]:
    """The fixed pieces of the compact answer around the 25 codes: len 26, answer = p0 + c0 + p1 + ... + c24 + p25."""
    pieces: list[str] = []
    cur = "{"
    for i, lv in enumerate(LEVELS):
        cur += ("," if i else "") + f'"{lv}":{{'
        for j, c in enumerate(CONDITIONS):
            cur += ("," if j else "") + f'"{c}":"'
            pieces.append(cur)
            cur = '"'
        cur += "}"
    cur += "}"
    pieces.append(cur)
    return pieces


# The fixed text around the 25 codes, and their number: answer = PIECES[0] + code 0 + PIECES[1] + ... + PIECES[25].
PIECES: tuple[str, ...] = tuple(answer_template())
N_FIELDS = len(ANSWER_FIELDS)


def answer_text(codes: Sequence[str]) -> str:
    """The compact answer for 25 codes in answer order (level-major), e.g. `answer_text("N" * 25)`.

    The one writer of the answer: the dataset's targets, mirrored training targets and decoded answers all come
    from here, so they are identical by construction.
    """
    if len(codes) != N_FIELDS or any(c not in CODES for c in codes):
        raise ValueError(f"need {N_FIELDS} codes from {CODES}, got {codes!r}")
    return "".join(p + c for p, c in zip(PIECES, codes)) + PIECES[-1]
