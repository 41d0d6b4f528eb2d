"""Build every study of a dataset once, in worker processes or in this one, with a progress bar.

Each finished study goes to the resumable cache (`study_cache`) and gets a report entry; the `datasets` builder then
only collects the finished studies. Knowing which studies built before the builder runs is what lets a split that
ends up empty be reported (not crash the build) and a build where nothing worked stop with the reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

from hubkit.config import BuildConfig
from hubkit.schema import build_prompt, build_target

from .dicom import DicomError
from .study import load_study
from .study_cache import load_entry, store_entry, study_key


def build_study(cfg: BuildConfig, rec: dict, report_dir: Path, cache_dir: Path, key: str | None = None,
                write_reused: bool = True) -> tuple[dict, list[bytes]] | None:
    """One study -> (row fields without images, PNG bytes per image), or None if it is skipped.

    Takes the study from the resumable cache (`study_cache`) when an earlier run finished it, else reads its
    DICOMs and caches the result; writes the study's report entry either way (a reused one only if
    `write_reused`).
    """
    sid = rec["study_id"]
    study_dir = Path(cfg.data_dir) / "train_images" / sid
    key = key or study_key(cfg.pick_spec, cfg.slice_size, rec, study_dir)
    cached = load_entry(cache_dir, sid, key)
    if cached is not None:  # built by an earlier, interrupted run: identical bytes, no DICOM read
        row, pngs, entry = cached
        if write_reused:
            _write_entry(report_dir, {**entry, "reused": True})
        return row, pngs
    entry = {"study_id": sid, "status": "built", "views": [], "notes": [], "skipped": []}
    try:
        study = load_study(study_dir, rec["descriptions"], picker=cfg.picker, coords=rec["coords"],
                           slice_size=cfg.slice_size, layout=cfg.layout)
    except DicomError as e:
        entry.update(status="skipped", reason=str(e))
        _write_entry(report_dir, entry)
        return None
    entry.update(views=study.views, notes=study.notes,
                 skipped=[{"file": f, "reason": r} for f, r in study.skipped],
                 picks=[list(p) for p in study.picks])
    labels = rec["labels"]
    row = {"study_id": sid, "views": study.views, "prompt": build_prompt(study.views),
           "target": build_target(labels), **labels}
    pngs = [encode_png(im)["bytes"] for im in study.images]
    store_entry(cache_dir, sid, key, row, pngs, entry)
    _write_entry(report_dir, entry)
    return row, pngs


def _first_pass_study(job: tuple) -> tuple[str, str | None]:
    """Worker of `build_dataset`'s pool: build (or find cached) one study -> (study id, cache key or None)."""
    cfg, rec, report_dir, cache_dir = job
    key = study_key(cfg.pick_spec, cfg.slice_size, rec, Path(cfg.data_dir) / "train_images" / rec["study_id"])
    built = build_study(cfg, rec, report_dir, cache_dir, key=key)
    return rec["study_id"], (key if built is not None else None)


def encode_png(image) -> dict:
    """Lossless PNG bytes as a datasets Image value.

    8-bit grayscale (every slice the builder makes) is written here: PNG filter "Up" on every row + zlib level 1,
    faster than PIL at compress_level 1 (which tries all five filters per row) and no larger on MR slices
    (BENCHMARKS.md 1). Other modes go through PIL.
    """
    import io

    if image.mode == "L":
        return {"bytes": _png_gray8(image), "path": None}
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _png_gray8(image) -> bytes:
    import struct
    import zlib

    import numpy as np

    a = np.asarray(image, dtype=np.uint8)
    h, w = a.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 2  # filter type 2 = Up: each byte minus the byte above (mod 256)
    rows[0, 1:] = a[0]
    np.subtract(a[1:], a[:-1], out=rows[1:, 1:])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))


def first_pass(cfg: BuildConfig, records: list[dict], report_dir: Path, cache_dir: Path, work: Path,
               progress: bool = True) -> tuple[dict, tuple[dict, Path] | None]:
    """Build every study -> ({study id: cache key, None if skipped}, chart), in a pool of `cfg.num_proc` processes
    (or in this one), with a progress bar per study.

    With workers, this process imports what the rest of the build needs meanwhile, and the pool also draws the label
    chart of the planned studies (`chart` = (its label counts, PNG path); the card uses it if no study was skipped,
    else draws it again)."""
    import multiprocessing

    from tqdm.auto import tqdm

    bar = tqdm(total=len(records), desc="build studies", unit="study", disable=not progress)
    jobs = [(cfg, rec, report_dir, cache_dir) for rec in records]
    done: dict[str, str | None] = {}
    if cfg.num_proc <= 1 or len(jobs) <= 1:
        for job in jobs:
            sid, key = _first_pass_study(job)
            done[sid] = key
            bar.update()
        bar.close()
        return done, None

    import PIL.Image  # noqa: F401 - imported before the fork, so the workers do not import them again
    import pydicom  # noqa: F401

    from hubkit.cards.dataset import CHART_FILE, plot_label_distribution
    from hubkit.manifest import label_counts_of

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    counts = label_counts_of(rec["labels"] for rec in records)
    work.mkdir(parents=True, exist_ok=True)
    with ctx.Pool(min(cfg.num_proc, len(jobs))) as pool:
        # The chart is one more task for the pool (queued first, so that it never finishes last).
        drawn = pool.apply_async(plot_label_distribution, (counts, work / CHART_FILE))
        results = pool.imap_unordered(_first_pass_study, jobs)
        import datasets  # noqa: F401 - the slow imports, overlapped with the workers
        from huggingface_hub import DatasetCard  # noqa: F401 - for the card

        for sid, key in results:
            done[sid] = key
            bar.update()
        bar.close()
        chart = (counts, drawn.get())
        pool.close()
        pool.join()
    return done, chart


def _write_entry(report_dir: Path, entry: dict) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"{entry['study_id']}.json").write_text(json.dumps(entry))
