"""One study folder -> picked 8-bit slice images + view texts. Shared by the dataset builder and the pipeline.

Example:
    >>> s = load_study("train_images/4003253", descriptions={"702807833": "Sagittal T2/STIR", ...}, slice_size=448)
    >>> s.views, s.images[0].size
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

from .dicom import DicomError, Series, SliceHeader, read_header, read_series
from .pixels import decode_picked, to_image


@dataclasses.dataclass
class StudyImages:
    study_id: str
    images: list  # PIL.Image, mode "L"
    views: list[str]
    picks: list[tuple[str, str, int]]  # (view, series_id, instance_number) actually used
    notes: list[str]  # empty slots, fallbacks
    skipped: list[tuple[str, str]]  # (file or folder, reason)


def find_series(study_dir: Path, descriptions: Mapping[str, str] | None = None, keep_pixels: bool = False,
                by_uid: bool = True) -> tuple[dict[str, Series], list[tuple[str, str]]]:
    """The series of a study folder, whatever its layout -> ({series id: Series}, skipped (file, reason)).

    `by_uid`: files are grouped by SeriesInstanceUID; a series' id is its folder's name when that folder holds
    exactly that series, else its UID. In the common layout (one flat sub-folder per series, as scanners and RSNA
    export) the first and last file of each folder are read: when they share a UID and no UID spans two folders,
    each folder is a series and its other headers are read only when the picker needs them; any other layout
    (nested, flat, mixed) has every header read. Without `by_uid` (the RSNA layout with its CSV, whose series ids
    name folders) each sub-folder is a series.
    """
    skipped: list[tuple[str, str]] = []
    series: dict[str, Series] = {}
    folders = sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in study_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    if by_uid and not loose and folders:
        known = _series_per_folder(folders)
        if known is not None:
            for sd, headers in known.items():
                series[sd.name] = Series(sd, (descriptions or {}).get(sd.name), keep_pixels, headers=headers)
            return series, skipped
    if not by_uid and not loose:
        for sd in folders:
            if sd.is_symlink():
                skipped.append((str(sd), "symbolic link ignored"))
                continue
            try:
                series[sd.name] = read_series(sd, (descriptions or {}).get(sd.name), keep_pixels=keep_pixels)
            except DicomError as e:
                skipped.append((str(sd), str(e)))
        return series, skipped
    groups: dict[str, dict[Path, SliceHeader]] = {}
    for f in sorted(study_dir.rglob("*")):
        if f.is_symlink():
            skipped.append((str(f), "symbolic link ignored"))
        elif f.is_file() and not any(part.startswith(".") for part in f.relative_to(study_dir).parts):
            try:
                h = read_header(f)
            except DicomError as e:
                skipped.append((str(f), str(e)))
                continue
            # no SeriesInstanceUID (a broken export): the folder stands for the series
            groups.setdefault(h.series_uid or f"folder:{f.parent}", {})[f] = h
    in_folder: dict[Path, int] = {}
    for headers in groups.values():
        for parent in {f.parent for f in headers}:
            in_folder[parent] = in_folder.get(parent, 0) + 1
    for uid, headers in sorted(groups.items()):
        parents = {f.parent for f in headers}
        parent = parents.pop() if len(parents) == 1 else None
        own_folder = parent is not None and parent != study_dir and in_folder[parent] == 1
        sid = parent.name if own_folder else uid.removeprefix("folder:")
        desc = (descriptions or {}).get(sid) or (descriptions or {}).get(uid)
        series[sid] = Series(parent if own_folder else study_dir, desc, keep_pixels, files=list(headers),
                             series_id=sid, headers=headers)
    return series, skipped


def _series_per_folder(folders: list[Path]) -> dict[Path, dict[Path, SliceHeader]] | None:
    """{folder: its first and last headers} when each folder looks like one whole series (flat, first and last
    file share a SeriesInstanceUID, no UID in two folders); None when the layout needs every header read."""
    seen: set[str] = set()
    out: dict[Path, dict[Path, SliceHeader]] = {}
    for sd in folders:
        if sd.is_symlink():
            return None
        files = sorted(f for f in sd.iterdir() if not f.name.startswith("."))
        if not files or any(not f.is_file() or f.is_symlink() for f in files):
            return None
        try:
            ends = {f: read_header(f) for f in (files[0], files[-1])}
        except DicomError:
            return None
        uids = {h.series_uid for h in ends.values()}
        if len(uids) != 1 or "" in uids or uids & seen:
            return None
        seen |= uids
        out[sd] = ends
    return out


def load_study(study_dir: str | Path, descriptions: Mapping[str, str] | None = None,
               picker: str = "geometry", coords: Sequence[Mapping] | None = None, *,
               slice_size: int, layout: str | None = None, found: tuple | None = None) -> StudyImages:
    """Find the series of a study, pick its images as the picker mode's slots say (`hubkit.slots`), decode only the
    picked slices.

    Args:
        study_dir: a study's folder: one sub-folder per series (RSNA `train_images/<study_id>`), nested folders, or
            all files in one folder (series are then told apart by SeriesInstanceUID).
        descriptions: series id -> series description (the RSNA CSV); it wins over the DICOM SeriesDescription.
        picker: a registered picker mode (`coords`, `geometry`, `crops`, ...); `coords` are the study's
            train_label_coordinates.csv rows (or a caller's in that format), for the modes that use them.
        slice_size: side of every stored square 8-bit image (a mosaic's cells are half of it).
        layout: the mode's layout (crops: "separate" or "mosaic"); None: its default.
        found: `find_series(study_dir, descriptions, by_uid=...)`'s answer when the caller already has it (the
            pipeline's localiser read every header of the study to place its points): not read again.
    Raises:
        DicomError: the folder is missing, or no slice at all could be used (the message says why).
    """
    from hubkit.slots import mode as picker_mode

    d = Path(study_dir)
    if not d.is_dir():
        raise DicomError(f"{d}: study folder not found")
    m = picker_mode(picker)
    slots = m.slots(layout)
    uses_coords = m.coordinates != "none" and bool(coords)
    # with coordinates and the RSNA CSV each picked file is read once (header and pixels together), in its folder;
    # otherwise every header is read anyway (geometry), which also groups the files by SeriesInstanceUID.
    if found is not None:
        series, skipped = found[0], list(found[1])
    else:
        series, skipped = find_series(d, descriptions, keep_pixels=uses_coords,
                                      by_uid=not (uses_coords and descriptions))
    if descriptions:
        for sid in sorted(set(descriptions) - set(series)):
            if not any(sid == Path(f).name for f, _ in skipped):
                skipped.append((str(d / sid), f"series listed as {descriptions[sid]!r} but its folder is missing"))
    picks, notes = m.picker()(series, mode=m.name, coords=coords, slots=slots)
    for s in series.values():  # headers are read lazily: collect what the picking found unreadable
        skipped.extend(s.skipped)
    cells = any(s.cells for s in slots)
    rendered: dict[str, object] = {}
    for p in picks:
        try:
            arr = decode_picked(series[p.series_id], p.header)
            rendered[p.view] = (to_image(arr, p.header, slice_size // 2 if cells else slice_size, p.region), p)
        except DicomError as e:
            skipped.append((str(p.header.path), str(e)))
            notes.append(f"{p.view}: picked slice unreadable, left out")
    images, views, used = [], [], []
    for slot in slots:
        parts = [rendered.get(c.view) for c in slot.cells] if slot.cells else [rendered.get(slot.view)]
        if not any(parts):
            continue
        images.append(_mosaic([x and x[0] for x in parts], slice_size) if slot.cells else parts[0][0])
        views.append(slot.view)
        used += [(x[1].view, x[1].series_id, x[1].header.instance_number) for x in parts if x]
        notes += [f"{slot.view}: cell {c.view!r} empty" for c, x in zip(slot.cells, parts) if not x]
    if not images:
        reasons = "; ".join(notes[:3] + [r for _, r in skipped[:2]]) or "no DICOM files"
        raise DicomError(f"{d}: no usable slice ({reasons})")
    return StudyImages(d.name, images, views, used, notes, skipped)


def _mosaic(cells: list, size: int):
    """Up to four cell images (None: an empty cell, left black) in a 2x2 grid, row-major, `size` px square."""
    from PIL import Image

    out = Image.new("L", (size, size))
    half = size // 2
    for i, im in enumerate(cells):
        if im is not None:
            out.paste(im, ((i % 2) * half, (i // 2) * half))
    return out
