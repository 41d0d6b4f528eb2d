"""Per-level crops (picker `crops`): a square around each graded structure, cut in millimetres at its coordinates.

Per level (`hubkit.slots.crop_slots`): the spinal canal on the sagittal T2 slice the canal point lies on, each
neural foramen on the sagittal T1 slice of its point (left and right), and both subarticular recesses on the axial
T2 slice of their points (centred between the two). The points are the annotators' (train_label_coordinates.csv,
pixel x/y on a named instance) or, in the pipeline, the caller's in the same format.

Size: the side is twice the level's local disc spacing (the mean distance, in patient millimetres, from its canal
point to the neighbouring levels' canal points), clamped to `SIDE_MM`, so a crop spans about one vertebra above and
below whatever the field of view or the patient's size. Everything is measured in the picked slice's own pixels and
PixelSpacing: translating a study's series (positions and coordinates together) or reordering its files gives the
same crops, bit for bit. Pixels then go through the one pixel path (`pixels.to_image` with a region): windowed and
oriented as whole slices are.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from hubkit.schema import CONDITION_TITLES, LEVEL_TITLES, LEVELS, SeriesKind
from hubkit.slots import Slot

from .dicom import Series, SliceHeader
from .slices import Pick, series_by_kind

# A crop's side (mm): twice the local disc spacing, within these bounds; the spacing assumed without canal points.
SIDE_MM = (50.0, 90.0)
SPACING_FACTOR = 2.0
DEFAULT_SPACING_MM = 40.0
RULE = (f"square; side = {SPACING_FACTOR:g} x the level's local disc spacing (mean distance from its canal point to "
        f"the neighbouring levels'), clamped to {SIDE_MM[0]:g}-{SIDE_MM[1]:g} mm ({DEFAULT_SPACING_MM:g} mm spacing "
        "without canal points); centred on the structure's point, on the slice that point is on")


@dataclasses.dataclass(frozen=True)
class Region:
    """A square around (col, row) of a slice's pixel grid, `side_mm` wide (PixelSpacing converts it)."""

    col: float
    row: float
    side_mm: float


def pick_crops(series: Mapping[str, Series], *, coords: Sequence[Mapping] | None, slots: Sequence[Slot],
               mode: str = "crops") -> tuple[list[Pick], list[str]]:
    """One `Pick` with a `Region` per crop the slots ask for (a mosaic's cells each), in slot order; notes name
    every crop that has no coordinates or no readable slice (its slot, or its mosaic cell, stays empty)."""
    by_kind, notes = series_by_kind(series)
    by_id = {s.series_id: s for kind in by_kind.values() for s in kind}
    rows = list(coords or [])
    if not rows:
        notes.append("no coordinates for this study: crops need the points of each level (from "
                     "train_label_coordinates.csv, or given to the pipeline)")
    spacing = _local_spacing(rows, by_id, by_kind[SeriesKind.SAG_T2])
    picks = []
    for slot in slots:
        for cell in slot.cells or (slot,):
            pick = _pick_cell(cell, rows, by_id, by_kind, spacing, notes)
            if pick is not None:
                picks.append(pick)
    return picks, notes


def _points(rows: Sequence[Mapping], condition: str, level: str, candidates: Mapping[str, Series]):
    """The rows of `condition` at `level` whose series is one of `candidates` (in the CSV's order)."""
    title, lt = CONDITION_TITLES[condition], LEVEL_TITLES[level]
    return [r for r in rows if r["condition"] == title and r["level"] == lt and str(r["series_id"]) in candidates]


def _header(series: Series, row: Mapping) -> SliceHeader | None:
    return series.by_instance(int(row["instance_number"]))


def _pick_cell(cell: Slot, rows, by_id, by_kind, spacing: dict[str, float], notes: list[str]) -> Pick | None:
    candidates = {s.series_id: s for s in by_kind[cell.series]}
    found = [(c, r) for c in cell.conditions for r in _points(rows, c, cell.level, candidates)]
    if not found:
        if rows:
            notes.append(f"{cell.view}: no coordinates on a {cell.series} series, crop left out")
        return None
    _, first = found[0]
    series = by_id[str(first["series_id"])]
    header = _header(series, first)
    if header is None:
        notes.append(f"{cell.view}: instance {first['instance_number']} of series {series.series_id} is missing or "
                     "unreadable, crop left out")
        return None
    # Both recesses in one axial crop: centred between the two points (those on the same slice as the first).
    same = [r for _, r in found if str(r["series_id"]) == series.series_id
            and int(r["instance_number"]) == int(first["instance_number"])]
    col = float(np.mean([float(r["x"]) for r in same]))
    row = float(np.mean([float(r["y"]) for r in same]))
    side = float(np.clip(SPACING_FACTOR * spacing[cell.level], *SIDE_MM))
    return Pick(cell.view, series.series_id, header, Region(col, row, round(side, 3)))


def _local_spacing(rows, by_id, sag_t2: list[Series]) -> dict[str, float]:
    """Each level's local disc spacing (mm) from the canal points of the sagittal T2 (see the module docstring)."""
    candidates = {s.series_id: s for s in sag_t2}
    world: dict[str, np.ndarray] = {}
    for lv in LEVELS:
        for r in _points(rows, "canal", lv, candidates):
            h = _header(by_id[str(r["series_id"])], r)
            if h is not None:
                world[lv] = h.pixel_to_patient(float(r["x"]), float(r["y"]))
                break
    gaps = {}
    for i, lv in enumerate(LEVELS):
        near = [float(np.linalg.norm(world[lv] - world[o])) for o in LEVELS[max(0, i - 1):i + 2]
                if o != lv and lv in world and o in world]
        if near:
            gaps[lv] = float(np.mean(near))
    fallback = float(np.median(list(gaps.values()))) if gaps else DEFAULT_SPACING_MM
    return {lv: gaps.get(lv, fallback) for lv in LEVELS}
