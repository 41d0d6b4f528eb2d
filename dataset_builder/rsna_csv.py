"""Read and validate the three RSNA CSVs; every problem is a one-line error naming the file, row and fix."""

from __future__ import annotations

import csv
import functools
import math
import os
from collections import defaultdict
from pathlib import Path

from hubkit.schema import LABEL_COLUMNS, SEVERITY_TO_INDEX

LABELS_CSV = "train.csv"
SERIES_CSV = "train_series_descriptions.csv"
COORDS_CSV = "train_label_coordinates.csv"
SERIES_COLUMNS = ("study_id", "series_id", "series_description")
COORD_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")


class CsvError(ValueError):
    """An RSNA CSV is missing, lacks a column or holds a bad value."""


class RowProblems(list):
    """Collects per-row problems (bad or duplicate ids) instead of raising: each is {"file", "line", "reason"}.

    Pass one to the readers to skip such rows and go on (what `build-dataset` does, listing them in its report);
    without one the first problem raises `CsvError`.
    """


def _problem(problems: RowProblems | None, path: Path, line: int, reason: str) -> None:
    if problems is None:
        raise CsvError(f"{path}:{line}: {reason}")
    problems.append({"file": path.name, "line": line, "reason": reason})


def _read(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise CsvError(f"{path}: file not found; the data folder must hold the RSNA CSVs "
                       f"({LABELS_CSV}, {SERIES_CSV}, {COORDS_CSV})")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise CsvError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _number(value: str | None) -> str | None:
    v = (value or "").strip()
    return str(int(v)) if v.isdigit() else None


def read_labels(data_dir: str | Path, problems: RowProblems | None = None) -> dict[str, dict[str, int]]:
    """train.csv -> {study_id: {label column: class index, -1 = missing}} (validated).

    A row whose study_id is not a number is a problem; a study_id on several rows is a problem for every one of
    them (which labels are right cannot be told), so that study is left out entirely. A label value outside the
    three grades always raises: it means the file is not an RSNA train.csv.
    """
    path = Path(data_dir) / LABELS_CSV
    out: dict[str, dict[str, int]] = {}
    lines: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(_read(path, ("study_id",) + LABEL_COLUMNS), start=2):
        sid = _number(row["study_id"])
        if sid is None:
            _problem(problems, path, i, f"study_id {row['study_id']!r} is not a number; row skipped")
            continue
        lines[sid].append(i)
        if len(lines[sid]) > 1:
            _problem(problems, path, i, f"study_id {sid} also on line {lines[sid][0]}; keep one row per study "
                                        "(the study is skipped until then)")
            continue
        labels = {}
        for col in LABEL_COLUMNS:
            v = (row[col] or "").strip()
            if v == "" or v.lower() == "nan":
                labels[col] = -1
            elif v in SEVERITY_TO_INDEX:
                labels[col] = SEVERITY_TO_INDEX[v]
            else:
                raise CsvError(f"{path}:{i}: study {sid} column {col} has {v!r}; expected Normal/Mild, "
                               "Moderate, Severe or empty")
        out[sid] = labels
    for sid, at in lines.items():
        if len(at) > 1:
            out.pop(sid, None)
    return out


def read_descriptions(data_dir: str | Path, problems: RowProblems | None = None) -> dict[str, dict[str, str]]:
    """DATA_DIR/train_series_descriptions.csv -> {study_id: {series_id: description}}; bad ids are problems (row
    skipped). Any other CSV of that layout: `read_descriptions_csv`."""
    return _read_descriptions_file(Path(data_dir) / SERIES_CSV, problems)


def _read_descriptions_file(path: Path, problems: RowProblems | None = None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for i, row in enumerate(_read(path, SERIES_COLUMNS), start=2):
        sid, series = _number(row["study_id"]), _number(row["series_id"])
        if sid is None or series is None:
            bad = "study_id" if sid is None else "series_id"
            _problem(problems, path, i, f"{bad} {row[bad]!r} is not a number; row skipped")
            continue
        desc = (row["series_description"] or "").strip()
        if series in out[sid] and out[sid][series] != desc:
            _problem(problems, path, i, f"series {series} of study {sid} is listed again with another description "
                                        f"({desc!r}); the first one ({out[sid][series]!r}) is used")
            continue
        out[sid][series] = desc
    return dict(out)


def read_coordinates(data_dir: str | Path, required: bool = True,
                     problems: RowProblems | None = None) -> dict[str, list[dict]]:
    """train_label_coordinates.csv -> {study_id: [rows with typed values]}; {} if absent and not required.

    Rows with a non-numeric id, instance number or coordinate are problems (row skipped)."""
    path = Path(data_dir) / COORDS_CSV
    if not required and not path.is_file():
        return {}
    return _coordinates_file(path, problems)


def read_coordinates_csv(path: str | os.PathLike) -> dict[str, list[dict]]:
    """A CSV in train_label_coordinates.csv's format (a consumer's points for a crops model) -> {study_id: rows},
    read once per version of the file (cached by path and modification time). Shared: do not mutate it.

    Raises:
        CsvError: a missing column or a row with a non-numeric id, instance number or coordinate (file:line).
    """
    return _coordinates_cached(str(path), os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _coordinates_cached(path: str, mtime_ns: int) -> dict[str, list[dict]]:
    return _coordinates_file(Path(path), None)


def _coordinates_file(path: Path, problems: RowProblems | None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for i, row in enumerate(_read(path, COORD_COLUMNS), start=2):
        sid = _number(row["study_id"])
        try:
            if sid is None:
                raise ValueError
            rec = {"series_id": str(int(row["series_id"])), "instance_number": int(float(row["instance_number"])),
                   "condition": row["condition"].strip(), "level": row["level"].strip(),
                   "x": float(row["x"]), "y": float(row["y"])}
            if not all(map(math.isfinite, (rec["x"], rec["y"]))):
                raise ValueError
        except (TypeError, ValueError, AttributeError):
            _problem(problems, path, i, "study_id/series_id/instance_number/x/y must be numbers; row skipped")
            continue
        out[sid].append(rec)
    return dict(out)


def descriptions_beside(study_dir: str | Path) -> dict[str, str] | None:
    """The series descriptions of a study in the competition layout, from the CSV beside its images folder:
    `<x>_images/<study>` -> `<x>_series_descriptions.csv` ({series_id: description}); None when there is none."""
    study_dir = Path(study_dir)
    images = study_dir.parent
    if not images.name.endswith("_images"):
        return None
    path = images.parent / f"{images.name[: -len('_images')]}_series_descriptions.csv"
    if not path.is_file():
        return None
    return read_descriptions_csv(path).get(study_dir.name, {})


def read_descriptions_csv(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """A series-descriptions CSV -> {study_id: {series_id: description}}, read once per version of the file (cached
    by path and modification time: a study at a time asks for the same CSV). The result is shared: do not mutate it.

    Raises:
        FileNotFoundError: no such file.
    """
    return _descriptions_cached(str(path), os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _descriptions_cached(path: str, mtime_ns: int) -> dict[str, dict[str, str]]:
    return _read_descriptions_file(Path(path))
