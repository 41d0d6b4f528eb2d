"""One study folder -> picked 8-bit slice images + view texts. Shared by the dataset builder and the pipeline.

Example:
    >>> s = load_study("train_images/4003253", descriptions={"702807833": "Sagittal T2/STIR", ...}, slice_size=448)
    >>> s.views, s.images[0].size
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

from hubkit.schema import Picker

from .dicom import DicomError, Series, read_series
from .pixels import decode_picked, to_image
from .slices import pick_slices


@dataclasses.dataclass
class StudyImages:
    study_id: str
    images: list  # PIL.Image, mode "L"
    views: list[str]
    picks: list[tuple[str, str, int]]  # (view, series_id, instance_number) actually used
    notes: list[str]  # empty slots, fallbacks
    skipped: list[tuple[str, str]]  # (file or folder, reason)


def load_study(study_dir: str | Path, descriptions: Mapping[str, str] | None = None,
               picker: Picker | str = Picker.GEOMETRY, coords: Sequence[Mapping] | None = None, *,
               slice_size: int) -> StudyImages:
    """Read the headers of every series of a study, pick the slices, decode only the picked ones.

    Args:
        study_dir: folder holding one sub-folder per series (RSNA `train_images/<study_id>`).
        descriptions: series_id -> series description (RSNA CSV); series absent here use their DICOM
            SeriesDescription. None -> DICOM SeriesDescription for all (what the pipeline does).
    Raises:
        DicomError: the folder is missing, or no slice at all could be used (the message says why).
    """
    d = Path(study_dir)
    if not d.is_dir():
        raise DicomError(f"{d}: study folder not found")
    skipped: list[tuple[str, str]] = []
    series: dict[str, Series] = {}
    for sd in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sd.is_symlink():
            skipped.append((str(sd), "symbolic link ignored"))
            continue
        desc = (descriptions or {}).get(sd.name)
        try:
            # coords mode reads each picked file once (header and pixels together); geometry mode reads every
            # header, so it keeps no pixels and decodes the picked slices afterwards.
            s = read_series(sd, desc, keep_pixels=Picker(picker) is Picker.COORDS)
        except DicomError as e:
            skipped.append((str(sd), str(e)))
            continue
        series[sd.name] = s
    if descriptions:
        for sid in sorted(set(descriptions) - set(series)):
            if not any(sid == Path(f).name for f, _ in skipped):
                skipped.append((str(d / sid), f"series listed as {descriptions[sid]!r} but its folder is missing"))
    picks, notes = pick_slices(series, mode=picker, coords=coords)
    for s in series.values():  # headers are read lazily: collect what the picking found unreadable
        skipped.extend(s.skipped)
    images, views, used = [], [], []
    for p in picks:
        try:
            img = to_image(decode_picked(series[p.series_id], p.header), p.header, slice_size)  # = load_slice
        except DicomError as e:
            skipped.append((str(p.header.path), str(e)))
            notes.append(f"{p.view}: picked slice unreadable, slot left empty")
            continue
        images.append(img)
        views.append(p.view)
        used.append((p.view, p.series_id, p.header.instance_number))
    if not images:
        reasons = "; ".join(notes[:3] + [r for _, r in skipped[:2]]) or "no series folders"
        raise DicomError(f"{d}: no usable slice ({reasons})")
    return StudyImages(d.name, images, views, used, notes, skipped)
