"""Synthetic RSNA 2024 lumbar-spine cohort: real DICOM files + the three CSVs, in the exact Kaggle layout.

Why: the real imagery cannot be redistributed or used in CI, so every stage (reader, slice picker, dataset build,
fine-tune, evaluation) is exercised on a cohort whose labels are *visible in the pixels*: each grade changes the
radius of a bright structure (canal CSF on T2, foraminal fat on T1, subarticular recess CSF on the axial T2).

    >>> from hubkit.devkit.synth import synth_cohort
    >>> root = synth_cohort("/tmp/rsna-synth", studies=20, seed=0)   # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())                        # doctest: +SKIP
    ['train.csv', 'train_images', 'train_label_coordinates.csv', 'train_series_descriptions.csv']

Geometry (DICOM LPS, mm): +x = patient left, +y = posterior, +z = superior. The anatomy is painted in each disc's
own frame (`hubkit.devkit.phantom`): bodies/discs radius 18 at the disc centre, canal tube 28 mm posterior radius
8, foramina 18 mm to each side (left = +x) 22 mm posterior radius 8, subarticular recesses ±10 mm, 22 mm posterior,
radius 6, each narrowing within ±8..14 mm of its disc. The pose (`hubkit.devkit.acquisition`) places the discs:
`tight` (the default) upright on the z axis at z = +80 (L1L2) ... -80 (L5S1) within a few millimetres, `realistic`
translated, spaced and tilted along a lordotic curve, seen through varied fields of view and axial blocks or stacks.
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
from hubkit.slots import series_of_condition

from .acquisition import DISC_Z as TIGHT_DISC_Z
from .acquisition import POSES, TIGHT, SeriesGeometry, axial, sagittal, spine_of
from .phantom import RADII, Spine, intensity

__all__ = ["synth_cohort", "spines_of", "RATES", "DISC_Z", "SYNTH_MARKER", "POSES"]

# The tight pose's disc heights (mm, before a study's few-millimetre offset), by level.
DISC_Z: dict[str, float] = dict(zip(LEVELS, TIGHT_DISC_Z[:5]))
# Per-level class mix (N, M, S): overall ~85/11/4 with severe concentrated at L4L5/L5S1 like RSNA.
LEVEL_PROBS = {"L1L2": (0.94, 0.05, 0.01), "L2L3": (0.91, 0.07, 0.02), "L3L4": (0.86, 0.11, 0.03),
               "L4L5": (0.72, 0.19, 0.09), "L5S1": (0.82, 0.13, 0.05)}
# Probabilities of the acquisition quirks a real reader must survive; override any via synth_cohort(rates=...).
RATES = {"angled_axial": 0.3, "two_axial": 0.1, "missing_series": 0.03, "unordered": 0.4, "nan_study": 0.03}
# The study poses (`hubkit.devkit.acquisition`: "tight", the default, and "realistic").
POSE = TIGHT
# RepetitionTime / EchoTime (ms) written into each series, typical of a 1.5 T lumbar protocol: they let a reader
# tell T1 from T2 where a description is missing (hubkit.dataset_builder.series).
TIMES = {"t1": ("600", "10"), "t2": ("3500", "100")}
RENDER_FACTOR = 4  # render at matrix/4 then bilinear-upsample: ~16x cheaper, structures are >= 2 mm anyway
SAG_T1, SAG_T2, AX_T2 = SeriesKind.SAG_T1.value, SeriesKind.SAG_T2.value, SeriesKind.AX_T2.value


@dataclass
class _Study:
    study_id: int
    spine: Spine  # the discs L1L2..L5S1 then T12L1, where the pose put them
    radius: dict[str, np.ndarray]  # condition -> (6,) radius in mm at each disc (T12L1 normal)
    grades: dict[str, str | None]  # label column -> severity name or None (NaN)


def _render(ser: SeriesGeometry, st: _Study, rng: np.random.Generator) -> np.ndarray:
    """(S, rows, cols) uint16: phantom at low-res pixel centres + bias field + noise, bilinear-upsampled."""
    f = RENDER_FACTOR
    h, w = ser.rows // f, ser.cols // f
    c = ((np.arange(w) + 0.5) * f - 0.5) * ser.ps  # hi-res index of each low-res pixel centre, in mm
    r = ((np.arange(h) + 0.5) * f - 0.5) * ser.ps
    p = (ser.ipp[:, None, None, :] + c[None, None, :, None] * ser.rdir[:, None, None, :]
         + r[None, :, None, None] * ser.cdir[:, None, None, :]).reshape(-1, 3)
    img = intensity(p, st.spine, st.radius, ser.t2)
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


def _write_series(root: pathlib.Path, st: _Study, ser: SeriesGeometry, number: int, pix: np.ndarray,
                  birth: str) -> None:
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


def _study_start(i: int, draws: int, seed: int, pose: str):
    """(the study's random stream, its id, its spine, z offset): the first draws of study i, which `_study` renders
    from and `spines_of` replays (one sequence, so the two cannot drift apart)."""
    rng = np.random.default_rng([seed, i])
    for _ in range(draws):  # replay the id draws of `_id_draws` so the rest of the stream is the same
        sid = int(10 ** rng.uniform(6.0, 9.6))
    return (rng, sid, *spine_of(rng, pose))


def _study(i: int, draws: int, seed: int, root, label_probs, rates, pose: str = "tight") -> tuple[dict, list, list]:
    rng, sid, spine, z0 = _study_start(i, draws, seed, pose)
    sev = _labels(rng, label_probs, rates)
    radius = {}
    for c in CONDITIONS:
        base = RADII["canal" if c == "canal" else "foramen" if c in ("lf", "rf") else "recess"]
        # NaN labels still need pixels: draw a hidden grade (N mostly) so the image stays plausible.
        g = [sev[label_column(c, lv)] if sev[label_column(c, lv)] is not None else int(rng.choice(3, p=(.85, .12, .03)))
             for lv in LEVELS]
        radius[c] = np.array([base[j] * rng.uniform(0.9, 1.1) for j in g] + [base[0]])
    st = _Study(sid, spine, radius, {k: (None if v is None else SEVERITY_NAMES[v]) for k, v in sev.items()})
    sids = iter(dict.fromkeys(int(10 ** v) for v in rng.uniform(6.0, 9.6, 8)))  # unique within the study
    series = [sagittal(rng, next(sids), SAG_T1, False, spine, z0, pose, rates),
              sagittal(rng, next(sids), SAG_T2, True, spine, z0, pose, rates),
              axial(rng, next(sids), spine, z0, pose, rates)]
    if rng.random() < rates["two_axial"]:
        series.append(axial(rng, next(sids), spine, z0, pose, rates))
    if rng.random() < rates["missing_series"]:
        series.pop(int(rng.integers(0, 2)))  # like RSNA: a Sag T1 or Sag T2 is missing, never the axial
    birth = f"19{rng.integers(30, 90)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    for num, ser in enumerate(series, 1):
        _write_series(root, st, ser, num, _render(ser, st, rng), birth)
    return {"study_id": sid, **st.grades}, [(sid, s.series_id, s.description) for s in series], \
        _coordinates(st, series, pose)


def _coordinates(st: _Study, series: list[SeriesGeometry], pose: str) -> list[tuple]:
    """The study's rows of train_label_coordinates.csv: each labelled structure's centre (`phantom.LANDMARKS`, where
    the pose put it) on the nearest slice of the first series of the kind the slot table shows it on (canal: the
    sagittal T2; foramina: the sagittal T1; recesses: the axial T2). A realistic axial series that does not reach a
    level (its blocks or its stack stop short of it) gives that level no axial point, as in RSNA."""
    first: dict[str, SeriesGeometry] = {}
    for ser in series:
        first.setdefault(ser.description, ser)
    out = []
    for c in CONDITIONS:
        ser = first.get(series_of_condition(c).value)
        if ser is None:
            continue
        for j, lv in enumerate(LEVELS):
            if st.grades[label_column(c, lv)] is None:
                continue
            k, cx, cy, dist = ser.project(st.spine.landmark(c, j))
            if pose != "tight" and dist > 0.75 * ser.spacing:
                continue
            out.append((st.study_id, ser.series_id, int(ser.inst[k]), CONDITION_TITLES[c], LEVEL_TITLES[lv],
                        round(cx, 3), round(cy, 3)))
    return out


def spines_of(cohort) -> dict[str, Spine]:
    """{study_id: where its discs are}, the phantom's truth behind a cohort `synth_cohort` wrote (its marker file
    names the seed, the count and the pose; each study's stream is replayed up to its spine, nothing rendered):
    what benchmarks measure a localiser's slices against (`bench/localizer_truth.py`)."""
    meta = json.loads((pathlib.Path(cohort) / SYNTH_MARKER).read_text())
    out = {}
    for i, draws in enumerate(_id_draws(meta["studies"], meta["seed"])):
        _, sid, spine, _ = _study_start(i, draws, meta["seed"], meta.get("pose", "tight"))
        out[str(sid)] = spine
    return out


def synth_cohort(out_dir, studies: int, seed: int = 0, progress: bool = True, *,
                 label_probs: Sequence[float] | None = None, rates: Mapping[str, float] | None = None,
                 num_proc: int = 1, pose: str = "tight") -> pathlib.Path:
    """Write `studies` synthetic studies in the RSNA 2024 layout under `out_dir`; returns `out_dir` as a Path.

    `pose`: "tight" (every spine at about the same place) or "realistic" (`hubkit.devkit.acquisition`).

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
    if pose not in POSES:
        raise ValueError(f"pose must be one of {sorted(POSES)}, got {pose!r}")
    one = functools.partial(_study, seed=seed, root=root / "train_images", label_probs=probs, rates=r, pose=pose)
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
    (root / SYNTH_MARKER).write_text(json.dumps({"generator": "hubkit synth", "studies": studies, "seed": seed,
                                                 "pose": pose}) + "\n")
    return root
