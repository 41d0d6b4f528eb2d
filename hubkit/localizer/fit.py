"""`hubkit localizer train`: fit the localiser on a cohort's annotated points, K folds and a final model, and write
its folder: the weights and config (`net`), the out-of-fold points in train_label_coordinates.csv's format (what a
crops build of the same cohort cuts at, so training sees the errors inference will) and the metrics.

    hubkit localizer train /data/rsna --output runs/loc --folds 3

Targets: on every slice of a study's sagittal T2 (canal) and T1 (foramina), per level a Gaussian at the annotated
point projected onto that slice, its height falling with the point's distance from the slice's plane (`SLICE_SIGMA_MM`),
so the right slice answers highest. Augmented with shifts, zooms and contrast; out-of-fold metrics compare each
predicted point with the annotated one in patient millimetres.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from hubkit.schema import CONDITION_TITLES, LEVEL_TITLES, LEVELS

from . import net
from .locate import (Localizer, fine_patch, pixel_to_net, point_of, slice_inputs, spine_frame, study_series,
                     to_patch, world_to_pixel)
from .points import METRICS_FILE, OOF_FILE, coordinates_fingerprint

SLICE_SIGMA_MM = 3.0  # how fast a target's height falls with its distance from a slice's plane
HEAT_SIGMA_CELLS = 1.0
COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
HEAD_CONDITIONS = {"canal": ("canal",), "foramen": ("lf", "rf")}
# The errors' breakdown (`point_metrics`): a condition's title -> the structure its points are on.
STRUCTURES = {CONDITION_TITLES["canal"]: "canal", CONDITION_TITLES["lf"]: "foramina",
              CONDITION_TITLES["rf"]: "foramina", CONDITION_TITLES["ls"]: "recesses",
              CONDITION_TITLES["rs"]: "recesses"}


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How the localiser is trained (written into its config)."""

    folds: int = 3
    epochs: int = 40  # passes of the coarse networks over their slices (20 left 7% of levels wrong: BENCHMARKS.md 9)
    fine_epochs: int = 4  # passes of the fine networks over their patches (several per point and slice)
    width: int = 8  # channels of a U-Net's first level (doubling per level, to 8x)
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0
    threshold: float = 0.3  # a level whose coarse presence stays under this on every slice is "not found"
    negatives: int = 1  # slices far from every point, per study and epoch (so the networks learn to stay quiet)
    # fine patches per annotated point and slice, each around it at a random offset (6 found the foramina a little
    # more precisely, for about a third more fitting time on a CPU, but not the axial slice more often: BENCHMARKS
    # 9e)
    patches: int = 2
    offset_mm: float = 10.0  # how far from the point a fine patch's centre may be (the coarse error it corrects)


def _studies(cohort: Path, cfg: FitConfig, progress: bool):
    """{study_id: {head: (coarse images, coarse targets, fine patches, fine targets)}} of every study with sagittal
    coordinates, and the coordinates."""
    from hubkit.dataset_builder import rsna_csv

    descriptions = rsna_csv.read_descriptions(cohort)
    coords = rsna_csv.read_coordinates(cohort)
    ids = sorted(coords, key=int)
    if progress:
        from tqdm.auto import tqdm

        ids = tqdm(ids, desc="localizer: read studies", unit="study")
    rng = np.random.default_rng(cfg.seed + 1)
    out = {}
    for sid in ids:
        folder = cohort / "train_images" / sid
        if not folder.is_dir():
            continue
        series = study_series(cohort, sid, descriptions)
        study = {}
        for head, conditions in HEAD_CONDITIONS.items():
            rows = [r for r in coords[sid] if r["condition"] in {CONDITION_TITLES[c] for c in conditions}]
            sids = {str(r["series_id"]) for r in rows}
            if len(sids) != 1 or next(iter(sids)) not in series:
                continue
            s = series[next(iter(sids))]
            decoded: dict[int, np.ndarray] = {}
            headers, images = slice_inputs(s, net.COARSE, decoded)
            points, patches, offsets = [], [], []
            for r in rows:
                h = s.by_instance(int(r["instance_number"]))
                if h is None or h not in headers:
                    continue
                p = h.pixel_to_patient(float(r["x"]), float(r["y"]))
                points.append((LEVELS[[LEVEL_TITLES[lv] for lv in LEVELS].index(r["level"])], p))
                k = headers.index(h)
                for i in (k - 1, k, k + 1):  # the point's slice and its neighbours: the fine net chooses between them
                    if not 0 <= i < len(headers):
                        continue
                    col_t, row_t, dist = world_to_pixel(p, headers[i])
                    arr = decoded[id(headers[i])]
                    for dx, dy in rng.uniform(-cfg.offset_mm, cfg.offset_mm, (cfg.patches, 2)):
                        col = col_t + dx / headers[i].pixel_spacing[1]
                        row = row_t + dy / headers[i].pixel_spacing[0]
                        patches.append(fine_patch(arr, headers[i], col, row))
                        height = math.exp(-dist * dist / (2 * SLICE_SIGMA_MM ** 2))
                        offsets.append([(0, *to_patch(headers[i], col, row, col_t, row_t), height)])
            study[head] = (images, _targets(headers, points), patches, offsets)
        if study:
            out[sid] = study
    return out, coords


def _targets(headers, points) -> list[list[tuple[int, float, float, float]]]:
    """Per slice: (level index, u, v, height) of every annotated point projected onto it, in coarse input pixels."""
    out = []
    for h in headers:
        here = []
        for lv, p in points:
            col, row, dist = world_to_pixel(p, h)
            height = math.exp(-dist * dist / (2 * SLICE_SIGMA_MM ** 2))
            if height > 0.01:
                u, v = pixel_to_net(col, row, h, net.COARSE)
                here.append((LEVELS.index(lv), u, v, height))
        out.append(here)
    return out


def _targets_of(batch, channels: int, side: int, stride: int, shifts) -> tuple[np.ndarray, np.ndarray]:
    """(heights (B, channels), Gaussians (B, channels, n, n) summing to 1 where a point is) for a batch of targets,
    each moved by its shift (input px)."""
    n = side // stride
    grid = np.arange(n, dtype=np.float32)
    heights = np.zeros((len(batch), channels), np.float32)
    gauss = np.zeros((len(batch), channels, n, n), np.float32)
    for b, (targets, shift) in enumerate(zip(batch, shifts)):
        for j, u, v, height in targets:
            if height <= heights[b, j]:
                continue
            heights[b, j] = height
            cu, cv = (u + shift[0] + 0.5) / stride - 0.5, (v + shift[1] + 0.5) / stride - 0.5
            g = np.exp(-((grid[None, :] - cu) ** 2 + (grid[:, None] - cv) ** 2) / (2 * HEAT_SIGMA_CELLS ** 2))
            gauss[b, j] = g / max(g.sum(), 1e-6)
    return heights, gauss


def _fit(samples, stage: str, cfg: FitConfig, rng: np.random.Generator):
    """Train one network of `stage` on [(image uint8, targets)]: presence (the sigmoid of a map's highest logit)
    against the structure's height on that input, and where it is (the softmax over the map) against a Gaussian at
    the point, for inputs the structure lies on. Coarse inputs are shifted (by whole cells), every input's contrast
    jittered; a fine patch's random offset is its shift."""
    import torch

    torch.manual_seed(int(rng.integers(2**31)))
    # a GPU when there is one (minutes on a CPU, seconds there); the fitted network comes back to the CPU, where
    # locating runs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = net.build(stage, len(LEVELS), cfg.width).to(device)
    side, stride = samples[0][0].shape[-1], net.STAGES[stage]["stride"]
    channels = len(LEVELS) if stage == "coarse" else 1
    epochs = cfg.epochs if stage == "coarse" else cfg.fine_epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = epochs * max(1, math.ceil(len(samples) / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    images = np.stack([x for x, _ in samples])
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(samples))
        for b in range(0, len(order), cfg.batch):
            idx = order[b:b + cfg.batch]
            x = torch.from_numpy(images[idx].astype(np.float32) / 255.0)[:, None]
            shifts = np.zeros((len(idx), 2))
            if stage == "coarse":  # one shift a batch, whole cells: the targets move with the pixels
                shifts[:] = stride * rng.integers(-2, 3, 2)
                x = torch.roll(x, (int(shifts[0, 1]), int(shifts[0, 0])), (2, 3))
            gamma = torch.from_numpy(np.exp(rng.uniform(-0.2, 0.2, (len(idx), 1, 1, 1)))).float()
            x = x.clamp(0, 1) ** gamma * torch.from_numpy(rng.uniform(0.8, 1.2, (len(idx), 1, 1, 1))).float()
            heights, gauss = _targets_of([samples[i][1] for i in idx], channels, side, stride, shifts)
            heights, gauss = torch.from_numpy(heights).to(device), torch.from_numpy(gauss).to(device)
            logits = model(x.to(device))
            flat = logits.flatten(2)
            presence = torch.nn.functional.binary_cross_entropy_with_logits(flat.max(-1).values, heights)
            located = (heights > 0.5).float()
            where = -(gauss.flatten(2) * torch.log_softmax(flat, -1)).sum(-1)
            loss = presence + (where * located).sum() / located.sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.cpu().eval()


def _samples(studies: dict, ids, head: str, stage: str, cfg: FitConfig, rng) -> list:
    """A network's training inputs: for coarse, the slices near an annotated point and a few far from all; for
    fine, the patches around the points."""
    out = []
    for sid in ids:
        if head not in studies[sid]:
            continue
        images, targets, patches, offsets = studies[sid][head]
        if stage == "fine":
            out += list(zip(patches, offsets))
            continue
        near = [k for k, t in enumerate(targets) if t]
        far = [k for k, t in enumerate(targets) if not t]
        far = list(rng.choice(far, min(cfg.negatives, len(far)), replace=False)) if far else []
        out += [(images[k], targets[k]) for k in near + far]
    return out


def _fit_all(studies: dict, ids, cfg: FitConfig, rng) -> dict:
    return {f"{h}.{st}": _fit(_samples(studies, ids, h, st, cfg, rng), st, cfg, rng)
            for h in net.HEADS for st in net.STAGES}


def train_localizer(cohort: str | os.PathLike, output: str | os.PathLike, config: FitConfig = FitConfig(),
                    progress: bool = True) -> dict:
    """Fit the localiser on COHORT (an RSNA-layout folder with train_label_coordinates.csv) and write OUTPUT (see
    the module docstring). Returns its metrics.

    Raises:
        FileNotFoundError / ValueError: no such cohort, no coordinates, fewer studies than folds.
    """
    from hubkit.dataset_builder import rsna_csv

    t0 = time.perf_counter()
    cohort, out = Path(cohort), Path(output)
    studies, coords = _studies(cohort, config, progress)
    ids = sorted(studies, key=int)
    if len(ids) < max(2, config.folds):
        raise ValueError(f"{cohort}: {len(ids)} studies with sagittal coordinates; the localiser needs at least "
                         f"{max(2, config.folds)} ({config.folds} folds)")
    rng = np.random.default_rng(config.seed)
    fold_of = {sid: i % config.folds for i, sid in enumerate(rng.permutation(ids))}
    base = {"architecture": {"levels": len(LEVELS), "width": config.width, "coarse_input": net.COARSE,
                             "fine_mm": net.FINE, "stages": net.STAGES}, "threshold": config.threshold}
    descriptions = rsna_csv.read_descriptions(cohort)
    base.update(geometry_priors(studies, coords, cohort, descriptions))
    oof = []
    folds = range(config.folds)
    if progress:
        from tqdm.auto import tqdm

        folds = tqdm(folds, desc="localizer: folds", unit="fold")
    for f in folds:
        loc = Localizer(nets=_fit_all(studies, [s for s in ids if fold_of[s] != f], config, rng), config=base)
        for sid in (s for s in ids if fold_of[s] == f):
            oof += [{"study_id": sid, **r} for r in loc.locate(study_series(cohort, sid, descriptions))[0]]
    final = _fit_all(studies, ids, config, rng)
    metrics = point_metrics(oof, coords, cohort, descriptions)
    # the studies and their coordinates' fingerprint: a crops build of this same cohort takes the out-of-fold points
    from hubkit.manifest import SYNTH_MARKER

    net.save(out, final, {**base, "trained_on": {"cohort": cohort.name, "studies": len(ids), "study_ids": ids,
                                                 "coordinates_fingerprint": coordinates_fingerprint(coords, ids),
                                                 "synthetic": (cohort / SYNTH_MARKER).is_file()},
                          "fit": dataclasses.asdict(config), "metrics": metrics,
                          "train_s": round(time.perf_counter() - t0, 1)})
    write_rows(out / OOF_FILE, oof)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    _picture(out, oof, coords, cohort, descriptions)
    return metrics


def _picture(out: Path, oof: list[dict], coords: dict, cohort: Path, descriptions) -> Path | None:
    """The card's picture (`figure.plot_example`) of the first study whose out-of-fold points fill both panels."""
    from .figure import EXAMPLE_FILE, plot_example

    by_study: dict[str, list[dict]] = {}
    for r in oof:
        by_study.setdefault(str(r["study_id"]), []).append(r)
    for sid in sorted(by_study, key=int)[:10]:
        made = plot_example(out / EXAMPLE_FILE, study_series(cohort, sid, descriptions), by_study[sid],
                            coords.get(sid, []))
        if made is not None:
            return made
    return None


def geometry_priors(studies: dict, coords: dict, cohort: Path, descriptions) -> dict:
    """What the annotators' points say of the anatomy, as medians over the training studies' levels:
    `lateral_mm`, half the distance between a level's left and right foramen points along the sagittal T1's normal
    (where the localiser puts each foramen's slice, either side of the midline it finds), and
    `recess_from_foramen_mm`, the vector from a foramen point to the same side's subarticular point in patient
    millimetres, its x made medial-positive (where the localiser puts the recesses it projects into the axial
    series), and `canal_from_foramina_mm`, the canal point's offset from the midpoint of its level's two foramina
    points in the spine's frame (`locate.spine_frame`: along the spine downwards, towards posterior in the disc's
    plane; where the localiser puts the canal at a level whose foramina it placed). None where the training data
    has no such pair."""
    halves, offsets, canal = [], [], []
    titles = {c: CONDITION_TITLES[c] for c in ("canal", "lf", "rf", "ls", "rs")}
    for sid in studies:
        rows = {(r["condition"], r["level"]): r for r in coords[sid]}
        series, mids, canals = None, {}, {}
        for lv in LEVELS:
            got = {c: rows.get((t, LEVEL_TITLES[lv])) for c, t in titles.items()}
            if got["lf"] is None and got["rf"] is None:
                continue
            if series is None:
                series = study_series(cohort, sid, descriptions)
            # (point, its series) of each annotated point whose slice is there
            pts = {c: (point_of(series, r), series.get(str(r["series_id"]))) for c, r in got.items() if r is not None}
            pts = {c: v for c, v in pts.items() if v[0] is not None}
            if pts.get("lf") and pts.get("rf") and pts["lf"][1] is pts["rf"][1]:
                halves.append(abs(float((pts["lf"][0] - pts["rf"][0]) @ pts["lf"][1].normal)) / 2)
                mids[lv] = (pts["lf"][0] + pts["rf"][0]) / 2
                if pts.get("canal"):
                    canals[lv] = pts["canal"][0]
            for f, r, medial in (("lf", "ls", -1.0), ("rf", "rs", 1.0)):  # patient left is +x: medial is -x there
                if pts.get(f) and pts.get(r):
                    d = pts[r][0] - pts[f][0]
                    offsets.append([medial * d[0], d[1], d[2]])
        for lv, p in canals.items():
            down, across = spine_frame(lv, mids)
            canal.append([float((p - mids[lv]) @ down), float((p - mids[lv]) @ across)])
    return {"lateral_mm": round(float(np.median(halves)), 3) if halves else None,
            "recess_from_foramen_mm": np.round(np.median(offsets, axis=0), 3).tolist() if offsets else None,
            "canal_from_foramina_mm": np.round(np.median(canal, axis=0), 3).tolist() if canal else None}


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows in train_label_coordinates.csv's format."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r[c] for c in COLUMNS])
    return Path(path)


def point_metrics(predicted: list[dict], annotated: dict[str, list[dict]], cohort: Path, descriptions) -> dict:
    """Errors of predicted points against annotated ones, in patient mm: median and 90th percentile (overall and
    per structure: canal, foramina, recesses), share within 5 mm, share at the right level (nearer its own level's
    point than any other level's), share of axial points on the right slice (of the series chosen, the slice
    nearest the annotated point: a study may have two axial series and either shows the level) and on the
    annotated instance itself, and the share of axial points on another series than the annotated one. There the
    right slice is a low estimate: the annotated point lies up to half its series' spacing off the structure, along
    that series' normal, and a localiser takes another series where it has a slice nearer the structure, so where
    that point is farthest off (BENCHMARKS.md 9f: on the phantom, nearly every such point was on the slice nearest
    the structure)."""
    errors, right_level, axial_right, axial_instance, axial_other, missing = [], [], [], [], [], 0
    by_structure: dict[str, list[float]] = {name: [] for name in STRUCTURES.values()}
    by_study: dict[str, list[dict]] = {}
    for r in predicted:
        by_study.setdefault(str(r["study_id"]), []).append(r)
    for sid, rows in by_study.items():
        series = study_series(cohort, sid, descriptions)
        truth = {(r["condition"], r["level"]): r for r in annotated.get(sid, [])}
        for r in rows:
            ref = truth.get((r["condition"], r["level"]))
            if ref is None:
                continue
            p, q = point_of(series, r), point_of(series, ref)
            if p is None or q is None:
                missing += 1
                continue
            errors.append(float(np.linalg.norm(p - q)))
            by_structure[STRUCTURES[r["condition"]]].append(errors[-1])
            if "Subarticular" in r["condition"]:
                axial_other.append(str(r["series_id"]) != str(ref["series_id"]))
                axial_instance.append(not axial_other[-1] and int(r["instance_number"]) == int(ref["instance_number"]))
                # the right slice: the one of the chosen series nearest the annotated point (the annotated
                # instance itself when the series is the annotated one; a study may have two axial series)
                s = series[str(r["series_id"])]
                nearest = min(s.slices, key=lambda h: abs(world_to_pixel(q, h)[2]))
                axial_right.append(int(nearest.instance_number) == int(r["instance_number"]))
            else:
                others = [point_of(series, o) for (c, lv), o in truth.items()
                          if c == r["condition"] and lv != r["level"]]
                right_level.append(all(o is None or np.linalg.norm(p - o) > np.linalg.norm(p - q) for o in others))
        missing += sum(1 for key in truth if key not in {(r["condition"], r["level"]) for r in rows})
    e = np.array(errors) if errors else np.array([np.nan])
    return {"points": len(errors), "not_placed": missing, "median_mm": round(float(np.median(e)), 3),
            "p90_mm": round(float(np.percentile(e, 90)), 3), "within_5mm": round(float(np.mean(e <= 5)), 4),
            "right_level": round(float(np.mean(right_level)), 4) if right_level else None,
            "axial_right_slice": round(float(np.mean(axial_right)), 4) if axial_right else None,
            "axial_right_instance": round(float(np.mean(axial_instance)), 4) if axial_instance else None,
            "axial_other_series": round(float(np.mean(axial_other)), 4) if axial_other else None,
            "by_structure": {name: {"points": len(v), "median_mm": round(float(np.median(v)), 3),
                                    "p90_mm": round(float(np.percentile(v, 90)), 3)}
                             for name, v in by_structure.items() if v}}
