"""`hubkit predict`: a competition-layout test folder -> the submission CSV; batched, resumable, over N processes.

    hubkit predict /data/rsna --model me/medgemma-lumbar --output submission.csv --batch-size 8

    from hubkit.inference.predict import predict_folder
    report = predict_folder("/data/rsna", "me/medgemma-lumbar", "submission.csv")
    report.predicted, report.failed

Input: DATA_DIR/test_images/<study>/<series>/*.dcm (or DATA_DIR itself when it is an `*_images` folder), with
DATA_DIR/test_series_descriptions.csv when present (found beside the images folder, as the pipeline does). Studies
are read with the pipeline's picker and pixel path at the run's slice size and decoded exactly as `hubkit evaluate`
decodes (schema-constrained, stepwise), with the run's calibration.json applied unless `calibrate=False`.

Output: `row_id,normal_mild,moderate,severe`, 25 rows per study, studies in folder order (numeric ids by value).

Resuming: rows are appended batch by batch and flushed, so a re-run after an interruption reads what is there,
drops a study cut short at the end, and predicts only the rest; batches keep their boundaries, so the finished file
holds the studies, rows and grades a single uninterrupted run writes (probabilities equal to the last digits, which
depend on how the studies were batched). A note beside the output (`.<name>.predict.json`) says which model (its
weights' fingerprint) and settings wrote it: a later run with another model, calibration or slice size refuses to
extend or keep that file, naming both, unless `overwrite=True` (`--overwrite`) starts it afresh.

Several processes (`--num-gpus N`, or torchrun): batch j goes to rank j mod N, each rank appends to its own part
file (`.<name>.part<rank>.csv`), and rank 0, after a barrier, merges everything in study order into one file with
the same rows as one process.

A study that cannot be read gets the class priors for its 25 rows and a one-line warning naming it and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable

from hubkit import schema
from hubkit.distributed import World, pin_device, world

from . import resume
from .submission import study_rows

# RSNA 2024 train.csv label counts per official group (Normal/Mild, Moderate, Severe), the competition's public
# training labels: the prior of an unreadable study when the run's dataset recorded no label counts.
RSNA_GROUP_COUNTS: dict[str, tuple[int, int, int]] = {
    "spinal": (8664, 736, 470), "foraminal": (15357, 3564, 779), "subarticular": (13733, 3660, 1840)}

__all__ = ["PredictReport", "UnreadableStudyWarning", "find_studies", "class_priors", "predict_folder"]


class UnreadableStudyWarning(UserWarning):
    """A study of the test folder could not be read; its rows hold the class priors."""


@dataclasses.dataclass(frozen=True)
class PredictReport:
    """What one process of `predict_folder` did (rank 0's report describes the merged file)."""

    # The submission file (complete only once rank 0 has merged).
    output: str
    # Studies in the test folder, all ranks together.
    studies: int
    # Studies this process wrote now (priors included) / found already written by an earlier, interrupted run.
    predicted: int
    reused: int
    # (study id, reason) of the studies this process could not read (their rows hold the priors).
    failed: tuple[tuple[str, str], ...]
    # Whether the model's calibration.json was applied.
    calibrated: bool
    # False on ranks other than 0 (which print nothing).
    main: bool = True


def find_studies(data_dir: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(images folder, its study folders in submission order): DATA_DIR/test_images, or DATA_DIR when it is an
    `*_images` folder; numeric study ids sort by value. Raises FileNotFoundError naming what is missing."""
    root = Path(data_dir)
    images = root if root.name.endswith("_images") else root / "test_images"
    if not images.is_dir():
        raise FileNotFoundError(f"{root}: no test_images/ folder (expected test_images/<study>/<series>/*.dcm; or "
                                "pass the *_images folder itself)")
    studies = [p for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not studies:
        raise FileNotFoundError(f"{images}: no study folders")
    return images, sorted(studies, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0,
                                                  p.name))


def class_priors(label_counts: dict | None) -> dict[str, list[float]]:
    """{label column: [pN, pM, pS]} for a study the model could not see: per condition p_k ∝ 2**k * n_k, the
    constant that minimises the official (1/2/4-weighted) log-loss, from the run's dataset label counts
    ({condition: [N, M, S, missing]}, the manifest's `label_counts`); RSNA's own counts where those are absent."""
    counts = label_counts or {}
    out = {}
    for c in schema.CONDITIONS:
        n = [float(x) for x in (counts.get(c) or [])[:3]]
        if len(n) != 3 or sum(n) <= 0:
            n = [float(x) for x in RSNA_GROUP_COUNTS[schema.CONDITION_GROUP[c]]]
        w = [2.0 ** k * (x + 1.0) for k, x in enumerate(n)]  # +1: a grade never seen still gets some mass
        p = [x / sum(w) for x in w]
        for lv in schema.LEVELS:
            out[schema.label_column(c, lv)] = p
    return out


def predict_folder(data_dir: str | os.PathLike, model: str | os.PathLike, output: str | os.PathLike, *,
                   batch_size: int = 8, calibrate: bool = True, series_descriptions: Any = None,
                   slice_size: int | None = None, method: str = "stepwise", device: Any = None,
                   num_workers: int | None = None, progress: bool = True, overwrite: bool = False,
                   coordinates: Any = None, on_warning: Callable[[str], None] | None = None) -> PredictReport:
    """Write the submission CSV of every study under DATA_DIR (see the module docstring); returns a report.

    Args:
        data_dir: competition-layout folder (test_images/ + test_series_descriptions.csv) or an `*_images` folder.
        model: run folder or Hub repo of the adapter (as for the pipeline).
        output: the CSV to write; if it exists from an interrupted run with this model, it is continued.
        batch_size: studies per forward pass.
        calibrate: apply the model's calibration.json (when it has one).
        series_descriptions: the series-descriptions CSV or {series_id: description} (default: found beside).
        slice_size: side of the slices read from DICOM (default: the run's, from its dataset manifest).
        method: constrained decoding method ("stepwise", as `hubkit evaluate`, or "speculative").
        device: pipeline device (default: this rank's GPU, else CPU).
        num_workers: processes reading DICOM ahead of the device (default: the pipeline's choice for the device).
        progress: show a progress bar (rank 0).
        overwrite: replace an output written by another model or with other settings (else: ValueError).
        coordinates: for a model trained on crops, the studies' points (a CSV in train_label_coordinates.csv's
            format, or {study_id: rows}); a study without points is unreadable for such a model (priors, warning).
        on_warning: called with each one-line warning (default: `warnings.warn(..., UnreadableStudyWarning)`).

    Raises:
        FileNotFoundError: no test_images/ or no studies. ValueError: the model cannot be loaded, the output is
            not a submission of this folder, or an earlier run wrote it with another model or settings.
    """
    from hubkit._imports import require_inference

    require_inference("hubkit predict")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    w = world()
    _, studies = find_studies(data_dir)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with resume.group(w):
        reading = {"slice_size": slice_size, "series_descriptions": series_descriptions, "coordinates": coordinates}
        return _predict(studies, out, overwrite, w, model, batch_size, calibrate, reading, method, device,
                        num_workers, progress, on_warning)


def _predict(studies, out, overwrite, w, model, batch_size, calibrate, reading, method, device, num_workers,
             progress, on_warning) -> PredictReport:
    from tqdm.auto import tqdm

    from .batching import WorkerPool, prefetched_batches
    from .pipeline import DEFAULT_WORKERS

    pin_device(w)
    pipe = _pipeline(model, device, w)  # before any file is touched: a model that does not load leaves no trace
    params = pipe._read_params(**reading)  # how a study is read: the run's picker and size, unless given
    size = params["slice_size"]
    from hubkit.slots import mode

    if mode(params["picker"]).coordinates == "required" and not (params["coordinates"] or params["localizer"]):
        raise ValueError(f"{model}: this model was trained on {params['picker']} at each level's points: pass "
                         "--coordinates (a CSV in train_label_coordinates.csv's format), or use a model that ships a "
                         "localiser")
    if not size:  # else every study would fail to read, and get the priors
        raise ValueError(f"{model}: the run does not say at which size its training slices were stored (its run "
                         "record has no dataset manifest); pass --slice-size N, the dataset's --slice-size")
    cal = pipe.calibration if calibrate else None
    note = {"model": str(model), "fingerprint": resume.fingerprint(pipe.facts.source),
            "calibration": cal.to_dict() if cal is not None else None, "slice_size": size}
    done = resume.written(out, studies, note, w, overwrite)
    resume.barrier(w)  # every rank has read what earlier runs wrote before any rank writes
    batches = [studies[i:i + batch_size] for i in range(0, len(studies), batch_size)]
    mine = [[s for s in b if s.name not in done] for j, b in enumerate(batches) if j % w.size == w.rank]
    mine = [b for b in mine if b]
    target = resume.part_path(out, w.rank) if w.distributed else out
    resume.truncate_to_complete(target)

    priors = class_priors(pipe.facts.label_counts)  # the run's own, read once by the loader
    workers = DEFAULT_WORKERS if num_workers is None else num_workers
    warn = on_warning or (lambda m: warnings.warn(m, UnreadableStudyWarning, stacklevel=3))
    read = functools.partial(_read_batch, params=params)
    failed, predicted = [], 0
    bar = tqdm(total=sum(map(len, mine)), desc="predict", unit="study", disable=not (progress and w.main))
    pool = WorkerPool(workers, _reader, (params,), _read_in_worker) if workers > 0 else None
    # one chunk = one of this rank's batches, read ahead (threads, or `workers` processes) while the device works
    stream = prefetched_batches(mine, 1, prepare=lambda chunk: read(chunk[0]), pool=pool)
    with bar, contextlib.closing(pool) if pool is not None else contextlib.nullcontext():
        for _, loaded in stream:
            readable = [d for _, d, _ in loaded if d is not None]
            outs = iter(pipe(readable, batch_size=len(readable), method=method, calibrate=calibrate)
                        if readable else [])
            rows = []
            for sid, d, reason in loaded:
                if d is None:
                    warn(f"study {sid} cannot be read: {reason}; wrote the class priors for its 25 rows")
                    failed.append((sid, reason))
                    rows += study_rows(sid, priors)
                else:
                    rows += study_rows(sid, next(outs)["probs"])
            resume.append(target, rows)
            predicted += len(loaded)
            bar.update(len(loaded))
    resume.barrier(w)  # every part file is complete
    if w.main:
        resume.merge(out, studies)
    return PredictReport(str(out), len(studies), predicted, len(done), tuple(failed),
                         bool(calibrate and pipe.calibration is not None), w.main)


# ------------------------------------------------------------------------------------------------ plumbing
def _read_batch(paths: list[Path], params: dict) -> list[tuple[str, Any, str | None]]:
    """(study id, {"images", "views", "study_id"} or None, reason it could not be read) per study folder."""
    from .inputs import study_from_input

    out = []
    for p in paths:
        try:
            study, _ = study_from_input(str(p), params["slice_size"], params["series_descriptions"],
                                        picker=params["picker"], layout=params["layout"],
                                        coordinates=params["coordinates"], localizer=params["localizer"])
            out.append((p.name, {"images": study.images, "views": study.views, "study_id": p.name,
                                 "points": study.points, "unplaced": study.unplaced}, None))
        except Exception as e:  # noqa: BLE001 - one unreadable study must not cost the whole test set
            cause = e.__cause__ or e  # the reader's own message (it names the folder or file), not the wrapper's
            reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            out.append((p.name, None, reason))
    return out


def _reader(params: dict) -> dict:
    """A reading worker's state (`batching.WorkerPool`)."""
    return {"params": params}


def _read_in_worker(state: dict, chunk: list[list[Path]]) -> tuple[list, Any]:
    return chunk, _read_batch(chunk[0], **state)


def _pipeline(model, device, w: World):
    from .loading import LumbarLoadError
    from .pipeline import load_pipeline

    if device is None and w.distributed:
        import torch

        device = f"cuda:{w.local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        return load_pipeline(model, device=device)
    except LumbarLoadError as e:
        raise ValueError(str(e)) from e
