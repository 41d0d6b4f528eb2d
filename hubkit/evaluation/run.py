"""`hubkit evaluate`: run the lumbar-classify pipeline over a dataset split, score it, write the files the card reads.

    from hubkit.evaluation import evaluate_model
    res = evaluate_model("runs/a", "runs/ds", split="validation", output="runs/a/eval", compare_base=True)
    res["finetuned"]["rsna_score"], res["base"]["kappa"]

Output folder (fixed names, owned by `hubkit.eval_record`; calibration and the model card read them there):

    eval_config.json                   what was evaluated: model, base, dataset, split, studies, decoding, device,
                                       versions, timing per variant, and this file list
    results_finetuned.json             every metric of `hubkit.evaluation.metrics.compute_all`
                                       (kappa, qwk, ..., rsna_score, confusion matrices) + a few metadata keys;
                                       `_`-prefixed keys are provenance (timestamp, versions). With the run's
                                       calibration.json applied (the default), `rsna_score` and `rsna_<group>` are
                                       calibrated and `rsna_score_raw` / `rsna_<group>_raw` the model's own;
                                       `calibrated` says which, `calibration` holds the parameters
    predictions.csv                    Kaggle submission format (row_id, normal_mild, moderate, severe), fine-tuned,
                                       calibrated when the run has calibration.json
    predictions.jsonl                  one line per study: study_id, json, labels, probs (raw: what `hubkit
                                       calibrate` fits on), probs_calibrated (when applied), references, views
    figures/finetuned/confusion_matrix.png, confusion_matrix_{canal,lf,rf,ls,rs}.png
    with compare_base (the untrained base of the adapter, same processor, same decoding):
    results_base.json  predictions_base.csv  predictions_base.jsonl  figures/base/confusion_matrix*.png

Predictions use schema-constrained decoding, so probabilities are the model's own per-field distributions (the
official RSNA log loss is computed from them) and there are no parse failures (`parse_failure_rate` = 0).
Calibration changes probabilities only: κ and the other label metrics use the decoder's labels either way.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

from hubkit import schema
from hubkit._imports import require_train, versions
from hubkit.eval_record import VARIANTS, EvalRecord, result_files, write_eval, write_results

# Metadata stored next to the metrics in results_<variant>.json.
_META_KEYS = ("variant", "model_id", "dataset_id", "split", "n_studies", "decoding", "studies_per_second", "calibrated",
              "calibration")
# The official score's parts, also reported on the raw probabilities (suffix _raw) next to the calibrated ones.
_RSNA_PARTS = ("rsna_score", "rsna_spinal", "rsna_foraminal", "rsna_subarticular", "rsna_any_severe_spinal")


def load_eval_split(dataset: str | os.PathLike, split: str = "validation", max_studies: int | None = None):
    """One split of a `save_to_disk` folder, a local Parquet/Arrow data folder or a Hub dataset repo
    (`hubkit.sources.open_split`), checked for the columns the pipeline and the metrics need.

    Raises:
        ValueError: unknown split, or the columns the pipeline / metrics need are missing.
        FileNotFoundError: neither a local path nor a Hub repo id.
    """
    from hubkit.sources import open_split

    ds = open_split(dataset, split)
    missing = [c for c in ("images", "views", *schema.LABEL_COLUMNS) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{dataset} [{split}] lacks columns the evaluation needs: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} (build it with `hubkit build-dataset`)")
    if max_studies is not None:
        ds = ds.select(range(min(int(max_studies), len(ds))))
    if len(ds) == 0:
        raise ValueError(f"{dataset} [{split}] has no studies")
    return ds


def evaluate_model(model: str | os.PathLike, dataset: str | os.PathLike, split: str = "validation", *,
                   output: str | os.PathLike, compare_base: bool = False, batch_size: int = 8,
                   max_studies: int | None = None, method: str = "stepwise", device: Any = None,
                   progress: bool = True, calibrate: bool = True) -> dict[str, Any]:
    """Predict every study of a split, score it, and write the output folder described in the module docstring.

    Args:
        model: adapter/run folder or Hub repo (a full model folder works too, without compare_base).
        dataset: `save_to_disk` folder, local Parquet folder or Hub dataset repo with the builder's columns.
        split: split to evaluate.
        output: output folder (created; files of an earlier run with the same names are overwritten).
        compare_base: also evaluate the adapter's base model, untrained, into the same folder.
        batch_size: studies per forward batch.
        max_studies: evaluate only the first N studies of the split.
        method: constrained decoding method, "stepwise" or "speculative" (same labels and probabilities).
        device: pipeline device (default: CUDA if available, else CPU).
        progress: show a tqdm progress bar per variant.
        calibrate: apply the model's calibration.json (when it has one) to the fine-tuned probabilities; the raw
            official score is reported too. The base model is never calibrated.

    Returns:
        {"output": folder, "finetuned": metrics, "base": metrics or None, "eval_config": its `EvalRecord`};
        metrics carry `rsna_score` (calibrated when `calibrated`), `rsna_score_raw` and `calibrated`.

    Raises:
        ValueError: bad dataset/split/columns, model or base not loadable, or compare_base for a full model.
        HubError: a Hub repo (model or dataset) not found / not visible.
    """
    from hubkit.inference.loading import base_model_of
    from hubkit.inference.pipeline import load_pipeline

    require_train("hubkit evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(output)
    ds = load_eval_split(dataset, split, max_studies)
    model_dir = _load(_resolve, model)
    base = _load(base_model_of, model_dir)
    if compare_base and base is None:
        raise ValueError(f"--compare-base needs an adapter (adapter_config.json) but {model} is a full model")
    out.mkdir(parents=True, exist_ok=True)
    common = {"dataset_id": str(dataset), "split": split, "n_studies": len(ds), "decoding": f"constrained-{method}"}

    t0 = time.perf_counter()
    pipe = _load(load_pipeline, model_dir, device=device)
    timing = {"finetuned": {"load_s": round(time.perf_counter() - t0, 3)}}
    calibration = pipe.calibration if calibrate else None
    metrics = {"finetuned": _run_variant("finetuned", pipe, ds, out, batch_size, method, progress,
                                         {**common, "model_id": str(model)}, timing["finetuned"], calibration)}
    env = {"device": str(pipe.device), "dtype": str(getattr(pipe.model, "dtype", "")).replace("torch.", ""),
           "quantized_4bit": bool(getattr(pipe.model, "is_loaded_in_4bit", False)),
           "answer_plan": pipe.plan.kind}
    processor = pipe.processor
    del pipe
    _free()
    metrics["base"] = None
    if compare_base:
        t0 = time.perf_counter()
        base_pipe = _load(load_pipeline, base, device=device, processor=processor)  # same prompt tokens
        timing["base"] = {"load_s": round(time.perf_counter() - t0, 3)}
        metrics["base"] = _run_variant("base", base_pipe, ds, out, batch_size, method, progress,
                                       {**common, "model_id": str(base)}, timing["base"])
        del base_pipe
        _free()

    record = EvalRecord(
        model=str(model), model_dir=str(model_dir), base_model=base, dataset=str(dataset), split=split,
        n_studies=len(ds), study_ids=[str(s) for s in ds["study_id"]] if "study_id" in ds.column_names else None,
        max_studies=max_studies, batch_size=batch_size,
        decoding={"method": method, "constrained": True,
                  "probabilities": "softmax over the N/M/S tokens at each answer field"},
        compare_base=compare_base, **env, calibration=calibration.to_dict() if calibration is not None else None,
        slices=_slices(dataset), timing=timing, files={v: result_files(v) for v in VARIANTS if metrics[v] is not None},
        versions=versions(("hubkit", "torch", "transformers", "peft", "datasets", "evaluate", "bitsandbytes")),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_eval(out, record)
    return {"output": str(out), "finetuned": metrics["finetuned"], "base": metrics["base"], "eval_config": record}


def _run_variant(variant: str, pipe, ds, out: Path, batch_size: int, method: str, progress: bool,
                 meta: dict, timing: dict, calibration=None) -> dict:
    from tqdm.auto import tqdm

    from hubkit.evaluation.metrics import (compute_all, load_metric, plot_confusion_matrices, study_rows,
                                           write_submission_csv)

    files = result_files(variant)
    refs = ds.select_columns([c for c in ("study_id", *schema.LABEL_COLUMNS) if c in ds.column_names])
    t0 = time.perf_counter()
    outputs = []
    stream = pipe(ds, batch_size=batch_size, method=method, calibrate=False)  # raw: calibrated below, both kept
    for o in tqdm(stream, total=len(ds), desc=f"evaluate {variant}", unit="study", disable=not progress):
        outputs.append(o)
    elapsed = time.perf_counter() - t0
    timing.update(predict_s=round(elapsed, 3), studies_per_s=round(len(ds) / max(elapsed, 1e-9), 4))

    rows, raw_rows, lines = [], [], []
    for i, (o, ref) in enumerate(zip(outputs, refs)):
        sid = str(ref.get("study_id") or o.get("study_id") or i)
        labels = {c: int(ref[c]) if ref[c] is not None else -1 for c in schema.LABEL_COLUMNS}
        # the decoder's labels, whatever calibration does to the probabilities
        preds = {schema.label_column(c, lv): schema.CODES.index(o["levels"][lv][c]["label"])
                 for lv in schema.LEVELS for c in schema.CONDITIONS}
        probs = calibration.apply(o["probs"]) if calibration is not None else o["probs"]
        rows += study_rows(sid, labels, probs=probs, preds=preds)
        raw_rows += study_rows(sid, labels, probs=o["probs"], preds=preds) if calibration is not None else []
        codes = schema.labels_to_codes(labels)
        lines.append(json.dumps({
            "study_id": sid, "json": o["json"],
            "labels": {lv: {c: o["levels"][lv][c]["label"] for c in schema.CONDITIONS} for lv in schema.LEVELS},
            "probs": o["probs"], **({"probs_calibrated": probs} if calibration is not None else {}),
            "references": codes, "views": o["views"], "schema_mass": o.get("schema_mass"),
        }, separators=(",", ":")))
    results = compute_all(rows, parse_failures=[False] * len(outputs))
    if calibration is not None:
        raw = load_metric("rsna_lumbar_metric").compute(
            row_ids=[r["row_id"] for r in raw_rows], predictions=[r["probs"] for r in raw_rows],
            references=[r["reference"] for r in raw_rows])
    else:
        raw = results
    results.update({f"{k}_raw": raw[k] for k in _RSNA_PARTS})
    clash = set(results) & set(_META_KEYS)
    if clash:
        raise RuntimeError(f"metric keys clash with metadata keys: {sorted(clash)}")
    write_submission_csv(out / files["predictions_csv"], rows)
    (out / files["predictions_jsonl"]).write_text("\n".join(lines) + "\n")
    plot_confusion_matrices(results, out / files["figures"])
    record = {**results, "variant": variant, **meta, "studies_per_second": timing["studies_per_s"],
              "calibrated": calibration is not None,
              "calibration": calibration.to_dict() if calibration is not None else None}
    write_results(out, variant, record)
    return {**results, "calibrated": calibration is not None}


def _slices(dataset) -> dict:
    """How the evaluated slices were made: the dataset's picker and slice size (its manifest), for the card."""
    from hubkit.manifest import read_manifest

    manifest = read_manifest(dataset) or {}
    return {"picker": manifest.get("picker"), "slice_size": manifest.get("slice_size")}


def _resolve(model):
    from hubkit.inference.loading import resolve_model_dir

    return resolve_model_dir(model)


def _load(fn, *args, **kwargs):
    """Loading errors as ValueError (the CLI shows those as one line)."""
    from hubkit.inference.loading import LumbarLoadError

    try:
        return fn(*args, **kwargs)
    except LumbarLoadError as e:
        raise ValueError(str(e)) from e


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
