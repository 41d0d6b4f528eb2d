"""Where a synthetic study's series lie (`hubkit synth`): the spine's pose in the patient, each series' field of view,
slices and orientation. Two poses:

- `tight` (the default until crops beat whole slices on the demo): every spine upright at the same place, fields of
  view and slice positions within a few millimetres, so a grade lands on about the same pixels in every study: the
  tiny CPU model learns whole slices only so (a wider spread left validation kappa at chance: BENCHMARKS.md 4).
- `realistic`: as patients and technologists vary: the spine translated by tens of millimetres in every axis, disc
  spacing varying per study and per level, a lordotic curve (discs neither on one vertical line nor parallel, tilts up
  to about ±20°), sagittal fields of view of 240–320 mm and axial of 150–220 mm, axial series as 3–5 blocks each
  angled to its disc or one straight stack whose ends fall anywhere from T12 to S1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubkit.schema import SeriesKind

from .phantom import Spine

__all__ = ["POSES", "SeriesGeometry", "q", "spine_of", "sagittal", "axial"]

MATRICES = (384, 448, 512, 576, 640)
AX_T2 = SeriesKind.AX_T2.value
DISC_Z = (80.0, 40.0, 0.0, -40.0, -80.0, 120.0)  # tight: L1L2..L5S1 then T12L1 (mm, before the study's offset)
# Tight: sagittal centre y range and z jitter, axial centre y range, study z offset, per-disc jitter, sagittal and
# axial fields of view.
TIGHT = {"sag_y": (9.0, 11.0), "sag_z": 1.0, "ax_y": (6.5, 8.5), "z0": 2.0, "disc": 1.0,
         "sag_fov": (190.0, 205.0), "ax_fov": (140.0, 160.0)}
# Realistic: the spine's translation (x, y, z max, mm), disc spacing per study (mm) and per level (± share), the
# lordosis (a per-study share of BASE_TILT) and pitch (± degrees), fields of view, how far a field of view's centre
# strays from the spine (mm), and the sagittal slab's offset from the midline.
REALISTIC = {"shift": (25.0, 30.0, 40.0), "spacing": (32.0, 46.0), "level_spacing": 0.1, "lordosis": (0.4, 1.0),
             "pitch": 6.0, "sag_fov": (240.0, 320.0), "ax_fov": (150.0, 220.0), "sag_offset": 40.0,
             "ax_offset": 15.0, "slab_x": 4.0}
# Tilt (degrees, towards posterior) of L1L2..L5S1 then T12L1 at full lordosis: the middle of the curve anterior.
BASE_TILT = (9.0, 4.0, 0.0, -7.0, -15.0, 14.0)
POSES = {"tight": TIGHT, "realistic": REALISTIC}


def q(v):
    """Round like the DS strings we write (6 significant digits) so pixels and headers agree exactly."""
    return np.vectorize(lambda a: float(f"{a:.6g}"))(np.asarray(v, dtype=float))



@dataclass
class SeriesGeometry:
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

    def project(self, p: np.ndarray) -> tuple[int, float, float, float]:
        """Nearest slice to patient point p, p's (x=col, y=row) pixel coordinates in it, and p's distance (mm)
        from that slice's plane."""
        n = np.cross(self.rdir, self.cdir)
        dist = np.einsum("sj,sj->s", p - self.ipp, n)
        k = int(np.argmin(np.abs(dist)))
        d = p - self.ipp[k]
        return k, float(d @ self.rdir[k] / self.ps), float(d @ self.cdir[k] / self.ps), float(abs(dist[k]))



def matrix(rng) -> tuple[int, int]:
    rows = int(rng.choice(MATRICES))
    return rows, (rows if rng.random() < 0.5 else int(rng.choice(MATRICES)))


def order(rng, n: int, p_unordered: float) -> np.ndarray:
    """InstanceNumbers of slices listed in ascending normal order: in order, reversed or shuffled."""
    inst = np.arange(1, n + 1)
    if rng.random() < p_unordered:
        return inst[::-1].copy() if rng.random() < 0.5 else rng.permutation(inst)
    return inst


def _sagittal_tight(rng, sid, desc, t2, z0, rates) -> SeriesGeometry:
    rows, cols = matrix(rng)
    ps = float(q(rng.uniform(*TIGHT["sag_fov"]) / rows))
    s = float(rng.choice([4.0, 4.5, 5.0]))
    n = 1 + 2 * round(36 / s)  # odd count => a slice near x=0 and slices within ~2.5 mm of x=+-18
    xs = ((np.arange(n) - (n - 1) / 2) * s + rng.uniform(-1, 1))[::-1]  # ascending normal (-x) order
    rdir, cdir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    centre = np.stack([xs, np.full(n, rng.uniform(*TIGHT["sag_y"])),
                       np.full(n, z0 + rng.uniform(-TIGHT["sag_z"], TIGHT["sag_z"]))], 1)
    ipp = q(centre - (cols - 1) / 2 * ps * rdir - (rows - 1) / 2 * ps * cdir)
    return SeriesGeometry(sid, desc, t2, rows, cols, ps, s - 0.5, s, ipp, np.tile(rdir, (n, 1)), np.tile(cdir, (n, 1)),
                   order(rng, n, rates["unordered"]))


def _axial_tight(rng, sid, disc_z, z0, rates) -> SeriesGeometry:
    rows, cols = matrix(rng)
    ps = float(q(rng.uniform(*TIGHT["ax_fov"]) / cols))
    yc = rng.uniform(*TIGHT["ax_y"])
    if rng.random() < rates["angled_axial"]:  # one tilted 3-5 slice block per disc, all in one series
        s, cen, rd, cd = 4.0, [], [], []
        for z in disc_z[:5]:
            a = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(5, 15))
            col = q([0.0, np.cos(a), np.sin(a)])
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
    ipp = q(cen - (cols - 1) / 2 * ps * rd - (rows - 1) / 2 * ps * cd)
    return SeriesGeometry(sid, AX_T2, True, rows, cols, ps, float(q(thick)), float(q(s)), ipp, rd, cd,
                   order(rng, n, rates["unordered"]))


# ------------------------------------------------------------------------------------------------ dispatch
def spine_of(rng, pose: str) -> tuple[Spine, float]:
    """The study's spine and (tight) its z offset, drawn in the order the tight pose always drew them."""
    if pose == "tight":
        z0 = rng.uniform(-TIGHT["z0"], TIGHT["z0"])
        disc_z = np.array(DISC_Z) + z0 + rng.uniform(-TIGHT["disc"], TIGHT["disc"], 6)
        return Spine.upright(disc_z), z0
    r = REALISTIC
    shift = np.array([rng.uniform(-m, m) for m in r["shift"]])
    base = rng.uniform(*r["spacing"])
    spacings = base * (1.0 + rng.uniform(-r["level_spacing"], r["level_spacing"], 5))
    tilts = np.clip(rng.uniform(*r["lordosis"]) * np.array(BASE_TILT) + rng.uniform(-r["pitch"], r["pitch"]),
                    -22.0, 22.0)
    return Spine.curved(shift, spacings, tilts), 0.0


def sagittal(rng, sid, desc: str, t2: bool, spine: Spine, z0: float, pose: str, rates) -> SeriesGeometry:
    if pose == "tight":
        return _sagittal_tight(rng, sid, desc, t2, z0, rates)
    r = REALISTIC
    rows, cols = matrix(rng)
    fov = rng.uniform(*r["sag_fov"])
    ps = float(q(fov / rows))
    s = float(rng.choice([3.5, 4.0, 4.5, 5.0]))
    n = 1 + 2 * round(38 / s)  # the slab covers both foramina (x = ±18 around the spine) with room to spare
    cx = float(spine.centres[:5, 0].mean()) + rng.uniform(-r["slab_x"], r["slab_x"])
    xs = ((np.arange(n) - (n - 1) / 2) * s + cx)[::-1]  # ascending normal (-x) order
    mid = spine.centres[:5].mean(0)
    span_z = float(np.ptp(spine.centres[:5, 2]))
    bound_y = max(0.0, min(r["sag_offset"], fov / 2 - 85.0))  # the whole spine and the discs stay in the field
    bound_z = max(0.0, min(r["sag_offset"], fov / 2 - span_z / 2 - 35.0))
    yc, zc = mid[1] + 20.0 + rng.uniform(-bound_y, bound_y), mid[2] + rng.uniform(-bound_z, bound_z)
    rdir, cdir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    centre = np.stack([xs, np.full(n, yc), np.full(n, zc)], 1)
    ipp = q(centre - (cols - 1) / 2 * ps * rdir - (rows - 1) / 2 * ps * cdir)
    return SeriesGeometry(sid, desc, t2, rows, cols, ps, s - 0.5, s, ipp, np.tile(rdir, (n, 1)),
                          np.tile(cdir, (n, 1)), order(rng, n, rates["unordered"]))


def axial(rng, sid, spine: Spine, z0: float, pose: str, rates) -> SeriesGeometry:
    if pose == "tight":
        return _axial_tight(rng, sid, spine.centres[:, 2], z0, rates)
    r = REALISTIC
    rows, cols = matrix(rng)
    ps = float(q(rng.uniform(*r["ax_fov"]) / cols))
    off = rng.uniform(-r["ax_offset"], r["ax_offset"], 2)  # where the field of view's centre is, around the canal
    if rng.random() < rates["angled_axial"]:  # 3-5 blocks of 3-5 slices, each angled to its disc
        k = int(rng.integers(3, 6))
        first = 5 - k if rng.random() < 0.7 else int(rng.integers(0, 6 - k))  # mostly the lowest discs
        s, cen, rd, cd = 4.0, [], [], []
        for j in range(first, first + k):
            a = np.arctan2(spine.normals[j, 1], spine.normals[j, 2]) + np.radians(rng.uniform(-3, 3))
            nrm, col = np.array([0.0, np.sin(a), np.cos(a)]), q([0.0, np.cos(a), -np.sin(a)])
            m = int(rng.integers(3, 6))
            mid = spine.centres[j] + 24.0 * spine.ap()[j] + off[0] * np.array([1.0, 0.0, 0.0]) + off[1] * col
            for t in (np.arange(m) - (m - 1) / 2) * s:
                cen.append(mid + t * nrm)
                rd.append([1.0, 0.0, 0.0])
                cd.append(col)
        cen, rd, cd = np.array(cen), np.array(rd), np.array(cd)
        n, thick = len(cen), 3.5
    else:  # one straight stack, ascending normal (+z) order, its ends anywhere from T12 to S1
        z = spine.centres[:, 2]
        top = rng.uniform(z[1], z[5] + 15.0)  # from L2L3 up to above T12L1
        bottom = rng.uniform(z[4] - 25.0, z[3])  # from L4L5 down into S1
        s = rng.uniform(4.0, 5.0)
        n = int(round((top - bottom) / s)) + 1
        s = (top - bottom) / (n - 1)
        canal = spine.centres[:5].mean(0) + 24.0 * spine.ap()[:5].mean(0)
        cen = np.stack([np.full(n, canal[0] + off[0]), np.full(n, canal[1] + off[1]), np.linspace(bottom, top, n)], 1)
        rd, cd = np.tile([1.0, 0.0, 0.0], (n, 1)), np.tile([0.0, 1.0, 0.0], (n, 1))
        thick = min(4.0, s)
    ipp = q(cen - (cols - 1) / 2 * ps * rd - (rows - 1) / 2 * ps * cd)
    return SeriesGeometry(sid, AX_T2, True, rows, cols, ps, float(q(thick)), float(q(s)), ipp, rd, cd,
                          order(rng, n, rates["unordered"]))
