"""The lumbar phantom `hubkit synth` images: anatomy in the local frame of each disc, placed in the patient by a pose.

Each disc j has a centre c_j and a frame: `normal` (up along the spine, tilted in the sagittal plane by the disc's
angle), `ap` (towards posterior, perpendicular to it in that plane) and x (towards patient left). A point p takes the
frame of the disc whose plane is nearest, (u, v, w) = ((p - c)·x, (p - c)·ap, (p - c)·normal), and the anatomy is
painted in those coordinates: vertebral body and disc of radius 18 at (0, 0), the canal at v = 28 (radius 8), the
foramina at u = ±18, v = 22 (radius 8), the subarticular recesses at u = ±10, v = 22 (radius 6), each narrowing
with its grade within ±8..14 mm of its disc (w). With every disc upright at x = y = 0 (`Spine.upright`), local and
patient coordinates coincide: the tight pose. A realistic pose (`Spine.curved`) moves, spaces and tilts the discs
along a lordotic curve; the grades stay where the frame puts them, and `landmark` says where that is in the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANAL_Y, FOR_X, FOR_Y, REC_X, REC_Y = 28.0, 18.0, 22.0, 10.0, 22.0
# Where each condition's structure sits at its disc, (u, v) in the disc's frame (what train_label_coordinates.csv
# points at).
LANDMARKS = {"canal": (0.0, CANAL_Y), "lf": (FOR_X, FOR_Y), "rf": (-FOR_X, FOR_Y), "ls": (REC_X, REC_Y),
             "rs": (-REC_X, REC_Y)}
# Radius (mm) per grade N/M/S. Canal narrows from anterior (disc bulge); foramen/recess shrink concentrically.
RADII = {"canal": (8.0, 4.5, 1.5), "foramen": (8.0, 4.5, 1.5), "recess": (6.0, 3.5, 1.0)}
WINDOW_MM = (8.0, 14.0)  # narrowing at full strength within +-8 mm of the disc centre, gone at +-14 mm
# Tissue intensities (T1, T2) on a 12-bit scale: T1 fat bright / CSF dark, T2 CSF bright.
TISSUE = {"air": (30, 30), "subq": (2500, 1700), "soft": (900, 650), "bone": (1300, 800), "marrow": (1700, 1000),
          "disc": (900, 1900), "csf": (450, 2600), "fat": (2800, 1600), "block": (350, 300)}


@dataclass(frozen=True)
class Spine:
    """The discs L1L2..L5S1 then T12L1 (an unlabelled extra, so counting levels from either end is plausible):
    centres (6, 3) and unit normals (6, 3) in patient coordinates (LPS mm)."""

    centres: np.ndarray
    normals: np.ndarray

    @classmethod
    def upright(cls, disc_z: np.ndarray) -> "Spine":
        """Discs on the z axis at `disc_z`, all horizontal: local frames are the patient's own axes."""
        z = np.asarray(disc_z, float)
        return cls(np.stack([np.zeros_like(z), np.zeros_like(z), z], 1),
                   np.tile(np.array([0.0, 0.0, 1.0]), (len(z), 1)))

    @classmethod
    def curved(cls, centre: np.ndarray, spacings: np.ndarray, tilts_deg: np.ndarray) -> "Spine":
        """A lordotic chain: L3L4 at `centre`; each disc one spacing from its neighbour along the mean of the two
        discs' normals. `spacings` (5,): top to bottom, T12L1-L1L2, L1L2-L2L3, ..., L4L5-L5S1; `tilts_deg` (6,)
        per disc, L1L2..L5S1 then T12L1, positive tilting the normal towards posterior."""
        t = np.radians(np.asarray(tilts_deg, float))
        normals = np.stack([np.zeros_like(t), np.sin(t), np.cos(t)], 1)
        chain = [5, 0, 1, 2, 3, 4]  # disc indices top to bottom: T12L1, L1L2, ..., L5S1
        pos = {2: np.asarray(centre, float)}  # L3L4, chain[3]

        def step(a: int, b: int) -> np.ndarray:
            m = normals[a] + normals[b]
            return m / np.linalg.norm(m)

        for i in (3, 2, 1):  # upwards
            pos[chain[i - 1]] = pos[chain[i]] + spacings[i - 1] * step(chain[i], chain[i - 1])
        for i in (3, 4):  # downwards
            pos[chain[i + 1]] = pos[chain[i]] - spacings[i] * step(chain[i], chain[i + 1])
        return cls(np.stack([pos[i] for i in range(6)]), normals)

    def ap(self) -> np.ndarray:
        """(6, 3): each disc's posterior axis, perpendicular to its normal in the sagittal plane."""
        n = self.normals
        return np.stack([np.zeros(len(n)), n[:, 2], -n[:, 1]], 1)

    def local(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, w, k) of points p (N, 3): coordinates in the frame of disc k, the one whose plane is nearest."""
        d = p[:, None, :] - self.centres[None, :, :]
        w_all = np.einsum("nkj,kj->nk", d, self.normals)
        k = np.argmin(np.abs(w_all), axis=1)
        dk = d[np.arange(len(p)), k]
        return dk[:, 0], np.einsum("nj,nj->n", dk, self.ap()[k]), w_all[np.arange(len(p)), k], k

    def landmark(self, condition: str, disc: int) -> np.ndarray:
        """Patient coordinates of a condition's structure at disc `disc` (its centre at w = 0)."""
        u, v = LANDMARKS[condition]
        return self.centres[disc] + u * np.array([1.0, 0.0, 0.0]) + v * self.ap()[disc]


def _window(dz: np.ndarray) -> np.ndarray:
    """1 within +-full mm of the disc, cosine ramp to 0 at +-zero: the narrowing spans the disc height."""
    full, zero = WINDOW_MM
    a = np.clip((np.abs(dz) - full) / (zero - full), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * a))


def intensity(p: np.ndarray, spine: Spine, radius: dict[str, np.ndarray], t2: bool) -> np.ndarray:
    """Intensity at patient points p (N, 3); `radius`: condition -> (6,) lumen radius at each disc (its grade)."""
    T = {k: np.float32(v[int(t2)]) for k, v in TISSUE.items()}
    x, y, dz, k = spine.local(p)
    img = np.full(x.shape, T["air"], np.float32)
    e = (x / 160.0) ** 2 + ((y + 25.0) / 115.0) ** 2
    img[e < 1.0] = T["subq"]
    img[e < 0.8] = T["soft"]
    # Everything below lives in |x| <= 26, -19 <= y <= 72: evaluate it only there (most of the image lies outside,
    # so most of the per-study work is skipped).
    near = (np.abs(x) <= 26.5) & (y >= -19.0) & (y <= 72.5)
    img[near] = _spine(x[near], y[near], dz[near], k[near], radius, T, img[near])
    return img


def _spine(x, y, dz, k, radius: dict[str, np.ndarray], T: dict, img: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    arch = ((ax <= 26) & (y >= 14) & (y <= 48)) | ((ax <= 5) & (y > 48) & (y <= 72))  # pedicles/facets/laminae/spinous
    img[arch] = T["bone"]
    rxy = np.hypot(x, y)
    img[rxy <= 18.0] = T["marrow"]
    img[(rxy <= 18.5) & (np.abs(dz) <= 4.0)] = T["disc"]
    left = x > 0
    w = _window(dz)
    # Subarticular recess: a cylinder along the spine at (+-10, 22) near each disc, lumen shrinks with the grade.
    d = np.hypot(ax - REC_X, y - REC_Y)
    r_lab = np.where(left, radius["ls"][k], radius["rs"][k])
    r = RADII["recess"][0] - (RADII["recess"][0] - r_lab) * w
    nom = (d <= RADII["recess"][0]) & (np.abs(dz) <= 10.0)
    img[nom] = T["block"]
    img[nom & (d <= r)] = T["csf"]
    # Neural foramen: a left-right tube (|x| 14..26) of fat around (y=22, the disc), concentric narrowing.
    d = np.hypot(y - FOR_Y, dz)
    r_lab = np.where(left, radius["lf"][k], radius["rf"][k])
    nom = (ax >= 14.0) & (ax <= 26.0) & (d <= RADII["foramen"][0])
    img[nom] = T["block"]
    img[nom & (d <= r_lab)] = T["fat"]
    # Spinal canal: CSF tube at (0, 28); at a stenotic disc a dark bulge fills it from anterior (posterior wall fixed).
    r0 = RADII["canal"][0]
    r = r0 - (r0 - radius["canal"][k]) * w
    nom = np.hypot(x, y - CANAL_Y) <= r0
    img[nom] = T["block"]
    img[nom & (np.hypot(x, y - (CANAL_Y + r0 - r)) <= r)] = T["csf"]
    return img
