"""The evaluation folder's contract: what `hubkit evaluate` writes, and what calibration and the card read.

    eval_config.json                   `EvalRecord`: model, base, dataset, split, studies, decoding, device, slices,
                                       calibration applied, timing per variant, versions, and the file list
    results_<variant>.json             every metric + metadata keys; `_`-prefixed keys are provenance
    predictions<suffix>.csv            the competition's submission format
    predictions<suffix>.jsonl          one line per study: labels, raw and calibrated probabilities, references
    figures/<variant>/confusion_matrix*.png

`<variant>` is `finetuned` (suffix "") or `base` (suffix `_base`). A model card shows an evaluation from the run
folder itself: `hubkit card --eval` copies its summary there (`hubkit_evaluation.json`, `write_snapshot`), so a
later push renders the same card for whatever repo it goes to without the evaluation folder.

    from hubkit.eval_record import read_eval, read_results, result_files
    read_results("runs/a/eval")["finetuned"]["kappa"]
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

EVAL_FILE = "eval_config.json"
SNAPSHOT_FILE = "hubkit_evaluation.json"  # in a run folder: the evaluation its card shows
VARIANTS = ("finetuned", "base")
SCHEMA_VERSION = 1

__all__ = ["EVAL_FILE", "SNAPSHOT_FILE", "VARIANTS", "EvalRecord", "result_files", "write_eval", "read_eval",
           "write_results", "read_results", "predictions_file", "confusion_pngs", "check_finished",
           "write_snapshot", "read_snapshot"]


def result_files(variant: str) -> dict[str, str]:
    """Relative paths of one variant's files in an evaluation folder."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    suffix = "" if variant == "finetuned" else "_base"
    return {"results": f"results_{variant}.json", "predictions_csv": f"predictions{suffix}.csv",
            "predictions_jsonl": f"predictions{suffix}.jsonl", "figures": f"figures/{variant}"}


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """`eval_config.json`: one `hubkit evaluate` run."""

    # The model as given (run folder or repo), the dataset and its split, and how many of its studies were scored.
    model: str
    dataset: str
    split: str
    n_studies: int
    # Where the model's files were read (a Hub repo's snapshot), and its base (None for a full model).
    model_dir: str | None = None
    base_model: str | None = None
    # The studies in the order they were scored; `max_studies` the cap asked for.
    study_ids: list | None = None
    max_studies: int | None = None
    batch_size: int | None = None
    # Constrained decoding's method; `answer_plan` how the answer's tokens were fed ("template" or "per_choice").
    decoding: dict = dataclasses.field(default_factory=dict)
    compare_base: bool = False
    # What the model ran on and in.
    device: str | None = None
    dtype: str | None = None
    quantized_4bit: bool = False
    answer_plan: str | None = None
    # The calibration applied to the fine-tuned probabilities (its fields), or None.
    calibration: dict | None = None
    # How the evaluated slices were made: the dataset manifest's picker and slice size.
    slices: dict = dataclasses.field(default_factory=dict)
    timing: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)
    versions: dict = dataclasses.field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = EVAL_FILE) -> "EvalRecord":
        data = dict(data)
        version = data.setdefault("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"{where}: evaluation record schema {version!r} is newer than this hubkit reads; "
                             "upgrade hubkit")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; written by a newer hubkit? upgrade hubkit")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"{where}: not an evaluation record ({e})") from None


def write_eval(folder: str | os.PathLike, record: EvalRecord) -> Path:
    """Write FOLDER/eval_config.json (with the file list of every variant evaluated); returns its path."""
    path = Path(folder) / EVAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(dataclasses.asdict(record), default=str))
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_eval(folder: str | os.PathLike) -> EvalRecord | None:
    """The folder's evaluation record, or None when it has none (ValueError when it cannot be read)."""
    path = Path(folder) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        return EvalRecord.from_dict(json.loads(path.read_text()), str(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


def write_results(folder: str | os.PathLike, variant: str, record: Mapping[str, Any]) -> Path:
    """results_<variant>.json: metrics + metadata, and `_`-prefixed provenance keys (`evaluate.save`'s layout,
    without its shelling out to git in whatever folder the user stands in)."""
    from hubkit import __version__

    path = Path(folder) / result_files(variant)["results"]
    meta = {"_timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "_hubkit_version": __version__, "_python_version": platform.python_version()}
    path.write_text(json.dumps({**record, **meta}, indent=2, default=float) + "\n")
    return path


def read_results(folder: str | os.PathLike | None) -> dict[str, dict]:
    """{"finetuned": {...}, "base": {...}} of an evaluation folder, provenance keys left out; a variant that was
    not evaluated is absent."""
    out: dict[str, dict] = {}
    for variant in VARIANTS if folder is not None else ():
        path = Path(folder) / result_files(variant)["results"]
        if path.is_file():
            out[variant] = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    return out


def predictions_file(folder: str | os.PathLike, variant: str = "finetuned", kind: str = "jsonl") -> Path:
    """The predictions of one variant: `kind` "jsonl" (per study, raw probabilities) or "csv" (submission)."""
    return Path(folder) / result_files(variant)[f"predictions_{kind}"]


def confusion_pngs(folder: str | os.PathLike, variant: str = "finetuned") -> list[Path]:
    """One variant's confusion-matrix figures in an evaluation folder, sorted."""
    return sorted((Path(folder) / result_files(variant)["figures"]).glob("confusion_matrix*.png"))


def check_finished(folder: str | os.PathLike) -> EvalRecord:
    """The record of a finished evaluation folder; FileNotFoundError saying what is missing."""
    d = Path(folder)
    record = read_eval(d) if d.is_dir() else None
    if record is None or not (d / result_files("finetuned")["results"]).is_file():
        raise FileNotFoundError(f"{d}: not a finished `hubkit evaluate` folder (no {EVAL_FILE} with results); run "
                                f"`hubkit evaluate --output {d}` first")
    return record


def _display(source: str | None) -> str | None:
    from hubkit.sources import display_name

    return display_name(source) if source else source


def write_snapshot(run_dir: str | os.PathLike, eval_dir: str | os.PathLike) -> Path:
    """Copy what a card shows of EVAL_DIR's evaluation into RUN_DIR/hubkit_evaluation.json: the metrics of each
    variant and how the evaluation was made, local paths reduced to folder names (the file is published)."""
    record = check_finished(eval_dir)
    results = read_results(eval_dir)
    for res in results.values():
        for key in ("dataset_id", "model_id"):
            res[key] = _display(res.get(key))
    cal = dict(record.calibration) if record.calibration else None
    if cal is not None:
        cal["dataset"] = _display(cal.get("dataset"))
    summary = {"split": record.split, "n_studies": record.n_studies, "dataset": _display(record.dataset),
               "slices": record.slices, "decoding": record.decoding, "calibration": cal}
    path = Path(run_dir) / SNAPSHOT_FILE
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "evaluation": summary, "results": results},
                               indent=2, default=float) + "\n")
    return path


def read_snapshot(run_dir: str | os.PathLike) -> tuple[dict, dict[str, dict]] | None:
    """(how the evaluation was made, {variant: metrics}) from RUN_DIR/hubkit_evaluation.json, or None."""
    path = Path(run_dir) / SNAPSHOT_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("schema_version", 1) > SCHEMA_VERSION:
        raise ValueError(f"{path}: not an evaluation summary this hubkit reads; re-run `hubkit card --eval`")
    return data.get("evaluation") or {}, data.get("results") or {}
