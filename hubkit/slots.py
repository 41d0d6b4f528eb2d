"""The table of slots: for each picker mode, which images a study becomes, what each is called in the prompt, which
series it comes from, which level and side it shows and which conditions it serves.

Everything that depends on a study's images reads this table, never its own copy: the picker and the builder (what
to cut), the prompt and the sequence budget (how many images, under which names), the left/right mirroring of
training studies (which images trade places, which are flipped), the pipeline's missing-slot warnings, the cards,
and the phantom's coordinates (which series shows each condition). Adding a picker mode is one `register_mode` call:
its slots and the function that picks them.

    from hubkit.slots import slots_of
    [s.view for s in slots_of("geometry")][:3]       # ['Sagittal T2', 'Sagittal T1 left', 'Sagittal T1 right']
    len(slots_of("crops", "separate")), len(slots_of("crops", "mosaic"))    # 20, 5
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from hubkit.schema import CONDITIONS, LEVEL_TITLES, LEVELS, SeriesKind

SIDES = ("left", "right")
# The answer's sided conditions, and each one's mirror image (a study seen from the other side).
CONDITION_SIDE = {"lf": "left", "rf": "right", "ls": "left", "rs": "right"}
MIRRORED_CONDITION = {"lf": "rf", "rf": "lf", "ls": "rs", "rs": "ls"}
CROP_LAYOUTS = ("mosaic", "separate")


@dataclasses.dataclass(frozen=True)
class Slot:
    """One image of a study (see the module docstring)."""

    view: str  # its name in the prompt and in the dataset's `views` column
    series: SeriesKind  # the series it is cut from
    level: str | None  # the level it shows (None: a whole slice showing every level)
    side: str | None  # "left" / "right" for a sided structure, None otherwise
    conditions: tuple[str, ...]  # the answer's condition keys it shows
    cells: tuple["Slot", ...] = ()  # a mosaic's cells, row-major in a 2x2 grid (empty: one image)

    @property
    def mirrored_flip(self) -> bool:
        """An axial image shows left and right side by side: mirroring the study flips it."""
        return self.series is SeriesKind.AX_T2


@dataclasses.dataclass(frozen=True)
class PickerMode:
    """A registered picker mode: its slots per layout and the function that picks them (`pick`, or the dotted
    path `module:function` of one, imported when first used so the table can be read without the builder)."""

    name: str
    layouts: Mapping[str | None, tuple[Slot, ...]]
    pick: Callable | str
    # What it needs from train_label_coordinates.csv: "required" (no image without them), "preferred" (uses them
    # where there are some, geometry otherwise) or "none".
    coordinates: str = "none"
    # A crop mode cuts regions in millimetres (`hubkit.dataset_builder.crops`); a slice mode takes whole slices.
    crops: bool = False

    @property
    def default_layout(self) -> str | None:
        return next(iter(self.layouts))

    def slots(self, layout: str | None = None) -> tuple[Slot, ...]:
        """The slots of `layout` (None: the mode's default layout, its first)."""
        key = self.default_layout if layout is None else layout
        if key not in self.layouts:
            raise ValueError(f"picker {self.name!r} has no layout {layout!r} (it has {sorted(map(str, self.layouts))})")
        return self.layouts[key]

    def picker(self) -> Callable:
        if callable(self.pick):
            return self.pick
        import importlib

        module, _, name = self.pick.partition(":")
        return getattr(importlib.import_module(module), name)


_MODES: dict[str, PickerMode] = {}


def register_mode(name: str, layouts: Mapping[str | None, tuple[Slot, ...]], pick: Callable | str, *,
                  coordinates: str = "none", crops: bool = False) -> PickerMode:
    """Add a picker mode (see the module docstring); its name becomes a valid `--picker`."""
    if coordinates not in ("required", "preferred", "none"):
        raise ValueError(f"coordinates must be required, preferred or none, got {coordinates!r}")
    taken = {s.view: (m.name, s) for m in _MODES.values() if m.name != name for sl in m.layouts.values() for s in sl}
    clash = sorted({s.view for slots in layouts.values() for s in slots
                    if s.view in taken and taken[s.view][1] != s})
    if clash:  # a view names one slot everywhere (mirroring and warnings look slots up by it)
        raise ValueError(f"picker {name!r}: view(s) {clash} already name other slots of picker "
                         f"{taken[clash[0]][0]!r}")
    mode = PickerMode(name, dict(layouts), pick, coordinates, crops)
    _MODES[name] = mode
    return mode


def mode(name: str) -> PickerMode:
    """The registered picker mode `name`; ValueError listing the known ones."""
    try:
        return _MODES[str(name)]
    except KeyError:
        raise ValueError(f"picker {name!r} is not one of {sorted(_MODES)}") from None


def modes() -> list[str]:
    return sorted(_MODES)


def slots_of(picker: str, layout: str | None = None) -> tuple[Slot, ...]:
    """The slots of picker mode `picker` (and `layout`, for a mode that has several)."""
    return mode(picker).slots(layout)


def views_of(picker: str, layout: str | None = None) -> list[str]:
    return [s.view for s in slots_of(picker, layout)]


def slot_by_view(view: str) -> Slot | None:
    """The slot a view name stands for, in any registered mode (None for a name no mode has)."""
    for m in _MODES.values():
        for slots in m.layouts.values():
            for s in slots:
                if s.view == view:
                    return s
    return None


def series_of_condition(condition: str, picker: str = "geometry") -> SeriesKind:
    """The series kind whose slots show `condition` in `picker`'s table (what the phantom writes coordinates on)."""
    for s in slots_of(picker):
        if condition in s.conditions:
            return s.series
    raise ValueError(f"no slot of picker {picker!r} shows {condition!r}")


def mirror_view(view: str) -> str:
    """The view a study's mirror image (its left and right exchanged) shows this view's image under: the other
    side's twin of a sided slot, or the same view."""
    slot = slot_by_view(view)
    if slot is None or slot.side is None:
        return view
    other = SIDES[1 - SIDES.index(slot.side)]
    for m in _MODES.values():
        for slots in m.layouts.values():
            for s in slots:
                if (s.series, s.level, s.side, s.cells) == (slot.series, slot.level, other, slot.cells):
                    return s.view
    return view


def mirror_cells(slot: Slot) -> list[tuple[int, bool]]:
    """For a mosaic slot: per cell position, (the cell whose image goes there, flip it?) in its mirror image."""
    index = {c.view: i for i, c in enumerate(slot.cells)}
    out: list[tuple[int, bool]] = [(0, False)] * len(slot.cells)
    for i, cell in enumerate(slot.cells):
        out[index.get(mirror_view(cell.view), i)] = (i, cell.mirrored_flip)
    return out


def describe(slots: tuple[Slot, ...]) -> list[dict[str, Any]]:
    """The table as plain rows (the dataset manifest and the cards show it)."""
    return [{"view": s.view, "series": str(s.series), "level": s.level, "side": s.side,
             "conditions": list(s.conditions), "cells": [c.view for c in s.cells]} for s in slots]


# ------------------------------------------------------------------------------------------- built-in modes
# Whole slices: one midline sagittal T2, the two parasagittal T1, one axial T2 per level (the reference recipe's 8).
VIEW_SAG_T2 = "Sagittal T2"
VIEW_T1 = {"left": "Sagittal T1 left", "right": "Sagittal T1 right"}


def axial_view(level: str) -> str:
    """`axial_view("L4L5")` -> `"Axial T2 L4/L5"`."""
    return f"Axial T2 {LEVEL_TITLES[level]}"


SLICES: tuple[Slot, ...] = (
    Slot(VIEW_SAG_T2, SeriesKind.SAG_T2, None, None, ("canal",)),
    Slot(VIEW_T1["left"], SeriesKind.SAG_T1, None, "left", ("lf",)),
    Slot(VIEW_T1["right"], SeriesKind.SAG_T1, None, "right", ("rf",)),
    *(Slot(axial_view(lv), SeriesKind.AX_T2, lv, None, ("ls", "rs")) for lv in LEVELS),
)
VIEWS: tuple[str, ...] = tuple(s.view for s in SLICES)  # the whole-slice modes' views, in slot order


def crop_slots(level: str) -> tuple[Slot, ...]:
    """A level's four crops: the canal on the sagittal T2, each foramen on the sagittal T1, both recesses on the
    axial T2 (in this order: the 2x2 mosaic's row-major cells)."""
    t = LEVEL_TITLES[level]
    return (Slot(f"{t} Sagittal T2 canal", SeriesKind.SAG_T2, level, None, ("canal",)),
            Slot(f"{t} Sagittal T1 left foramen", SeriesKind.SAG_T1, level, "left", ("lf",)),
            Slot(f"{t} Sagittal T1 right foramen", SeriesKind.SAG_T1, level, "right", ("rf",)),
            Slot(f"{t} Axial T2 recesses", SeriesKind.AX_T2, level, None, ("ls", "rs")))


CROPS_SEPARATE: tuple[Slot, ...] = tuple(s for lv in LEVELS for s in crop_slots(lv))  # level-major
CROPS_MOSAIC: tuple[Slot, ...] = tuple(
    Slot(f"{LEVEL_TITLES[lv]} crops (canal T2, left foramen T1, right foramen T1, axial T2)", SeriesKind.SAG_T2, lv,
         None, CONDITIONS, cells=crop_slots(lv)) for lv in LEVELS)

register_mode("coords", {None: SLICES}, "hubkit.dataset_builder.slices:pick_slices", coordinates="preferred")
register_mode("geometry", {None: SLICES}, "hubkit.dataset_builder.slices:pick_slices")
# mosaic first, so the default: on the realistic phantom it learned where separate crops did not (BENCHMARKS.md 8).
register_mode("crops", {"mosaic": CROPS_MOSAIC, "separate": CROPS_SEPARATE}, "hubkit.dataset_builder.crops:pick_crops",
              coordinates="required", crops=True)
