"""`hubkit build-dataset`: an RSNA-layout folder -> Arrow `DatasetDict` (train/validation) + card + build report.

Example:
    >>> from hubkit.config import BuildConfig
    >>> from hubkit.dataset_builder.build import build_dataset
    >>> build_dataset(BuildConfig(data_dir="/data/rsna", num_proc=2), output="/data/lumbar-ds")
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import datasets

from hubkit.config import BuildConfig, config_to_dict, write_json
from hubkit.schema import build_prompt, build_target

from . import rsna_csv
from .dicom import DicomError
from .features import lumbar_features
from .study import load_study
from .study_cache import load_entry, store_entry, study_key

REPORT_FILE = "build_report.json"


class LumbarConfig(datasets.BuilderConfig):
    """Carries the validated study records and the build options into (possibly several) worker processes."""

    def __init__(self, build: BuildConfig | None = None, splits: dict | None = None, report_dir: str = "",
                 cache_studies: str = "", **kw):
        super().__init__(**kw)
        self.build = build or BuildConfig()
        self.splits = splits or {}
        self.report_dir = report_dir
        self.cache_studies = cache_studies


class LumbarSpine(datasets.GeneratorBasedBuilder):
    """RSNA 2024 lumbar spine studies as picked slice images + the seed's prompt + compact JSON target."""

    BUILDER_CONFIG_CLASS = LumbarConfig
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="RSNA 2024 Lumbar Spine Degenerative Classification, one row per study: picked MRI slices "
                        "(8-bit, square), their view names, the training prompt and the compact JSON answer.",
            features=lumbar_features(),
            homepage="https://www.kaggle.com/competitions/rsna-2024-lumbar-spine-degenerative-classification",
        )

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=name, gen_kwargs={"records": records})
                for name, records in self.config.splits.items() if records]

    def _generate_examples(self, records):
        cfg: BuildConfig = self.config.build
        report_dir = Path(self.config.report_dir)
        cache_dir = Path(self.config.cache_studies)
        for rec in records:
            sid = rec["study_id"]
            study_dir = Path(cfg.data_dir) / "train_images" / sid
            key = study_key(cfg.picker, cfg.image_size, rec, study_dir)
            cached = load_entry(cache_dir, sid, key)
            if cached is not None:  # built by an earlier, interrupted run: identical bytes, no DICOM read
                row, pngs, entry = cached
                _write_entry(report_dir, {**entry, "reused": True})
                yield sid, {**row, "images": [{"bytes": b, "path": None} for b in pngs]}
                continue
            entry = {"study_id": sid, "status": "built", "views": [], "notes": [], "skipped": []}
            try:
                study = load_study(study_dir, rec["descriptions"], mode=cfg.picker, coords=rec["coords"],
                                   image_size=cfg.image_size)
            except DicomError as e:
                entry.update(status="skipped", reason=str(e))
                _write_entry(report_dir, entry)
                continue
            entry.update(views=study.views, notes=study.notes,
                         skipped=[{"file": f, "reason": r} for f, r in study.skipped],
                         picks=[list(p) for p in study.picks])
            labels = rec["labels"]
            row = {"study_id": sid, "views": study.views, "prompt": build_prompt(study.views),
                   "target": build_target(labels), **labels}
            pngs = [encode_png(im)["bytes"] for im in study.images]
            store_entry(cache_dir, sid, key, row, pngs, entry)
            _write_entry(report_dir, entry)
            yield sid, {**row, "images": [{"bytes": b, "path": None} for b in pngs]}


def encode_png(image) -> dict:
    """Lossless PNG bytes as a datasets Image value.

    8-bit grayscale (every slice the builder makes) is written here: PNG filter "Up" on every row + zlib level 1,
    ~2x faster than PIL at compress_level 1 (which tries all five filters per row) and no larger on MR slices
    (measured 3.9 vs 7.5 ms and 82 vs 83 KB per 448x448 slice). Other modes go through PIL.
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
    coords = rsna_csv.read_coordinates(data, required=cfg.picker == "coords", problems=problems)
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
    out = Path(output)
    splits, missing, bad_rows = plan_records(cfg)
    work = out.parent / f".{out.name}.build"
    report_dir = work / "report"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    builder = LumbarSpine(cache_dir=str(work / "cache"), dataset_name="rsna_lumbar",
                          config_name=f"{cfg.picker}-{cfg.image_size}",
                          build=cfg, splits=splits, report_dir=str(report_dir),
                          cache_studies=str(work / "studies"))
    builder.download_and_prepare(num_proc=cfg.num_proc if cfg.num_proc > 1 else None,
                                 download_mode="force_redownload")
    dd = datasets.DatasetDict({name: builder.as_dataset(split=name) for name in builder.info.splits})
    for ds in dd.values():  # datasets' own fingerprint depends on cache paths; make it name the content instead
        ds._fingerprint = content_fingerprint(ds)
    out.mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(str(out))
    entries = [json.loads(p.read_text()) for p in sorted(report_dir.glob("*.json"))] + missing
    report = write_report(out, cfg, dd, entries, bad_rows)
    from hubkit.cards.dataset import write_dataset_card

    write_dataset_card(out, cfg, dd, report)
    shutil.rmtree(work, ignore_errors=True)
    return dd


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
