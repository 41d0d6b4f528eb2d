"""Read and validate the three RSNA CSVs; every problem is a one-line error naming the file, row and fix."""

from __future__ import annotations

import csv
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


def _study_id(value: str, path: Path, line: int) -> str:
    v = (value or "").strip()
    if not v.isdigit():
        raise CsvError(f"{path}:{line}: study_id {value!r} is not a number")
    return str(int(v))


def read_labels(data_dir: str | Path) -> dict[str, dict[str, int]]:
    """train.csv -> {study_id: {label column: class index, -1 = missing}} (validated)."""
    path = Path(data_dir) / LABELS_CSV
    out: dict[str, dict[str, int]] = {}
    for i, row in enumerate(_read(path, ("study_id",) + LABEL_COLUMNS), start=2):
        sid = _study_id(row["study_id"], path, i)
        if sid in out:
            raise CsvError(f"{path}:{i}: study_id {sid} appears twice; keep one row per study")
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
    return out


def read_descriptions(data_dir: str | Path) -> dict[str, dict[str, str]]:
    """train_series_descriptions.csv -> {study_id: {series_id: description}}."""
    path = Path(data_dir) / SERIES_CSV
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for i, row in enumerate(_read(path, SERIES_COLUMNS), start=2):
        sid = _study_id(row["study_id"], path, i)
        series = (row["series_id"] or "").strip()
        if not series.isdigit():
            raise CsvError(f"{path}:{i}: series_id {row['series_id']!r} is not a number")
        out[sid][str(int(series))] = (row["series_description"] or "").strip()
    return dict(out)


def read_coordinates(data_dir: str | Path, required: bool = True) -> dict[str, list[dict]]:
    """train_label_coordinates.csv -> {study_id: [rows with typed values]}; {} if absent and not required."""
    path = Path(data_dir) / COORDS_CSV
    if not required and not path.is_file():
        return {}
    out: dict[str, list[dict]] = defaultdict(list)
    for i, row in enumerate(_read(path, COORD_COLUMNS), start=2):
        sid = _study_id(row["study_id"], path, i)
        try:
            rec = {"series_id": str(int(row["series_id"])), "instance_number": int(float(row["instance_number"])),
                   "condition": row["condition"].strip(), "level": row["level"].strip(),
                   "x": float(row["x"]), "y": float(row["y"])}
        except (TypeError, ValueError):
            raise CsvError(f"{path}:{i}: series_id/instance_number/x/y must be numbers") from None
        out[sid].append(rec)
    return dict(out)
