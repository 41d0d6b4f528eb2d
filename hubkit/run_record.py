"""The run folder's contract: what `hubkit train` writes and what every later stage reads.

A run folder holds PEFT's adapter (`adapter_config.json`, `adapter_model.safetensors`), the processor's files, the
run record `hubkit_config.json` (`RunRecord`: the recipe, the base model, the dataset it read with that dataset's
manifest, what training did) and, once `hubkit calibrate` has run, `calibration.json`. The card, publishing,
calibration, evaluation, the pipeline and `hubkit predict` read these files through this module only, so a field
is added or renamed here, once.

    from hubkit.run_record import read_run, run_facts, check_finished
    check_finished("runs/a")                        # FileNotFoundError with the one message, or nothing
    rec = read_run("runs/a")                        # RunRecord (None if the folder has no record)
    rec.slice_size, rec.picker, rec.dataset.manifest["label_counts"]
    facts = run_facts("runs/a")                     # what a pipeline needs: slice size, picker, calibration
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from hubkit._imports import DISTRIBUTION
from hubkit.eval_record import SNAPSHOT_FILE
from hubkit.localizer import FOLDER as LOCALIZER, SHIPPED as LOCALIZER_FILES

RUN_FILE = "hubkit_config.json"
CALIBRATION_FILE = "calibration.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_LOG = "training_log.jsonl"
# The wheel of the hubkit that pushed the run (`hubkit.packaging`): no package index has hubkit, so the card
# installs it.
WHEEL_PATTERN = f"{DISTRIBUTION.replace('-', '_')}-*.whl"
# Bump when a field changes meaning; a reader refuses a newer record than it knows (a missing version is 1: the
# records `hubkit train` wrote before this module, whose fields are these).
SCHEMA_VERSION = 1
# What a run folder publishes (checkpoints, TensorBoard logs and PEFT's generic README stay local): the adapter,
# the processor's files, the records, and the card with its figures and the evaluation it shows.
PUBLISHED = (
    ADAPTER_WEIGHTS, ADAPTER_CONFIG, RUN_FILE, TRAINING_LOG, CALIBRATION_FILE, "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
    "processor_config.json", "preprocessor_config.json", "README.md", "card_assets/*", SNAPSHOT_FILE, WHEEL_PATTERN,
    # the localiser a crops model's dataset was cut with (`hubkit.localizer.points.ship_localizer`)
    *(f"{LOCALIZER}/{name}" for name in LOCALIZER_FILES),
)

__all__ = ["RUN_FILE", "CALIBRATION_FILE", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "TRAINING_LOG", "PUBLISHED",
           "DatasetRef", "RunRecord", "RunFacts", "read_run", "write_run", "is_finished", "check_finished",
           "read_calibration", "write_calibration", "run_facts"]


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """The dataset a run read, and the facts of its build (its manifest, `hubkit.manifest`)."""

    # What was passed to `hubkit train --dataset` (a folder or a Hub repo id).
    source: str = ""
    # "save_to_disk", "local" (a Parquet/Arrow folder) or "hub".
    kind: str | None = None
    # Where it was: a local folder (resolved), or a Hub repo and the commit the stream read (the card links both).
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    # Split fingerprints (save_to_disk), a file-listing digest (local) or None (the Hub's revision says it).
    fingerprint: Any = None
    # Rows per epoch (after oversampling: `oversample` is the rule that repeated them) and validation rows.
    train_rows: int | None = None
    validation_rows: int | None = None
    oversample: str = ""
    # The build's `hubkit_dataset.json` (slice size, picker, label counts, ...), or None when it had none.
    manifest: dict | None = None
    # The citation the dataset's own card gives (BibTeX), or None.
    citation: str | None = None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """`hubkit_config.json`: one training run, written once by `hubkit train` when it ends."""

    base_model: str
    dataset: DatasetRef = DatasetRef()
    # The resolved `TrainConfig` (its JSON form: the card compares it with the defaults of that hubkit).
    train_config: dict = dataclasses.field(default_factory=dict)
    # The vision tower's input side (what the processor resizes every slice to).
    vision_input_size: int | None = None
    # The licence, tags and citation the base model's own card declares (`modeling.base_card_facts`).
    base_model_card: dict | None = None
    quantized_4bit: bool = False
    # "unsloth" or "trl", and why it is not the one asked for when it is not (DDP, loss_weights).
    backend: str | None = None
    backend_note: str | None = None
    # Processes (GPUs) that trained; the effective batch is world_size x the config's.
    world_size: int = 1
    # The token budget per example (derived from the images, never truncating them).
    max_length: int | None = None
    # Optimiser steps planned and done (fewer when early stopping ended the run).
    planned_steps: int | None = None
    global_step: int | None = None
    stopped_early: bool = False
    # Validation losses: at step 0 (the untrained adapter) and the best, with the checkpoint that gave it.
    first_eval_loss: float | None = None
    best_eval_loss: float | None = None
    best_checkpoint: str | None = None
    train_runtime_s: float | None = None
    # Installed versions of hubkit and every library that trained (None: not installed).
    versions: dict = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def manifest(self) -> dict:
        """The dataset's manifest ({} when it had none)."""
        return self.dataset.manifest or {}

    @property
    def slice_size(self) -> int | None:
        """The side the training slices were stored at: DICOM folders are read at it at inference."""
        return self.manifest.get("slice_size")

    @property
    def picker(self) -> str | None:
        return self.manifest.get("picker")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = RUN_FILE) -> "RunRecord":
        """ValueError naming `where` for a record this hubkit cannot read (newer schema, unknown or missing keys)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.setdefault("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"{where}: run record schema {version!r} is newer than this hubkit reads "
                             f"({SCHEMA_VERSION}); upgrade hubkit")
        _check_keys(cls, data, where)
        ds = data.get("dataset") or {}
        _check_keys(DatasetRef, ds, f"{where} (dataset)")
        if not data.get("base_model"):
            raise ValueError(f"{where}: no base_model; cannot tell which model the run trained")
        return cls(**{**data, "dataset": DatasetRef(**ds)})


def _check_keys(cls, data: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; written by a newer hubkit? upgrade hubkit")


def write_run(run_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write RUN_DIR/hubkit_config.json; returns its path."""
    path = Path(run_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return path


def read_run(run_dir: str | os.PathLike) -> RunRecord | None:
    """The folder's run record, or None when it has none.

    Raises:
        ValueError: the file is there but is not a record this hubkit can read (the message names it).
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return RunRecord.from_dict(data, str(path))


def is_finished(run_dir: str | os.PathLike) -> bool:
    """A finished run folder: its record and the adapter training wrote when it ended."""
    d = Path(run_dir)
    return all((d / f).is_file() for f in (RUN_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS))


def check_finished(run_dir: str | os.PathLike) -> RunRecord:
    """The record of a finished run folder; FileNotFoundError saying what the folder is instead.

    The one answer to "is this a run folder I can publish, calibrate or card?", worded the same for every verb.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such run folder")
    if not (d / RUN_FILE).is_file():
        what = "a dataset folder" if (d / "dataset_dict.json").is_file() else "not a run folder"
        raise FileNotFoundError(f"{d}: {what} (a `hubkit train` run folder holds {RUN_FILE} and the adapter)")
    if not is_finished(d):
        raise FileNotFoundError(f"{d}: a run folder without an adapter yet (training has not finished, or was "
                                "interrupted: add --resume to the train command)")
    return read_run(d)


def read_calibration(folder: str | os.PathLike):
    """The folder's `Calibration` (fitted by `hubkit calibrate`), or None when it has none.

    Raises:
        ValueError: the file is not valid JSON or not a calibration this hubkit can apply (the message names it).
    """
    from hubkit.inference.calibration import Calibration

    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it or refit with `hubkit calibrate`") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object; delete it or refit with `hubkit calibrate`")
    return Calibration.from_dict(data, source=str(path))


def write_calibration(folder: str | os.PathLike, calibration) -> Path:
    """Write FOLDER/calibration.json (a `Calibration`'s fields); returns its path."""
    path = Path(folder) / CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What a `lumbar-classify` pipeline must know of the run behind its model, and takes as its own parameters:
    the slice size DICOM folders are read at, the picker the slices came from, the calibration to apply, and the
    label counts `hubkit predict` builds its priors from. Each is None where the run does not say."""

    slice_size: int | None = None
    picker: str | None = None
    calibration: Any = None  # hubkit.inference.calibration.Calibration
    label_counts: dict | None = None
    # The images the model was trained on, in order (the dataset's slot table, `hubkit.slots`), and for a crops
    # picker how they were cut (the manifest's `crop`: layout, sizes, rule).
    views: list | None = None
    crop: dict | None = None
    # For crops cut at a localiser's points: the folder of that localiser, shipped with the model, which finds a
    # DICOM study's points when the caller gives none.
    localizer: str | None = None
    # The folder the model was loaded from (a run folder, or a Hub repo's snapshot): where its processor is.
    source: str | None = None

    # The key under which a loaded model's config carries these facts (`model.config.hubkit`), so a pipeline built
    # from the model object, or from the model saved with `save_pretrained`, still has them.
    CONFIG_KEY = "hubkit"

    def to_config(self) -> dict[str, Any]:
        """JSON-ready form for `model.config.hubkit`."""
        cal = self.calibration.to_dict() if self.calibration is not None else None
        return {"slice_size": self.slice_size, "picker": self.picker, "calibration": cal,
                "label_counts": self.label_counts, "source": self.source, "views": self.views, "crop": self.crop,
                "localizer": self.localizer}

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> "RunFacts":
        from hubkit.inference.calibration import Calibration

        data = dict(data or {})
        cal = data.get("calibration")
        return cls(slice_size=data.get("slice_size"), picker=data.get("picker"),
                   calibration=Calibration.from_dict(cal, "model.config.hubkit") if cal else None,
                   label_counts=data.get("label_counts"), source=data.get("source"), views=data.get("views"),
                   crop=data.get("crop"), localizer=data.get("localizer"))

    @classmethod
    def of_model(cls, model) -> "RunFacts":
        """The facts a model object carries (`model.config.hubkit`, set by hubkit's loader); empty facts if none."""
        return cls.from_config(getattr(getattr(model, "config", None), cls.CONFIG_KEY, None))

    def or_else(self, other: "RunFacts") -> "RunFacts":
        """These facts, with the ones this lacks taken from `other`."""
        return RunFacts(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None else
                           getattr(other, f.name) for f in dataclasses.fields(self)})

    def missing(self) -> list[str]:
        """The facts a pipeline cannot work out for itself and that this run does not give."""
        return [name for name in ("slice_size",) if getattr(self, name) is None]

    @property
    def folder_picker(self) -> tuple[str, str | None]:
        """(picker mode, layout) a DICOM folder is read with: the training slices' own, except that slices picked at
        the annotators' coordinates (`coords`) are picked from geometry, which a consumer's folder always allows."""
        picker = self.picker or "geometry"
        if picker == "coords":
            return "geometry", None
        return picker, (self.crop or {}).get("layout")


def run_facts(run_dir: str | os.PathLike) -> RunFacts:
    """The facts of the run in RUN_DIR (a run or adapter folder; a folder without a record gives empty facts).

    Raises:
        ValueError: a record or calibration.json that cannot be read.
    """
    record = read_run(run_dir)
    manifest = record.manifest if record is not None else {}
    shipped = Path(run_dir) / LOCALIZER
    return RunFacts(slice_size=manifest.get("slice_size"), picker=manifest.get("picker"),
                    calibration=read_calibration(run_dir), label_counts=manifest.get("label_counts"),
                    source=str(run_dir), views=manifest.get("views"), crop=manifest.get("crop"),
                    localizer=str(shipped) if manifest.get("localizer") and shipped.is_dir() else None)
