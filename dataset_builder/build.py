"""`hubkit build-dataset`: an RSNA-layout folder -> Arrow `DatasetDict` (train/validation) + card + build report.

Example:
    >>> from hubkit.config import BuildConfig
    >>> from hubkit.dataset_builder.build import build_dataset
    >>> build_dataset(BuildConfig(data_dir="/data/rsna", num_proc=2), output="/data/lumbar-ds")
"""

from __future__ import annotations

import functools
import json
import random
import shutil
from pathlib import Path

from hubkit.config import BuildConfig, config_to_dict, write_json
from hubkit.schema import Picker, build_prompt, build_target

from . import rsna_csv
from .dicom import DicomError
from .study import load_study
from .study_cache import load_entry, store_entry, study_key

REPORT_FILE = "build_report.json"
# `datasets` is imported only inside the functions that need it (~1 s): build_dataset imports it while the worker
# processes are already decoding studies, instead of before.


def build_study(cfg: BuildConfig, rec: dict, report_dir: Path, cache_dir: Path, key: str | None = None,
                write_reused: bool = True) -> tuple[dict, list[bytes]] | None:
    """One study -> (row fields without images, PNG bytes per image), or None if it is skipped.

    Takes the study from the resumable cache (`study_cache`) when an earlier run finished it, else reads its
    DICOMs and caches the result; writes the study's report entry either way (a reused one only if
    `write_reused`).
    """
    sid = rec["study_id"]
    study_dir = Path(cfg.data_dir) / "train_images" / sid
    key = key or study_key(cfg.picker, cfg.slice_size, rec, study_dir)
    cached = load_entry(cache_dir, sid, key)
    if cached is not None:  # built by an earlier, interrupted run: identical bytes, no DICOM read
        row, pngs, entry = cached
        if write_reused:
            _write_entry(report_dir, {**entry, "reused": True})
        return row, pngs
    entry = {"study_id": sid, "status": "built", "views": [], "notes": [], "skipped": []}
    try:
        study = load_study(study_dir, rec["descriptions"], picker=cfg.picker, coords=rec["coords"],
                           slice_size=cfg.slice_size)
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


@functools.lru_cache(maxsize=None)
def _builder_class():
    """The `datasets` builder, defined on first use so that importing this module does not import `datasets`."""
    import datasets

    from .features import lumbar_features

    class LumbarConfig(datasets.BuilderConfig):
        """Carries the validated study records and the build options into (possibly several) worker processes.

        `done` maps the study ids already handled by `build_dataset`'s own pass to their cache keys: their rows
        come from the cache and their report entries are already written."""

        def __init__(self, build: BuildConfig | None = None, splits: dict | None = None, report_dir: str = "",
                     cache_studies: str = "", done: dict | None = None, **kw):
            super().__init__(**kw)
            self.build = build or BuildConfig()
            self.splits = splits or {}
            self.report_dir = report_dir
            self.cache_studies = cache_studies
            self.done = done or {}

    class LumbarSpine(datasets.GeneratorBasedBuilder):
        """RSNA 2024 lumbar spine studies as picked slice images + the seed's prompt + compact JSON target."""

        BUILDER_CONFIG_CLASS = LumbarConfig
        VERSION = datasets.Version("1.0.0")

        def _info(self) -> datasets.DatasetInfo:
            return datasets.DatasetInfo(
                description="RSNA 2024 Lumbar Spine Degenerative Classification, one row per study: picked MRI "
                            "slices (8-bit, square), their view names, the training prompt and the compact JSON "
                            "answer.",
                features=lumbar_features(),
                homepage="https://www.kaggle.com/competitions/rsna-2024-lumbar-spine-degenerative-classification",
            )

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=name, gen_kwargs={"records": records})
                    for name, records in self.config.splits.items() if records]

        def _generate_examples(self, records):
            cfg: BuildConfig = self.config.build
            done = self.config.done
            for rec in records:
                sid = rec["study_id"]
                if sid in done and done[sid] is None:  # skipped by the first pass (reported there)
                    continue
                built = build_study(cfg, rec, Path(self.config.report_dir), Path(self.config.cache_studies),
                                    key=done.get(sid), write_reused=sid not in done)
                if built is not None:
                    row, pngs = built
                    yield sid, {**row, "images": [{"bytes": b, "path": None} for b in pngs]}

    return LumbarConfig, LumbarSpine


def __getattr__(name: str):  # LumbarConfig / LumbarSpine, as before, without importing `datasets` at import time
    if name in ("LumbarConfig", "LumbarSpine"):
        return _builder_class()[name == "LumbarSpine"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _first_pass_study(job: tuple) -> tuple[str, str | None]:
    """Worker of `build_dataset`'s pool: build (or find cached) one study -> (study id, cache key or None)."""
    cfg, rec, report_dir, cache_dir = job
    key = study_key(cfg.picker, cfg.slice_size, rec, Path(cfg.data_dir) / "train_images" / rec["study_id"])
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


def content_fingerprint(ds) -> str:
    """16 hex digits naming a split's rows (every column, in order), independent of paths, shards and num_proc."""
    import hashlib

    h = hashlib.sha256(json.dumps(ds.features.to_dict(), sort_keys=True).encode())
    for batch in ds.data.to_batches(max_chunksize=64):
        for row in batch.to_pylist():
            images = row.pop("images", None) or []
            h.update(json.dumps(row, sort_keys=True, default=str).encode())
            for im in images:
                h.update(hashlib.sha256(im["bytes"] or b"").digest())
    return h.hexdigest()[:16]


def _write_entry(report_dir: Path, entry: dict) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"{entry['study_id']}.json").write_text(json.dumps(entry))


def split_studies(study_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split by study: sort ids, shuffle with `seed`, the first round(n*fraction) are validation."""
    ids = sorted(study_ids, key=int)
    random.Random(seed).shuffle(ids)
    n_val = int(round(len(ids) * fraction))
    if fraction > 0 and len(ids) > 1:
        n_val = max(1, n_val)
    val = sorted(ids[:n_val], key=int)
    return sorted(ids[n_val:], key=int), val


def plan_records(cfg: BuildConfig) -> tuple[dict[str, list[dict]], list[dict], list[dict]]:
    """Validate the CSVs and list studies per split -> (splits, skipped studies, skipped CSV rows).

    Studies without a folder are reported, not built; CSV rows with malformed or duplicate ids are skipped and
    reported (`rsna_csv.RowProblems`); a missing file/column or an unknown label value raises.
    """
    data = Path(cfg.data_dir)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found")
    problems = rsna_csv.RowProblems()
    labels = rsna_csv.read_labels(data, problems)
    descriptions = rsna_csv.read_descriptions(data, problems)
    coords = rsna_csv.read_coordinates(data, required=cfg.picker is Picker.COORDS, problems=problems)
    images = data / "train_images"
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: folder not found; expected train_images/<study_id>/<series_id>/*.dcm")
    missing = []
    present = []
    for sid in sorted(labels, key=int):
        if (images / sid).is_dir():
            present.append(sid)
        else:
            missing.append({"study_id": sid, "status": "skipped", "reason": f"{images / sid}: study folder not found"})
    if cfg.max_studies is not None:
        present = present[: cfg.max_studies]
    train, val = split_studies(present, cfg.validation_fraction, cfg.seed)

    def rec(sid: str) -> dict:
        return {"study_id": sid, "labels": labels[sid], "descriptions": descriptions.get(sid, {}),
                "coords": coords.get(sid, [])}

    return {"train": [rec(s) for s in train], "validation": [rec(s) for s in val]}, missing, list(problems)


def build_dataset(cfg: BuildConfig, output: str | Path) -> "datasets.DatasetDict":
    """Build the dataset, save it to `output` (load it with `datasets.load_from_disk`), write the card and report.

    Resumable: each finished study is kept in `<output>/../.<name>.build/studies` (see `study_cache`) until the
    build succeeds, so re-running after a kill or crash decodes only the studies that were not finished. Each
    split's `_fingerprint` is its content hash: identical rows give the identical fingerprint, whatever num_proc.

    Raises:
        rsna_csv.CsvError / FileNotFoundError: bad or missing CSVs / folders (nothing is written then).
    """
    from hubkit._imports import require_train

    require_train("hubkit build-dataset")
    out = Path(output)
    splits, missing, bad_rows = plan_records(cfg)
    work = out.parent / f".{out.name}.build"
    report_dir = work / "report"
    cache_dir = work / "studies"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    records = [r for recs in splits.values() for r in recs]
    # With several processes, every study of both splits goes through one pool first (datasets would start one
    # pool per split); meanwhile this process imports `datasets` and draws the card's chart. The builder then
    # only collects the finished studies from the per-study cache. With one process the builder does it all.
    done, chart = {}, None
    if cfg.num_proc > 1 and records:
        done, chart = _first_pass(cfg, records, report_dir, cache_dir, work)
    import datasets

    LumbarSpine = _builder_class()[1]
    builder = LumbarSpine(cache_dir=str(work / "cache"), dataset_name="rsna_lumbar",
                          config_name=f"{cfg.picker}-{cfg.slice_size}",
                          # names the (temporary) cache folder; given, so datasets does not hash every record
                          config_id=f"{cfg.picker}-{cfg.slice_size}",
                          build=cfg, splits=splits, report_dir=str(report_dir),
                          cache_studies=str(cache_dir), done=done)
    builder.download_and_prepare(num_proc=None if done or cfg.num_proc <= 1 else cfg.num_proc,
                                 download_mode="force_redownload")
    dd = datasets.DatasetDict({name: builder.as_dataset(split=name) for name in builder.info.splits})
    for ds in dd.values():  # datasets' own fingerprint depends on cache paths; make it name the content instead
        ds._fingerprint = content_fingerprint(ds)
    out.mkdir(parents=True, exist_ok=True)
    # Shards of <= 100 MB: save_to_disk embeds and writes a shard in batches of up to 1,000 rows, all in memory, so
    # one big shard costs its whole size in memory (BENCHMARKS.md 1).
    dd.save_to_disk(str(out), max_shard_size="100MB")
    entries = [json.loads(p.read_text()) for p in sorted(report_dir.glob("*.json"))] + missing
    report = write_report(out, cfg, dd, entries, bad_rows)
    from hubkit.cards.dataset import write_dataset_card
    from hubkit.manifest import build_manifest, write_manifest

    manifest = build_manifest(cfg, dd, report)
    write_manifest(out, manifest)
    write_dataset_card(out, manifest, chart=chart)
    shutil.rmtree(work, ignore_errors=True)
    return dd


def _first_pass(cfg: BuildConfig, records: list[dict], report_dir: Path, cache_dir: Path,
                work: Path) -> tuple[dict, tuple[dict, Path] | None]:
    """Build every study in a pool of `cfg.num_proc` processes -> ({study id: cache key, None if skipped}, chart).

    While the workers run, this process imports what the rest of the build needs; the pool also draws the label
    chart of the planned studies (`chart` = (its label counts, PNG path); the card uses it if no study was
    skipped, else draws it again)."""
    import multiprocessing

    import PIL.Image  # noqa: F401 - imported before the fork, so the workers do not import them again
    import pydicom  # noqa: F401

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    jobs = [(cfg, rec, report_dir, cache_dir) for rec in records]
    done: dict[str, str | None] = {}
    from hubkit.cards.dataset import plot_label_distribution
    from hubkit.manifest import label_counts_of

    counts = label_counts_of(rec["labels"] for rec in records)
    work.mkdir(parents=True, exist_ok=True)
    with ctx.Pool(min(cfg.num_proc, len(jobs))) as pool:
        # The chart is one more task for the pool (queued first, so that it never finishes last).
        drawn = pool.apply_async(plot_label_distribution, (counts, work / "label_distribution.png"))
        results = pool.imap_unordered(_first_pass_study, jobs)
        import datasets  # noqa: F401 - the slow imports, overlapped with the workers
        from huggingface_hub import DatasetCard  # noqa: F401 - for the card

        for sid, key in results:
            done[sid] = key
        chart = (counts, drawn.get())
        pool.close()
        pool.join()
    return done, chart


def write_report(out: Path, cfg: BuildConfig, dd, entries: list[dict], bad_rows: list[dict] = ()) -> dict:
    """build_report.json: config, split sizes and every skipped study / file / empty slot with its reason."""
    entries = sorted(entries, key=lambda e: int(e["study_id"]))
    report = {
        "config": config_to_dict(cfg),
        "splits": {k: len(v) for k, v in dd.items()},
        "fingerprints": {k: v._fingerprint for k, v in dd.items()},  # content_fingerprint of each split
        "studies_built": sum(e["status"] == "built" for e in entries),
        # Studies taken from the work folder of an interrupted earlier run instead of being decoded again.
        "studies_reused": sum(bool(e.get("reused")) for e in entries),
        "studies_skipped": [{"study_id": e["study_id"], "reason": e["reason"]} for e in entries
                            if e["status"] == "skipped"],
        "csv_rows_skipped": list(bad_rows),
        "files_skipped": [{"study_id": e["study_id"], **s} for e in entries for s in e.get("skipped", [])],
        "studies_with_notes": [{"study_id": e["study_id"], "images": len(e["views"]), "notes": e["notes"]}
                                      for e in entries if e["status"] == "built" and e.get("notes")],
        "picks": {e["study_id"]: e.get("picks", []) for e in entries if e["status"] == "built"},
    }
    write_json(out / REPORT_FILE, report)
    return report
