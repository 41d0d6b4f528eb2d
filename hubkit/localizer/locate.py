"""Localising a study: its sagittal series through the localiser's networks -> each level's points, as rows of
train_label_coordinates.csv (series_id, instance_number, condition, level, x, y), the rows the crops picker cuts at.

- Which level, roughly where: every slice of a series, whole, through its head's coarse network (`canal` on the
  sagittal T2, `foramen` on the sagittal T1, the slices on the patient's left of the midline for the left foramen,
  on the right for the right); per level the slice whose heatmap peaks highest and the peak.
- Which slice: a structure seen on several neighbouring slices (a foramen is a left-right tube, the canal a tube
  along the spine) cannot be told from one slice alone. The midline is found halfway between the two sides' foramen
  presence profiles, each foramen is put `lateral_mm` to its side of it and the canal on it (both learned from the
  training annotations, `fit.geometry_priors`), and each point goes to the slice nearest its plane.
- Where on it, to the millimetre: a 32 mm square around the point, 1 mm a pixel, through the head's fine network,
  mapped back to that slice's own pixels. Without a midline (no sagittal T1) the fine network also chooses between
  the coarse slice and its neighbours.
- Along the spine, the canal is placed from its level's two foramina (`canal_from_foramina_mm` from their midpoint):
  its own maps can slide a point along the tube, while each foramen is its own hole; its fine network moves across.
- Subarticular recesses: where training found them from their side's foramen (`recess_from_foramen_mm`), else
  beside the level's canal point in the disc's frame, projected into the axial series through the DICOM geometry:
  both of a level on the slice whose plane is nearest their midpoint, when one lies within reach (blocks angled to
  their disc and straight stacks alike), each point in that slice's own pixels.

A level whose heatmap peak stays under the localiser's threshold (a series cut short, a slice missing) is not
placed, and the notes say so: never guessed.

    loc = Localizer("runs/loc")
    rows, notes, placed = loc.locate(series)        # series: {series_id: dicom.Series} of one study
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from hubkit.schema import CONDITION_TITLES, LEVEL_TITLES, LEVELS, SeriesKind

from . import net

# The recesses around an axial slice's canal point (mm): to each side, and anterior (the canal lies posterior).
RECESS_SIDE_MM, RECESS_ANTERIOR_MM = 10.0, 6.0
# A level's canal lies between its foramina, this far behind their midpoint (+y, LPS); a canal point farther than
# AGREE_MM from there is at another level (about half a disc spacing).
CANAL_FROM_FORAMINA_MM, AGREE_MM = 6.0, 12.0
SIDES = (("left", "lf", "ls", 1.0), ("right", "rf", "rs", -1.0))  # patient left is +x


def slice_inputs(series, size: int, decoded: dict | None = None) -> tuple[list, np.ndarray]:
    """(headers, images uint8 (n, size, size)) of every readable slice of a series, in space order, through the one
    pixel path (oriented, windowed, the whole slice resized to size x size). `decoded`, when given, keeps each
    slice's decoded pixels (by `id` of its header), so the fine patches cut from them later decode nothing again."""
    from hubkit.dataset_builder.dicom import DicomError
    from hubkit.dataset_builder.pixels import decode_picked, to_image

    headers, images = [], []
    for h in series.slices:
        try:
            arr = decode_picked(series, h)
            images.append(np.asarray(to_image(arr, h, size)))
        except DicomError:
            continue
        if decoded is not None:
            decoded[id(h)] = arr
        headers.append(h)
    return headers, (np.stack(images) if images else np.zeros((0, size, size), np.uint8))


def net_to_pixel(u: float, v: float, header, size: int) -> tuple[float, float]:
    """An input image's (u = column, v = row) -> the slice's own (col, row): undo the resize, then the orientation."""
    from hubkit.dataset_builder.pixels import flips

    col = (u + 0.5) * header.columns / size - 0.5
    row = (v + 0.5) * header.rows / size - 0.5
    flip_lr, flip_ud = flips(header)
    return (header.columns - 1 - col if flip_lr else col), (header.rows - 1 - row if flip_ud else row)


def pixel_to_net(col: float, row: float, header, size: int) -> tuple[float, float]:
    """The inverse of `net_to_pixel`."""
    from hubkit.dataset_builder.pixels import flips

    flip_lr, flip_ud = flips(header)
    col, row = (header.columns - 1 - col if flip_lr else col), (header.rows - 1 - row if flip_ud else row)
    return (col + 0.5) * size / header.columns - 0.5, (row + 0.5) * size / header.rows - 0.5


def world_to_pixel(p: np.ndarray, header) -> tuple[float, float, float]:
    """A patient point -> (col, row) on a slice and its signed distance (mm) from the slice's plane."""
    d = np.asarray(p, float) - np.asarray(header.position, float)
    return (float(d @ header.row_dir / header.pixel_spacing[1]), float(d @ header.col_dir / header.pixel_spacing[0]),
            float(d @ header.normal))


def study_series(data_dir: str | os.PathLike, study_id: str, descriptions: Mapping) -> dict:
    """The series of one study of an RSNA-layout folder (`train_images/<study>/`), named by the folder's
    series-descriptions CSV when it lists the study, else by their own headers."""
    from pathlib import Path

    from hubkit.dataset_builder.study import find_series

    named = descriptions.get(study_id)
    return find_series(Path(data_dir) / "train_images" / study_id, named, by_uid=not named)[0]


def point_of(series: Mapping, row: Mapping):
    """The patient point (LPS, mm) of a coordinates row on its own slice; None when its series or slice is
    missing."""
    s = series.get(str(row["series_id"]))
    h = s.by_instance(int(row["instance_number"])) if s is not None else None
    return None if h is None else h.pixel_to_patient(float(row["x"]), float(row["y"]))


class Localizer:
    """The networks of a localiser folder (`net.save`), run on studies (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike | None = None, *, nets=None, config=None) -> None:
        if folder is not None:
            nets, config = net.load(folder)
        self.nets, self.config = nets, config
        self.threshold = float(config.get("threshold", 0.3))

    def maps(self, name: str, images: np.ndarray) -> np.ndarray:
        """Logit maps of network `name` ("canal.coarse", ...) for uint8 images (n, side, side)."""
        import torch

        model, out = self.nets[name], []
        with torch.no_grad():
            for i in range(0, len(images), 64):
                out.append(model(torch.from_numpy(images[i:i + 64].astype(np.float32) / 255.0)[:, None]).numpy())
        return np.concatenate(out)

    def _coarse(self, headers: list, maps: np.ndarray, keep) -> list[tuple[int, float, float, float]]:
        """Per level: (slice index or -1, col, row, presence) over the slices `keep` allows, from the coarse net's
        maps of every slice."""
        idx = [i for i, h in enumerate(headers) if keep(h)]
        if not idx:
            return [(-1, 0.0, 0.0, 0.0)] * len(LEVELS)
        presence, where = net.read_maps(maps[idx])
        out = []
        for j in range(len(LEVELS)):
            b = int(presence[:, j].argmax())
            k = idx[b]
            col, row = net_to_pixel(2 * where[b, j, 1] + 0.5, 2 * where[b, j, 0] + 0.5, headers[k], net.COARSE)
            out.append((k if presence[b, j] >= self.threshold else -1, col, row, float(presence[b, j])))
        return out

    def refine(self, head: str, series, headers: list, k: int, col: float, row: float, keep,
               decoded: dict) -> tuple[int, float, float]:
        """The fine network around (col, row) on slice k and its neighbours (those `keep` allows): the slice it
        finds the structure on most surely, and the point there. `decoded`: pixels already decoded (`slice_inputs`)."""
        from hubkit.dataset_builder.pixels import decode_picked

        cand = [i for i in (k - 1, k, k + 1) if 0 <= i < len(headers) and keep(headers[i])]
        arrays = [decoded[id(headers[i])] if id(headers[i]) in decoded else decode_picked(series, headers[i])
                  for i in cand]
        patches = np.stack([fine_patch(a, headers[i], col, row) for a, i in zip(arrays, cand)])
        presence, where = net.read_maps(self.maps(f"{head}.fine", patches))
        b = int(presence[:, 0].argmax())
        return (cand[b], *from_patch(headers[cand[b]], col, row, where[b, 0, 1], where[b, 0, 0]))

    def _head(self, head: str, series, keep_of, notes: list[str], what: str, decoded: dict, plane_of=None):
        """([(condition, level, header, col, row, presence)], planes) of one head on one series (`keep_of`:
        {condition: keep}).
        `plane_of(headers, maps, positions, normal)`, when given, names the position along the series' normal the
        structure lies at (`_planes`): its point is then refined on the slice nearest to it, not on whichever of
        the coarse slice and its neighbours the fine network likes best."""
        headers, images = slice_inputs(series, net.COARSE, decoded)
        maps = self.maps(f"{head}.coarse", images) if len(headers) else None  # every slice, once
        normal = np.asarray(series.normal, float)  # the series' own (slices written with flipped normals agree)
        positions = np.array([float(np.asarray(h.position) @ normal) for h in headers])
        planes = plane_of(headers, maps, positions, normal) if plane_of else {}
        found = []
        for condition, keep in keep_of(headers).items():
            for lv, (k, col, row, value) in zip(LEVELS, self._coarse(headers, maps, keep)):
                if k < 0:
                    notes.append(f"{LEVEL_TITLES[lv]}: {what[condition]} not found (presence {value:.2f} under "
                                 f"{self.threshold:g}): no crop of it")
                    continue
                if planes.get(condition) is not None:
                    p = headers[k].pixel_to_patient(col, row)
                    k = int(np.argmin(np.abs(positions - planes[condition])))
                    col, row, _ = world_to_pixel(p, headers[k])
                    keep = (lambda h, only=headers[k]: h is only)
                k, col, row = self.refine(head, series, headers, k, col, row, keep, decoded)
                found.append((condition, lv, headers[k], col, row, value))
        return found, planes

    def _planes(self, headers, maps, positions, normal) -> dict:
        """{condition: position along the sagittal T1's normal} of each foramen: the midline is halfway between the
        two sides' foramen presence profiles (each the presence-weighted mean position of its side's slices: the
        anatomy is mirrored, so what each profile's shape adds cancels), and each foramen lies `lateral_mm` (the
        annotators' median half-distance between left and right foramina, learned in training) to its side."""
        lateral = self.config.get("lateral_mm")
        if not lateral or len(headers) < 3:
            return {}
        presence = net.read_maps(maps)[0].max(1)
        x = np.array([float(h.center[0]) for h in headers])
        mid = float(np.median(positions))
        for _ in range(2):  # the side split by the midline, the midline by the sides
            cents = []
            for side in (x > np.interp(mid, positions, x), x <= np.interp(mid, positions, x)):
                w = np.where(side, presence, 0.0)
                w = np.where(w >= 0.5 * w.max(), w, 0.0) if w.max() > 0 else w
                cents.append(float((w * positions).sum() / w.sum()) if w.sum() > 0 else None)
            if None in cents:
                return {}
            mid = (cents[0] + cents[1]) / 2
        left = 1.0 if cents[0] >= mid else -1.0  # which way along the normal patient left (+x) lies
        return {**{c: mid + sign * left * lateral for _, c, _, sign in SIDES}, "midline": (normal, mid)}

    def locate(self, series: Mapping) -> tuple[list[dict], list[str], dict[str, bool]]:
        """(rows in train_label_coordinates.csv's format, notes, {level: canal placed?}) for one study's series."""
        from hubkit.dataset_builder.slices import series_by_kind

        by_kind, notes = series_by_kind(series)
        rows: list[dict] = []
        canal_world: dict[str, np.ndarray] = {}
        foramina: dict[tuple[str, str], np.ndarray] = {}
        decoded: dict[int, np.ndarray] = {}  # each slice decoded once, for the coarse inputs and the fine patches
        t2 = _largest(by_kind[SeriesKind.SAG_T2])
        if t2 is None:
            notes.append("no sagittal T2: the canal cannot be placed at any level")
        else:
            for c, lv, h, col, row, _ in self._head("canal", t2, lambda hs: {"canal": lambda h: True}, notes,
                                                    {"canal": "the canal (sagittal T2)"}, decoded)[0]:
                rows.append(_row(t2, h, c, lv, col, row))
                canal_world[lv] = h.pixel_to_patient(col, row)
        t1 = _largest(by_kind[SeriesKind.SAG_T1])
        if t1 is not None:
            def sides(headers):
                mid = (np.mean([p[0] for p in canal_world.values()]) if canal_world
                       else np.mean([h.center[0] for h in headers]) if headers else 0.0)
                return {c: (lambda h, s=sign: s * (float(h.center[0]) - mid) > 0) for _, c, _, sign in SIDES}

            what = {c: f"the {side} foramen (sagittal T1)" for side, c, _, _ in SIDES}
            found, planes = self._head("foramen", t1, sides, notes, what, decoded, self._planes)
            for c, lv, h, col, row, _ in found:
                rows.append(_row(t1, h, c, lv, col, row))
                foramina[c, lv] = h.pixel_to_patient(col, row)
            if t2 is not None:
                rows = self._agree(t2, rows, canal_world, foramina, notes, decoded, planes.get("midline"))
        rows += _axial_rows(by_kind[SeriesKind.AX_T2], canal_world, notes, foramina,
                            self.config.get("recess_from_foramen_mm"))
        return rows, notes, {lv: lv in canal_world for lv in LEVELS}

    def _agree(self, t2, rows: list[dict], canal_world: dict, foramina: Mapping, notes: list[str], decoded: dict,
               midline=None) -> list[dict]:
        """Where a level's two foramina are placed, its canal is placed from them: each foramen is its own hole,
        found to the millimetre, while the canal is one tube along the spine, whose maps can slide a point along it
        (out of fold on 200 realistic studies a fifth of the canal's own points lay over 8 mm from their disc,
        where the narrowing fades: BENCHMARKS.md 9d). The point goes `canal_from_foramina_mm` (learned in training,
        `fit.geometry_priors`; `CANAL_FROM_FORAMINA_MM` behind their midpoint for an older localiser) from the
        foramina's midpoint in the spine's own frame (`spine_frame`), onto the midline the foramina gave
        (`_planes`): the sagittal T2 slice nearest it, where the fine network moves the point across the tube
        only, never along it. The notes name a level whose canal's own point lay farther than `AGREE_MM` from
        there (another level), or was not found. A level without both foramina keeps the canal's own point, moved
        onto the midline when there is one."""
        headers, title = list(t2.slices), CONDITION_TITLES["canal"]
        mids = {lv: (foramina["lf", lv] + foramina["rf", lv]) / 2 for lv in LEVELS
                if ("lf", lv) in foramina and ("rf", lv) in foramina}
        along, behind = self.config.get("canal_from_foramina_mm") or (0.0, CANAL_FROM_FORAMINA_MM)
        for lv in LEVELS:
            target, across, why = canal_world.get(lv), None, None
            if lv in mids:
                down, across = spine_frame(lv, mids)
                prior = mids[lv] + along * down + behind * across
                if target is None or float(np.linalg.norm(target - prior)) > AGREE_MM:
                    why = "moved" if target is not None else "placed"
                target = prior
            elif target is None or midline is None:
                continue
            keep = lambda h: True  # noqa: E731
            if midline is not None:
                normal, mid = midline
                target = target + (mid - float(target @ normal)) * normal
            k = min(range(len(headers)), key=lambda i: abs(world_to_pixel(target, headers[i])[2]))
            if midline is not None:
                keep = (lambda h, only=headers[k]: h is only)
            col, row, _ = world_to_pixel(target, headers[k])
            try:
                k, col, row = self.refine("canal", t2, headers, k, col, row, keep, decoded)
            except Exception:  # noqa: BLE001 - an unreadable slice: the projected point stands
                pass
            point = headers[k].pixel_to_patient(col, row)
            if across is not None:  # the fine network's say across the tube; along it the foramina's
                point = target + float((point - target) @ across) * across
                col, row, _ = world_to_pixel(point, headers[k])
                point = headers[k].pixel_to_patient(col, row)
            canal_world[lv] = point
            rows = [r for r in rows if not (r["condition"] == title and r["level"] == LEVEL_TITLES[lv])]
            rows.append(_row(t2, headers[k], "canal", lv, col, row))
            if why:
                notes.append(f"{LEVEL_TITLES[lv]}: the canal {why} to agree with the foramina")
        return rows


def fine_patch(arr: np.ndarray, header, col: float, row: float) -> np.ndarray:
    """The fine network's input: a `net.FINE` mm square around (col, row), 1 mm a pixel, oriented and windowed as
    every image (`pixels.to_image`)."""
    from hubkit.dataset_builder.crops import Region
    from hubkit.dataset_builder.pixels import to_image

    return np.asarray(to_image(arr, header, net.FINE, Region(col, row, float(net.FINE))))


def from_patch(header, col: float, row: float, u: float, v: float) -> tuple[float, float]:
    """A fine patch's (u = column, v = row) -> the slice's own (col, row): mm from the patch's centre, in the
    oriented frame, turned back into the slice's pixels."""
    from hubkit.dataset_builder.pixels import flips

    flip_lr, flip_ud = flips(header)
    dx, dy = u + 0.5 - net.FINE / 2.0, v + 0.5 - net.FINE / 2.0
    return (col + (-dx if flip_lr else dx) / header.pixel_spacing[1],
            row + (-dy if flip_ud else dy) / header.pixel_spacing[0])


def to_patch(header, col: float, row: float, col_t: float, row_t: float) -> tuple[float, float]:
    """The inverse of `from_patch`: where (col_t, row_t) lies in the patch around (col, row)."""
    from hubkit.dataset_builder.pixels import flips

    flip_lr, flip_ud = flips(header)
    dx, dy = (col_t - col) * header.pixel_spacing[1], (row_t - row) * header.pixel_spacing[0]
    return ((-dx if flip_lr else dx) + net.FINE / 2.0 - 0.5, (-dy if flip_ud else dy) + net.FINE / 2.0 - 0.5)


def _largest(candidates: list):
    return max(candidates, key=lambda s: (len(s.files), s.series_id), default=None)


def _row(series, header, condition: str, level: str, col: float, row: float) -> dict:
    """A point in train_label_coordinates.csv's typed form (`rsna_csv.read_coordinates`'), as the crops picker
    and the out-of-fold file take it."""
    return {"series_id": str(series.series_id), "instance_number": int(header.instance_number),
            "condition": CONDITION_TITLES[condition], "level": LEVEL_TITLES[level], "x": round(col, 3),
            "y": round(row, 3)}


def _axial_rows(axials: list, canal_world: Mapping[str, np.ndarray], notes: list[str],
                foramina: Mapping | None = None, from_foramen: list[float] | None = None) -> list[dict]:
    """Each placed level's recesses projected into the axial series (see the module docstring). A recess is put
    where training found it from its side's foramen (`from_foramen`, medial-positive x: the foramen is the point
    placed most surely), else beside its level's canal point in the disc's own frame (the spine's direction there
    from the neighbouring canal points: a recess lies 6 mm anterior of the canal along the disc, not along the
    axial slice, which may be tilted against it). Both recesses of a level go on one slice, the axial slice whose
    plane is nearest their midpoint, as an annotator reads them and as the crop shows them (centred between the two
    on one slice): each side's own nearest slice split 12% of the held-out levels across two neighbouring slices
    (BENCHMARKS.md 9d)."""
    out, foramina = [], foramina or {}
    for lv in LEVELS:
        points = {}
        for _, f, condition, sign in SIDES:
            if from_foramen is not None and (f, lv) in foramina:
                dx, dy, dz = from_foramen
                points[condition] = foramina[f, lv] + np.array([-sign * dx, dy, dz])
            elif lv in canal_world:
                points[condition] = (canal_world[lv] + sign * RECESS_SIDE_MM * np.array([1.0, 0.0, 0.0])
                                     - RECESS_ANTERIOR_MM * spine_frame(lv, canal_world)[1])
        if not points:
            continue
        shared = _nearest_axial(axials, np.mean(list(points.values()), axis=0))
        for condition, q in points.items():
            best = shared or _nearest_axial(axials, q)  # a level's end that only one side's plane reaches
            if best is None:
                notes.append(f"{LEVEL_TITLES[lv]}: no axial slice reaches the {CONDITION_TITLES[condition].lower()}"
                             " (no axial crop)")
                continue
            col, row, _ = world_to_pixel(q, best[1])
            out.append(_row(best[0], best[1], condition, lv, col, row))
    return out


def _nearest_axial(axials: list, q: np.ndarray):
    """(series, header) of the axial slice whose plane is nearest `q`, among those within reach of it (three
    quarters of the series' spacing, at least 3 mm) whose field of view holds it; None when none does."""
    best = None
    for s in axials:
        spacing = float(np.median(np.abs(np.diff(s.positions())))) if len(s.slices) > 1 else 4.0
        for h in s.slices:
            col, row, dist = world_to_pixel(q, h)
            inside = -0.5 <= col <= h.columns - 0.5 and -0.5 <= row <= h.rows - 0.5
            if inside and abs(dist) <= max(0.75 * spacing, 3.0) and (best is None or abs(dist) < best[0]):
                best = (abs(dist), s, h)
    return None if best is None else best[1:]


def spine_frame(level: str, points: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(down, posterior) at `level`: unit vectors along the spine towards the next level down (from the neighbouring
    levels' `points`, patient -z when none is there) and towards posterior in the disc's plane (patient +y made
    perpendicular to it). Training (`fit.geometry_priors`) and locating measure offsets in this one frame."""
    i = LEVELS.index(level)
    here = points.get(level)
    above = points.get(LEVELS[i - 1]) if i > 0 else None
    below = points.get(LEVELS[i + 1]) if i + 1 < len(LEVELS) else None
    top, bottom = (above if above is not None else here), (below if below is not None else here)
    y, t = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    if top is not None and bottom is not None and top is not bottom:
        d = np.asarray(bottom, float) - np.asarray(top, float)
        if float(np.linalg.norm(d)) > 1e-6:
            t = d / float(np.linalg.norm(d))
    ap = y - (y @ t) * t
    return t, ap / max(float(np.linalg.norm(ap)), 1e-6)
