"""The one slice picker, used by the dataset builder and by the inference pipeline.

Up to 8 slots per study, in this order (the `views` texts the prompt is built from):

| slot | view text | `coords` mode | `geometry` mode |
|---|---|---|---|
| 1 | Sagittal T2 | Sag T2/STIR instance holding most spinal-canal points | slice nearest the middle of the sagittal slab |
| 2 | Sagittal T1 left | Sag T1 instance holding most left-foraminal points | slice nearest `slab centre + 18 mm` in patient x (LPS: +x = left) |
| 3 | Sagittal T1 right | same with right-foraminal points | slice nearest `slab centre − 18 mm` |
| 4–8 | Axial T2 L1/L2 … L5/S1 | axial instance holding that level's subarticular points (left point first) | per-disc blocks: centre slice of each block, blocks matched to levels from the bottom (L5/S1 = lowest); one continuous stack: slice nearest 10/30/50/70/90 % of its superior→inferior extent |

Series choice: several series of one type → the one the coordinates point to (`coords`), else the one with the
most slices, ties broken by the smallest series id (deterministic and recorded). In `coords` mode a slot whose
coordinates are missing falls back to the `geometry` rule for that slot and says so in `notes`.
A missing series leaves its slots empty (the study is built with fewer images and the notes say which).
`geometry` needs no labels, so it is what the pipeline runs at inference; on real data its axial rule is a
heuristic (it assumes the axial stack is centred on L1–S1), which `coords` avoids at training time.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hubkit.schema import CONDITION_TITLES, LEVEL_TITLES, LEVELS, Picker, SeriesKind
from hubkit.slots import VIEW_SAG_T2, VIEW_T1, Slot, axial_view

from .dicom import Series, SliceHeader
from .series import classify_series

# Distance of the neural foramina from the midline (mm); RSNA points sit at about +18 (left) and -15 (right).
FORAMEN_OFFSET_MM = 18.0
# Where the five discs sit in a continuous axial stack, as fractions of its superior->inferior extent.
AXIAL_LEVEL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)

SAG_T2, SAG_T1, AX_T2 = SeriesKind.SAG_T2, SeriesKind.SAG_T1, SeriesKind.AX_T2


@dataclasses.dataclass(frozen=True)
class Pick:
    view: str  # e.g. "Sagittal T1 left", "Axial T2 L4/L5", "L4/L5 Sagittal T2 canal"
    series_id: str
    header: SliceHeader
    region: Any = None  # None: the whole slice; a `crops.Region`: a square cut from it


def _choose_series(candidates: list[Series], preferred: Iterable[str] = ()) -> Series | None:
    if not candidates:
        return None
    votes = Counter(preferred)
    return sorted(candidates, key=lambda s: (-votes.get(s.series_id, 0), -len(s.files), s.series_id))[0]


def _nearest(slices: Sequence[SliceHeader], values: np.ndarray, target: float) -> SliceHeader:
    return slices[int(np.argmin(np.abs(values - target)))]


def _mode_instance(rows: list[Mapping], series_id: str) -> int | None:
    counts = Counter(int(r["instance_number"]) for r in rows if str(r["series_id"]) == series_id)
    if not counts:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _axial_blocks(series: Series) -> list[list[SliceHeader]]:
    """Split an axial series into blocks: a new block starts where the orientation turns by > 2 degrees or the
    slice gap is > 2.5x the median gap. One block = a continuous stack."""
    slices = sorted(series.slices, key=lambda s: -float(s.center[2]))  # superior first
    if len(slices) < 2:
        return [slices]
    z = np.array([float(s.center[2]) for s in slices])
    gaps = np.abs(np.diff(z))
    med = float(np.median(gaps)) or 1.0
    blocks, cur = [], [slices[0]]
    for prev, s, gap in zip(slices, slices[1:], gaps):
        turned = float(np.dot(prev.normal, s.normal)) < np.cos(np.radians(2.0))
        if turned or gap > 2.5 * med:
            blocks.append(cur)
            cur = []
        cur.append(s)
    blocks.append(cur)
    return blocks


def _geometry_axials(series: Series) -> dict[str, SliceHeader]:
    blocks = _axial_blocks(series)
    out: dict[str, SliceHeader] = {}
    if 1 < len(blocks) <= len(LEVELS):
        # Per-disc blocks, superior first; the lowest block is L5/S1.
        for level, block in zip(LEVELS[len(LEVELS) - len(blocks):], blocks):
            out[level] = block[len(block) // 2]
        return out
    slices = series.slices
    z = np.array([float(s.center[2]) for s in slices])
    top, bottom = float(z.max()), float(z.min())
    for level, frac in zip(LEVELS, AXIAL_LEVEL_FRACTIONS):
        out[level] = _nearest(slices, z, top - frac * (top - bottom))
    return out


def series_by_kind(series: Mapping[str, Series]) -> tuple[dict[SeriesKind, list[Series]], list[str]]:
    """The study's series by kind (`series.classify_series`), and a note for each one left out and why."""
    by_kind: dict[SeriesKind, list[Series]] = {SAG_T2: [], SAG_T1: [], AX_T2: []}
    notes: list[str] = []
    for sid, s in sorted(series.items()):
        cls = classify_series(s)
        if cls.kind is not None:
            by_kind[cls.kind].append(s)
        else:
            notes.append(f"series {sid} not used: {cls.reason}")
    return by_kind, notes


def pick_slices(series: Mapping[str, Series], mode: Picker | str = Picker.GEOMETRY,
                coords: Sequence[Mapping] | None = None,
                slots: Sequence[Slot] | None = None) -> tuple[list[Pick], list[str]]:
    """Choose up to 8 slices for one study.

    Args:
        series: series_id -> Series (descriptions from train_series_descriptions.csv or the DICOM header).
        mode: `Picker.COORDS` (use `coords`, the study's rows of train_label_coordinates.csv) or
            `Picker.GEOMETRY` (or their values).
        coords: rows with keys series_id, instance_number, condition, level (RSNA text, e.g. "L4/L5").
        slots: the mode's slots (`hubkit.slots.SLICES`, which this picks; given by the mode registry).
    Returns:
        (picks in slot order, notes saying which slots are empty or fell back and why)
    """
    mode = Picker(mode)
    rows = list(coords or []) if mode is Picker.COORDS else []
    by_kind, notes = series_by_kind(series)
    picks: list[Pick] = []

    def rows_for(*conditions: str) -> list[Mapping]:
        """The coordinate rows of these conditions (schema keys), in `rows`' order per condition."""
        return [r for c in conditions for r in rows if r["condition"] == CONDITION_TITLES[c]]

    # Slot 1: midline sagittal T2.
    canal = rows_for("canal")
    t2 = _choose_series(by_kind[SAG_T2], (str(r["series_id"]) for r in canal))
    if t2 is None:
        notes.append("no Sagittal T2/STIR series: slot 'Sagittal T2' empty")
    else:
        inst = _mode_instance(canal, t2.series_id) if rows else None
        h = t2.by_instance(inst) if inst is not None else None
        if h is None and t2.slices:
            if mode is Picker.COORDS:
                why = "no canal coordinates" if inst is None else f"instance {inst} missing or unreadable"
                notes.append(f"Sagittal T2: {why} in series {t2.series_id}, used the middle slice")
            pos = t2.positions()
            h = _nearest(t2.slices, pos, (pos.min() + pos.max()) / 2.0)
        if h is None:
            notes.append(f"Sagittal T2: series {t2.series_id} has no readable slice, slot empty")
        else:
            picks.append(Pick(VIEW_SAG_T2, t2.series_id, h))

    # Slots 2-3: parasagittal T1, left then right.
    fora = rows_for("lf", "rf")
    t1 = _choose_series(by_kind[SAG_T1], (str(r["series_id"]) for r in fora))
    if t1 is None:
        notes.append("no Sagittal T1 series: slots 'Sagittal T1 left/right' empty")
    else:
        for side, sign, condition in (("left", 1.0, "lf"), ("right", -1.0, "rf")):
            inst = _mode_instance(rows_for(condition), t1.series_id) if rows else None
            h = t1.by_instance(inst) if inst is not None else None
            if h is None and t1.slices:
                if mode is Picker.COORDS:
                    why = "no coordinates" if inst is None else f"instance {inst} missing or unreadable"
                    notes.append(f"Sagittal T1 {side}: {why}, used the slice {FORAMEN_OFFSET_MM:g} mm from the middle")
                x = np.array([float(s.center[0]) for s in t1.slices])
                h = _nearest(t1.slices, x, (x.min() + x.max()) / 2.0 + sign * FORAMEN_OFFSET_MM)
            if h is None:
                notes.append(f"Sagittal T1 {side}: series {t1.series_id} has no readable slice, slot empty")
            else:
                picks.append(Pick(VIEW_T1[side], t1.series_id, h))

    # Slots 4-8: one axial T2 per level.
    sub = rows_for("ls", "rs")
    ax = _choose_series(by_kind[AX_T2], (str(r["series_id"]) for r in sub))
    if ax is None:
        notes.append("no Axial T2 series: axial slots empty")
    else:
        fallback: dict[str, SliceHeader] | None = None  # computed only if a level needs it (reads all headers)
        by_id = {s.series_id: s for s in by_kind[AX_T2]}
        for level in LEVELS:
            title = LEVEL_TITLES[level]
            h, sid = None, ax.series_id
            level_rows = [r for r in sub if r["level"] == title]
            level_rows.sort(key=lambda r: (not r["condition"].startswith("Left"), str(r["series_id"])))
            for r in level_rows:  # the left point first; any axial series the coordinates name
                cand = by_id.get(str(r["series_id"]))
                h = cand.by_instance(int(r["instance_number"])) if cand is not None else None
                if h is not None:
                    sid = cand.series_id
                    break
            if h is None:
                if mode is Picker.COORDS:
                    why = "no coordinates" if not level_rows else "coordinate slice missing or unreadable"
                    notes.append(f"Axial T2 {title}: {why}, used the geometry rule")
                if fallback is None:
                    fallback = _geometry_axials(ax) if ax.slices else {}
                h = fallback.get(level)
            if h is None:
                notes.append(f"Axial T2 {title}: no slice found")
                continue
            picks.append(Pick(axial_view(level), sid, h))
    return picks, notes
