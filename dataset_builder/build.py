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

from hubkit.config import BuildConfig

from . import rsna_csv
from .report import REPORT_FILE, nothing_built, write_report
from .studies_pass import build_study, first_pass

__all__ = ["REPORT_FILE", "build_dataset", "content_fingerprint", "plan_records", "split_studies"]
# `datasets` is imported only inside the functions that need it: build_dataset imports it while the worker
# processes are already decoding studies, instead of before.


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
    from hubkit.slots import mode

    coords = rsna_csv.read_coordinates(data, required=mode(cfg.picker).coordinates != "none", problems=problems)
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


def _localize(cfg: BuildConfig, splits: dict[str, list[dict]], progress: bool) -> tuple[dict, Path]:
    """Replace every record's coordinates with the localiser's points (`hubkit.localizer.points`); its facts and
    folder."""
    from hubkit.localizer.points import localized_coordinates

    records = [r for recs in splits.values() for r in recs]
    points, facts, folder = localized_coordinates(cfg.localizer, cfg.data_dir, [r["study_id"] for r in records],
                                                  {r["study_id"]: r["descriptions"] for r in records},
                                                  progress=progress)
    for r in records:
        r["coords"] = points.get(r["study_id"], [])
    return facts, folder


def work_dir(output: str | Path) -> Path:
    """The resumable work folder of a build into `output` (hidden beside it; deleted once the build is saved)."""
    out = Path(output)
    return out.parent / f".{out.name}.build"


def build_dataset(cfg: BuildConfig, output: str | Path, push: str | None = None, private: bool = True,
                  progress: bool = True) -> dict:
    """Build the dataset, save it to `output` (load it with `datasets.load_from_disk`), write the card, the manifest
    and the report; with `push`, check the token may push there before any work, and push after. Returns the report.

    Resumable: each finished study is kept in `<output>/../.<name>.build/studies` (see `study_cache`) until the
    build succeeds, so re-running after a kill or crash decodes only the studies that were not finished. Each
    split's `_fingerprint` is its content hash: identical rows give the identical fingerprint, whatever num_proc.
    A split whose studies all failed is left out and named in the report; the rest is saved.

    Raises:
        rsna_csv.CsvError / FileNotFoundError: bad or missing CSVs / folders (nothing is written then).
        ValueError: no study could be built (the report, with every reason, is written to `output`), or the disk
            is too small for the build.
        HubError: `push` given and the token cannot push there as asked (checked first).
    """
    from hubkit import preflight, publish
    from hubkit._imports import require_train

    require_train("hubkit build-dataset")
    out = Path(output)
    splits, missing, bad_rows = plan_records(cfg)
    localizer, localizer_dir = _localize(cfg, splits, progress) if cfg.localizer else (None, None)
    if push:
        publish.check(push, "dataset", private=private)
    records = [r for recs in splits.values() for r in recs]
    preflight.check_disk(out.parent, preflight.build_bytes(len(records), cfg.slice_size), "the build")
    work = work_dir(out)
    report_dir, cache_dir = work / "report", work / "studies"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    done, chart = first_pass(cfg, records, report_dir, cache_dir, work, progress=progress) if records else ({}, None)
    built = {name: [r for r in recs if done.get(r["study_id"])] for name, recs in splits.items()}
    empty = {name: f"all {len(recs)} studies drawn for it were skipped (reasons in the report)" if recs else
             "no study was drawn for it (too few studies, or --validation-fraction 0)"
             for name, recs in splits.items() if not built[name]}
    entries = [json.loads(p.read_text()) for p in sorted(report_dir.glob("*.json"))] + missing
    out.mkdir(parents=True, exist_ok=True)
    if not any(built.values()):
        raise ValueError(nothing_built(write_report(out, cfg, {}, entries, bad_rows, empty), out))
    import datasets

    LumbarSpine = _builder_class()[1]
    builder = LumbarSpine(cache_dir=str(work / "cache"), dataset_name="rsna_lumbar",
                          config_name=f"{cfg.pick_spec.replace('/', '-')}-{cfg.slice_size}",
                          # names the (temporary) cache folder; given, so datasets does not hash every record
                          config_id=f"{cfg.pick_spec.replace('/', '-')}-{cfg.slice_size}",
                          build=cfg, splits={k: v for k, v in built.items() if v}, report_dir=str(report_dir),
                          cache_studies=str(cache_dir), done=done)
    builder.download_and_prepare(download_mode="force_redownload")
    dd = datasets.DatasetDict({name: builder.as_dataset(split=name) for name in builder.info.splits})
    for ds in dd.values():  # datasets' own fingerprint depends on cache paths; make it name the content instead
        ds._fingerprint = content_fingerprint(ds)
    # Shards of <= 100 MB: save_to_disk embeds and writes a shard in batches of up to 1,000 rows, all in memory, so
    # one big shard costs its whole size in memory (BENCHMARKS.md 1).
    dd.save_to_disk(str(out), max_shard_size="100MB")
    report = write_report(out, cfg, dd, entries, bad_rows, empty)
    from hubkit.cards.dataset import write_dataset_card
    from hubkit.manifest import build_manifest, write_manifest

    manifest = build_manifest(cfg, dd, report, localizer=localizer)
    if localizer_dir is not None:  # it travels with the dataset: training ships it with the model
        from hubkit.localizer.points import copy_localizer

        copy_localizer(localizer_dir, out)
    write_manifest(out, manifest)
    write_dataset_card(out, manifest, chart=chart)
    shutil.rmtree(work, ignore_errors=True)
    if push:
        report["pushed"] = publish.push_dataset_folder(out, push, private=private).url
    return report
