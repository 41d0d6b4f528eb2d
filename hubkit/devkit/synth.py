"""Synthetic RSNA 2024 lumbar-spine cohort: real DICOM files + the three CSVs, in the exact Kaggle layout.

Why: the real imagery cannot be redistributed or used in CI, so every stage (reader, slice picker, dataset build,
fine-tune, evaluation) is exercised on a cohort whose labels are *visible in the pixels*: each grade changes the
radius of a bright structure (canal CSF on T2, foraminal fat on T1, subarticular recess CSF on the axial T2).

    >>> from hubkit.devkit.synth import synth_cohort
    >>> root = synth_cohort("/tmp/rsna-synth", studies=20, seed=0)   # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())                        # doctest: +SKIP
    ['train.csv', 'train_images', 'train_label_coordinates.csv', 'train_series_descriptions.csv']

Geometry (DICOM LPS, mm): +x = patient left, +y = posterior, +z = superior; the spine runs along z. Discs at
z = +80 (L1L2) ... -80 (L5S1) (+ per-disc jitter <= 1 mm and a study z offset <= 2 mm, `POSE`), bodies/discs radius
18 at (x, y) = (0, 0), canal tube at (0, 28) radius 8, foramina at x = +-18 (left = +18), y = 22, radius 8,
subarticular recesses at x = +-10, y = 22, radius 6; each narrowing spans +-8..14 mm around its disc (`WINDOW_MM`).
Each pixel is the phantom evaluated at P = IPP + col*PixelSpacing[1]*IOP[:3] + row*PixelSpacing[0]*IOP[3:].
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID

from hubkit.manifest import SYNTH_MARKER
from hubkit.schema import (CONDITION_TITLES, CONDITIONS, LABEL_COLUMNS, LEVEL_TITLES, LEVELS, SEVERITY_NAMES, SeriesKind,
                           label_column)

__all__ = ["synth_cohort", "RATES", "DISC_Z", "SYNTH_MARKER"]

DISC_Z: dict[str, float] = {"L1L2": 80.0, "L2L3": 40.0, "L3L4": 0.0, "L4L5": -40.0, "L5S1": -80.0}
T12L1_Z = 120.0  # an unlabelled extra disc so level counting from either end is anatomically plausible
CANAL_Y, FOR_X, FOR_Y, REC_X, REC_Y = 28.0, 18.0, 22.0, 10.0, 22.0
# Radius (mm) per grade N/M/S. Canal narrows from anterior (disc bulge); foramen/recess shrink concentrically.
RADII = {"canal": (8.0, 4.5, 1.5), "foramen": (8.0, 4.5, 1.5), "recess": (6.0, 3.5, 1.0)}
# Per-level class mix (N, M, S): overall ~85/11/4 with severe concentrated at L4L5/L5S1 like RSNA.
LEVEL_PROBS = {"L1L2": (0.94, 0.05, 0.01), "L2L3": (0.91, 0.07, 0.02), "L3L4": (0.86, 0.11, 0.03),
               "L4L5": (0.72, 0.19, 0.09), "L5S1": (0.82, 0.13, 0.05)}
# Probabilities of the acquisition quirks a real reader must survive; override any via synth_cohort(rates=...).
RATES = {"angled_axial": 0.3, "two_axial": 0.1, "missing_series": 0.03, "unordered": 0.4, "nan_study": 0.03}
WINDOW_MM = (8.0, 14.0)  # narrowing at full strength within +-8 mm of the disc centre, gone at +-14 mm
MATRICES = (384, 448, 512, 576, 640)
# Pose and field of view (mm): sagittal centre y range and z jitter, axial centre y range, study z offset, per-disc
# jitter, sagittal and axial fields of view. Tight on purpose: the tiny CPU model sees each slice at 128 px in 16
# tokens and must generalise from a few hundred studies, which it does only when a grade lands on about the same
# pixels in every study (a wider spread left validation kappa at chance: BENCHMARKS.md 4).
POSE = {"sag_y": (9.0, 11.0), "sag_z": 1.0, "ax_y": (6.5, 8.5), "z0": 2.0, "disc": 1.0,
        "sag_fov": (190.0, 205.0), "ax_fov": (140.0, 160.0)}
# RepetitionTime / EchoTime (ms) written into each series, typical of a 1.5 T lumbar protocol: they let a reader
# tell T1 from T2 where a description is missing (hubkit.dataset_builder.series).
TIMES = {"t1": ("600", "10"), "t2": ("3500", "100")}
RENDER_FACTOR = 4  # render at matrix/4 then bilinear-upsample: ~16x cheaper, structures are >= 2 mm anyway
# Tissue intensities (T1, T2) on a 12-bit scale: T1 fat bright / CSF dark, T2 CSF bright.
TISSUE = {"air": (30, 30), "subq": (2500, 1700), "soft": (900, 650), "bone": (1300, 800), "marrow": (1700, 1000),
          "disc": (900, 1900), "csf": (450, 2600), "fat": (2800, 1600), "block": (350, 300)}
SAG_T1, SAG_T2, AX_T2 = SeriesKind.SAG_T1.value, SeriesKind.SAG_T2.value, SeriesKind.AX_T2.value


def _q(v):
    """Round like the DS strings we write (6 significant digits) so pixels and headers agree exactly."""
    return np.vectorize(lambda a: float(f"{a:.6g}"))(np.asarray(v, dtype=float))


@dataclass
class _Study:
    study_id: int
    disc_z: np.ndarray  # (6,) L1L2..L5S1 then T12L1
    radius: dict[str, np.ndarray]  # condition -> (6,) radius in mm at each disc (T12L1 normal)
    grades: dict[str, str | None]  # label column -> severity name or None (NaN)


@dataclass
class _Series:
    series_id: int
    description: str
    t2: bool
    rows: int
    cols: int
    ps: float
    thickness: float
    spacing: float
    ipp: np.ndarray  # (S, 3)
    rdir: np.ndarray  # (S, 3) IOP[0:3], direction of increasing column
    cdir: np.ndarray  # (S, 3) IOP[3:6], direction of increasing row
    inst: np.ndarray  # (S,) InstanceNumber of each slice

    def project(self, p: np.ndarray) -> tuple[int, float, float]:
        """Nearest slice to patient point p and p's (x=col, y=row) pixel coordinates in it."""
        n = np.cross(self.rdir, self.cdir)
        k = int(np.argmin(np.abs(np.einsum("sj,sj->s", p - self.ipp, n))))
        d = p - self.ipp[k]
        return k, float(d @ self.rdir[k] / self.ps), float(d @ self.cdir[k] / self.ps)


def _window(dz: np.ndarray) -> np.ndarray:
    """1 within +-full mm of the disc, cosine ramp to 0 at +-zero: the narrowing spans the disc height."""
    full, zero = WINDOW_MM
    a = np.clip((np.abs(dz) - full) / (zero - full), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * a))


def _phantom(p: np.ndarray, st: _Study, t2: bool) -> np.ndarray:
    """Intensity at patient points p (N, 3); painted back to front so the labelled structures win."""
    T = {k: np.float32(v[int(t2)]) for k, v in TISSUE.items()}
    x, y = p[:, 0], p[:, 1]
    img = np.full(x.shape, T["air"], np.float32)
    e = (x / 160.0) ** 2 + ((y + 25.0) / 115.0) ** 2
    img[e < 1.0] = T["subq"]
    img[e < 0.8] = T["soft"]
    # Everything below lives in |x| <= 26, -19 <= y <= 72: evaluate it only there (most of the image lies outside,
    # so most of the per-study work is skipped).
    near = (np.abs(x) <= 26.5) & (y >= -19.0) & (y <= 72.5)
    img[near] = _spine(p[near], st, T, img[near])
    return img


def _spine(p: np.ndarray, st: _Study, T: dict, img: np.ndarray) -> np.ndarray:
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    arch = ((ax <= 26) & (y >= 14) & (y <= 48)) | ((ax <= 5) & (y > 48) & (y <= 72))  # pedicles/facets/laminae/spinous
    img[arch] = T["bone"]
    rxy = np.hypot(x, y)
    img[rxy <= 18.0] = T["marrow"]
    dzs = z[:, None] - st.disc_z[None, :]
    k = np.argmin(np.abs(dzs), axis=1)
    dz = np.take_along_axis(dzs, k[:, None], axis=1)[:, 0]
    img[(rxy <= 18.5) & (np.abs(dz) <= 4.0)] = T["disc"]
    left = x > 0
    w = _window(dz)
    # Subarticular recess: z-cylinder at (+-10, 22) near each disc, lumen shrinks with the grade.
    d = np.hypot(ax - REC_X, y - REC_Y)
    r_lab = np.where(left, st.radius["ls"][k], st.radius["rs"][k])
    r = RADII["recess"][0] - (RADII["recess"][0] - r_lab) * w
    nom = (d <= RADII["recess"][0]) & (np.abs(dz) <= 10.0)
    img[nom] = T["block"]
    img[nom & (d <= r)] = T["csf"]
    # Neural foramen: x-tube (|x| 14..26) of fat around (y=22, z=disc), concentric narrowing.
    d = np.hypot(y - FOR_Y, dz)
    r_lab = np.where(left, st.radius["lf"][k], st.radius["rf"][k])
    nom = (ax >= 14.0) & (ax <= 26.0) & (d <= RADII["foramen"][0])
    img[nom] = T["block"]
    img[nom & (d <= r_lab)] = T["fat"]
    # Spinal canal: CSF tube at (0, 28); at a stenotic disc a dark bulge fills it from anterior (posterior wall fixed).
    r0 = RADII["canal"][0]
    r = r0 - (r0 - st.radius["canal"][k]) * w
    nom = np.hypot(x, y - CANAL_Y) <= r0
    img[nom] = T["block"]
    img[nom & (np.hypot(x, y - (CANAL_Y + r0 - r)) <= r)] = T["csf"]
    return img


def _render(ser: _Series, st: _Study, rng: np.random.Generator) -> np.ndarray:
    """(S, rows, cols) uint16: phantom at low-res pixel centres + bias field + noise, bilinear-upsampled."""
    f = RENDER_FACTOR
    h, w = ser.rows // f, ser.cols // f
    c = ((np.arange(w) + 0.5) * f - 0.5) * ser.ps  # hi-res index of each low-res pixel centre, in mm
    r = ((np.arange(h) + 0.5) * f - 0.5) * ser.ps
    p = (ser.ipp[:, None, None, :] + c[None, None, :, None] * ser.rdir[:, None, None, :]
         + r[None, :, None, None] * ser.cdir[:, None, None, :]).reshape(-1, 3)
    img = _phantom(p, st, ser.t2)
    u = rng.normal(size=3)
    bias = 1.0 + rng.uniform(0.08, 0.15) * np.sin(2 * np.pi * (p @ (u / np.linalg.norm(u))) / rng.uniform(300, 500)
                                                  + rng.uniform(0, 2 * np.pi))
    img = img * bias * rng.uniform(0.85, 1.15) + rng.normal(0.0, rng.uniform(40, 80), img.shape)
    # Clip and add 0.5 at low res: bilinear keeps values in range, so the uint16 store below rounds correctly.
    lo = (np.clip(img, 0, 4095) + 0.5).reshape(len(ser.ipp), h, w).astype(np.float32)
    out = np.empty((len(lo), ser.rows, ser.cols), np.uint16)
    for i, s in enumerate(lo):
        out[i] = Image.fromarray(s, mode="F").resize((ser.cols, ser.rows), Image.BILINEAR)
    return out


def _matrix(rng) -> tuple[int, int]:
    rows = int(rng.choice(MATRICES))
    return rows, (rows if rng.random() < 0.5 else int(rng.choice(MATRICES)))


def _order(rng, n: int, p_unordered: float) -> np.ndarray:
    """InstanceNumbers of slices listed in ascending normal order: in order, reversed or shuffled."""
    inst = np.arange(1, n + 1)
    if rng.random() < p_unordered:
        return inst[::-1].copy() if rng.random() < 0.5 else rng.permutation(inst)
    return inst


def _sagittal(rng, sid, desc, t2, z0, rates) -> _Series:
    rows, cols = _matrix(rng)
    ps = float(_q(rng.uniform(*POSE["sag_fov"]) / rows))
    s = float(rng.choice([4.0, 4.5, 5.0]))
    n = 1 + 2 * round(36 / s)  # odd count => a slice near x=0 and slices within ~2.5 mm of x=+-18
    xs = ((np.arange(n) - (n - 1) / 2) * s + rng.uniform(-1, 1))[::-1]  # ascending normal (-x) order
    rdir, cdir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    centre = np.stack([xs, np.full(n, rng.uniform(*POSE["sag_y"])),
                       np.full(n, z0 + rng.uniform(-POSE["sag_z"], POSE["sag_z"]))], 1)
    ipp = _q(centre - (cols - 1) / 2 * ps * rdir - (rows - 1) / 2 * ps * cdir)
    return _Series(sid, desc, t2, rows, cols, ps, s - 0.5, s, ipp, np.tile(rdir, (n, 1)), np.tile(cdir, (n, 1)),
                   _order(rng, n, rates["unordered"]))


def _axial(rng, sid, st, z0, rates) -> _Series:
    rows, cols = _matrix(rng)
    ps = float(_q(rng.uniform(*POSE["ax_fov"]) / cols))
    yc = rng.uniform(*POSE["ax_y"])
    if rng.random() < rates["angled_axial"]:  # one tilted 3-5 slice block per disc, all in one series
        s, cen, rd, cd = 4.0, [], [], []
        for z in st.disc_z[:5]:
            a = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(5, 15))
            col = _q([0.0, np.cos(a), np.sin(a)])
            nrm = np.array([0.0, -np.sin(a), np.cos(a)])
            m = int(rng.integers(3, 6))
            # Centre the block on the disc at the canal/recess depth (y=24) so its middle slice hits the labels.
            for t in (np.arange(m) - (m - 1) / 2) * s:
                cen.append(np.array([0.0, 24.0, z]) + t * nrm + (yc - 24.0) * col)
                rd.append([1.0, 0.0, 0.0])
                cd.append(col)
        cen, rd, cd = np.array(cen), np.array(rd), np.array(cd)
        n, thick = len(cen), 3.5
    else:  # continuous stack z ~ +100..-100, ascending normal (+z) order
        n = int(rng.integers(34, 51))
        ext = rng.uniform(196, 210)
        s = ext / (n - 1)
        zs = z0 + rng.uniform(-3, 3) + np.linspace(-ext / 2, ext / 2, n)
        cen = np.stack([np.zeros(n), np.full(n, yc), zs], 1)
        rd, cd = np.tile([1.0, 0.0, 0.0], (n, 1)), np.tile([0.0, 1.0, 0.0], (n, 1))
        thick = min(4.0, s)
    ipp = _q(cen - (cols - 1) / 2 * ps * rd - (rows - 1) / 2 * ps * cd)
    return _Series(sid, AX_T2, True, rows, cols, ps, float(_q(thick)), float(_q(s)), ipp, rd, cd,
                   _order(rng, n, rates["unordered"]))


def _labels(rng, label_probs, rates) -> dict[str, int | None]:
    sev: dict[str, int | None] = {}
    for c in CONDITIONS:
        for lv in LEVELS:
            sev[label_column(c, lv)] = int(rng.choice(3, p=label_probs or LEVEL_PROBS[lv]))
    if rng.random() < rates["nan_study"]:  # RSNA: a few studies miss 1-3 labels, mostly subarticular
        sub = [col for col in LABEL_COLUMNS if "subarticular" in col]
        for _ in range(int(rng.integers(1, 4))):
            sev[str(rng.choice(sub if rng.random() < 0.8 else LABEL_COLUMNS))] = None
    return sev


def _write_series(root: pathlib.Path, st: _Study, ser: _Series, number: int, pix: np.ndarray, birth: str) -> None:
    out = root / str(st.study_id) / str(ser.series_id)
    out.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.Modality = MRImageStorage, "MR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"SYNTH^PATIENT{st.study_id}", str(st.study_id), birth
    ds.StudyInstanceUID = str(st.study_id)  # RSNA-style anonymised UIDs
    ds.SeriesInstanceUID = f"{st.study_id}.{ser.series_id}"
    ds.SeriesDescription, ds.SeriesNumber = ser.description, number
    ds.RepetitionTime, ds.EchoTime = TIMES["t2" if ser.t2 else "t1"]
    ds.Rows, ds.Columns = ser.rows, ser.cols
    ds.PixelSpacing = [f"{ser.ps:.6g}"] * 2
    ds.SliceThickness, ds.SpacingBetweenSlices = f"{ser.thickness:.6g}", f"{ser.spacing:.6g}"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    lo, hi = np.percentile(pix[:, ::8, ::8], [1, 99])
    ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:.0f}", f"{max(hi - lo, 1):.0f}"
    for k in range(len(ser.ipp)):
        ds.InstanceNumber = int(ser.inst[k])
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = f"{st.study_id}.{number}.{int(ser.inst[k])}"
        ds.ImagePositionPatient = [f"{v:.6g}" for v in ser.ipp[k]]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in np.concatenate([ser.rdir[k], ser.cdir[k]])]
        ds.PixelData = pix[k].tobytes()
        ds.save_as(out / f"{int(ser.inst[k])}.dcm", enforce_file_format=True)


def _id_draws(studies: int, seed: int) -> list[int]:
    """How many draws each study's id takes: 7-10 digits like RSNA, redrawn on a clash with an earlier study."""
    used, out = set(), []
    for i in range(studies):
        rng = np.random.default_rng([seed, i])  # per-study stream: same seed => same bytes
        draws, sid = 1, int(10 ** rng.uniform(6.0, 9.6))
        while sid in used:
            draws, sid = draws + 1, int(10 ** rng.uniform(6.0, 9.6))
        used.add(sid)
        out.append(draws)
    return out


def _study(i: int, draws: int, seed: int, root, label_probs, rates) -> tuple[dict, list, list]:
    rng = np.random.default_rng([seed, i])
    for _ in range(draws):  # replay the id draws of `_id_draws` so the rest of the stream is the same
        sid = int(10 ** rng.uniform(6.0, 9.6))
    z0 = rng.uniform(-POSE["z0"], POSE["z0"])
    disc_z = np.array([DISC_Z[lv] for lv in LEVELS] + [T12L1_Z]) + z0 + rng.uniform(-POSE["disc"], POSE["disc"], 6)
    sev = _labels(rng, label_probs, rates)
    radius = {}
    for c in CONDITIONS:
        base = RADII["canal" if c == "canal" else "foramen" if c in ("lf", "rf") else "recess"]
        # NaN labels still need pixels: draw a hidden grade (N mostly) so the image stays plausible.
        g = [sev[label_column(c, lv)] if sev[label_column(c, lv)] is not None else int(rng.choice(3, p=(.85, .12, .03)))
             for lv in LEVELS]
        radius[c] = np.array([base[j] * rng.uniform(0.9, 1.1) for j in g] + [base[0]])
    st = _Study(sid, disc_z, radius, {k: (None if v is None else SEVERITY_NAMES[v]) for k, v in sev.items()})
    sids = iter(dict.fromkeys(int(10 ** v) for v in rng.uniform(6.0, 9.6, 8)))  # unique within the study
    series = [_sagittal(rng, next(sids), SAG_T1, False, z0, rates), _sagittal(rng, next(sids), SAG_T2, True, z0, rates),
              _axial(rng, next(sids), st, z0, rates)]
    if rng.random() < rates["two_axial"]:
        series.append(_axial(rng, next(sids), st, z0, rates))
    if rng.random() < rates["missing_series"]:
        series.pop(int(rng.integers(0, 2)))  # like RSNA: a Sag T1 or Sag T2 is missing, never the axial
    birth = f"19{rng.integers(30, 90)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    for num, ser in enumerate(series, 1):
        _write_series(root, st, ser, num, _render(ser, st, rng), birth)
    # Coordinates: canal on the midline Sag T2, foramina on the parasagittal Sag T1, recesses on the first axial.
    first = {}
    for ser in series:
        first.setdefault(ser.description, ser)
    where = {"canal": (SAG_T2, 0.0, CANAL_Y), "lf": (SAG_T1, FOR_X, FOR_Y), "rf": (SAG_T1, -FOR_X, FOR_Y),
             "ls": (AX_T2, REC_X, REC_Y), "rs": (AX_T2, -REC_X, REC_Y)}
    coords = []
    for c in CONDITIONS:
        desc, px, py = where[c]
        if desc not in first:
            continue
        for j, lv in enumerate(LEVELS):
            if st.grades[label_column(c, lv)] is None:
                continue
            ser = first[desc]
            k, cx, cy = ser.project(np.array([px, py, disc_z[j]]))
            coords.append((sid, ser.series_id, int(ser.inst[k]), CONDITION_TITLES[c], LEVEL_TITLES[lv],
                           round(cx, 3), round(cy, 3)))
    row = {"study_id": sid, **st.grades}
    return row, [(sid, s.series_id, s.description) for s in series], coords


def synth_cohort(out_dir, studies: int, seed: int = 0, progress: bool = True, *,
                 label_probs: Sequence[float] | None = None, rates: Mapping[str, float] | None = None,
                 num_proc: int = 1) -> pathlib.Path:
    """Write `studies` synthetic studies in the RSNA 2024 layout under `out_dir`; returns `out_dir` as a Path.

    `label_probs` = (pN, pM, pS) replaces the RSNA-like per-level class mix for every label (tests use it to get
    many Severe cases); `rates` overrides entries of `RATES` (e.g. {"missing_series": 1.0}); `num_proc` worker
    processes render studies in parallel (same bytes as one process: each study has its own random stream).
    """
    import functools

    from hubkit._imports import require_train

    require_train("hubkit synth")
    root = pathlib.Path(out_dir)
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    r = {**RATES, **(rates or {})}
    probs = tuple(float(v) for v in label_probs) if label_probs is not None else None
    draws = _id_draws(studies, seed)
    one = functools.partial(_study, seed=seed, root=root / "train_images", label_probs=probs, rates=r)
    pool = None
    if num_proc > 1 and studies > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(min(num_proc, studies))
        results = pool.map(one, range(studies), draws)
    else:
        results = map(one, range(studies), draws)
    if progress:
        from tqdm.auto import tqdm
        results = tqdm(results, total=studies, desc="synth studies", unit="study")
    rows, series, coords = [], [], []
    try:
        for row, ser, co in results:
            rows.append(row)
            series += ser
            coords += co
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    import pandas as pd

    train = pd.DataFrame(rows, columns=["study_id", *LABEL_COLUMNS]).sort_values("study_id")
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame(series, columns=["study_id", "series_id", "series_description"]).to_csv(
        root / "train_series_descriptions.csv", index=False)
    pd.DataFrame(coords, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]).to_csv(
        root / "train_label_coordinates.csv", index=False)
    # Marks the folder as synthetic so dataset and model cards can say so (never guessed from the data).
    (root / SYNTH_MARKER).write_text(json.dumps({"generator": "hubkit synth", "studies": studies, "seed": seed}) + "\n")
    return root
