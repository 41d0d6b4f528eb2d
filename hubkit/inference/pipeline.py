"""`pipeline("lumbar-classify")`: a LoRA adapter (folder or Hub repo) + its base -> 25 graded fields per study.

    import hubkit                                   # registers the task lazily (no transformers import here)
    from transformers import pipeline
    clf = pipeline("lumbar-classify", model="me/medgemma-lumbar")           # or a local run folder
    out = clf("train_images/4003253")                                       # a DICOM study folder
    out = clf({"images": [img1, img2], "views": ["Sagittal T2", "Axial T2 L4/L5"]})
    outs = clf([row1, row2, row3], batch_size=8)                            # dataset rows / several studies
    out["levels"]["L4L5"]["canal"]  # {"label": "M", "severity": "Moderate", "probs": {"N": .., "M": .., "S": ..}}
    raw = clf("train_images/4003253", calibrate=False)  # probabilities without the run's calibration.json

Loading (`hubkit.inference.loading`): the adapter's base + LoRA, the processor from the adapter folder.
transformers' factory swaps an adapter path for its base and would load the processor from the base, so the task
registers `LumbarAdapterModel` (an `AutoModelForImageTextToText` whose `from_pretrained` is `load_model`) as its
model class and the pipeline loads the processor itself. `model_kwargs={"load_in_4bit": False}` keeps a CUDA model
unquantized.

Decoding is `hubkit.inference.decoding.constrained_decode` (schema-forced, batched, probabilities per field); a
DICOM folder goes through the dataset builder's reader and slice picker (`load_study(..., picker=Picker.GEOMETRY)`),
so the pipeline sees the same images as training.

This module imports only the standard library at import time; the pipeline classes are built on first use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hubkit.run_record import RunFacts

from .inputs import read_coordinates, study_from_input
from .loading import LumbarLoadError, load_model, resolve_model_dir
from .registration import TASK, register

log = logging.getLogger("hubkit.inference")


def load_pipeline(model: str | os.PathLike, device: Any = None, batch_size: int | None = None,
                  dtype: Any = "auto", load_in_4bit: bool | None = None, **kwargs: Any):
    """`transformers.pipeline("lumbar-classify", model=...)` after making sure the task is registered.

    Args:
        model: run folder / adapter folder / Hub repo id of an adapter, or a full model (folder or repo); a repo
            is downloaded first (`hubkit.hub.download_snapshot`), so missing folders/repos fail with one message.
        device: torch device for the pipeline (default: CUDA if available, else CPU).
        batch_size: default batch size of calls.
        dtype: model dtype ("auto" = the checkpoint's).
        load_in_4bit: None = bf16 with the LoRA merged on CUDA, 4-bit nf4 only where bf16 does not fit
            (`loading.choose_4bit`); False = never; True = require it.
        kwargs: more `transformers.pipeline` arguments (e.g. `processor=`).
    """
    from hubkit._imports import require_inference

    require_inference("pipeline('lumbar-classify')")
    # the folder or repo first: a missing one is one line before transformers and torch are even imported
    src = resolve_model_dir(model, revision=kwargs.pop("revision", None), token=kwargs.get("token"))
    register()
    from transformers import pipeline

    model_kwargs = dict(kwargs.pop("model_kwargs", None) or {})
    if load_in_4bit is not None:
        model_kwargs["load_in_4bit"] = load_in_4bit
    return pipeline(TASK, model=str(src), device=device, batch_size=batch_size, dtype=dtype,
                    model_kwargs=model_kwargs, **kwargs)


class MissingViewsWarning(UserWarning):
    """A study was graded from fewer views than the model was trained with (its run's slot table; see the output's
    `missing_views`); filter it with `warnings.simplefilter("ignore", MissingViewsWarning)`."""


def _format(pred, views: list[str], notes: list[str], calibration=None, expected: list[str] | None = None
            ) -> dict[str, Any]:
    import warnings

    from hubkit import schema
    from hubkit.slots import VIEWS

    # Calibration moves the probabilities only: the labels and the JSON stay the decoder's answer (its argmax).
    probs = calibration.apply(pred.probs) if calibration is not None else pred.probs

    expected = list(expected or VIEWS)  # the run's slot table (its dataset's views)
    missing = [v for v in expected if v not in views]
    if missing:  # once per study: its grades rest on fewer images than training's
        warnings.warn(f"study {pred.study_id}: {len(missing)} of {len(expected)} views missing "
                      f"({', '.join(missing)}); the grades that depend on them are less reliable. See the "
                      "output's 'missing_views' and 'notes'.", MissingViewsWarning, stacklevel=2)
    levels = {}
    for lv in schema.LEVELS:
        levels[lv] = {}
        for c in schema.CONDITIONS:
            code = pred.labels[lv][c]
            p = probs[schema.label_column(c, lv)]
            levels[lv][c] = {"label": code, "severity": schema.SEVERITY_NAMES[schema.CODES.index(code)],
                             "probs": dict(zip(schema.CODES, p))}
    return {"study_id": pred.study_id, "levels": levels, "json": pred.json, "probs": probs,
            "calibrated": calibration is not None, "views": list(views), "missing_views": missing, "notes": notes,
            "schema_mass": pred.schema_mass}


def _calibration(value: Any):
    """The `calibration=` parameter: a `Calibration`, its dict, a run folder holding one, or False (none);
    ValueError naming what it cannot use."""
    from hubkit.run_record import read_calibration

    from .calibration import Calibration

    if value is False:
        return None
    if isinstance(value, Calibration):
        return value
    if isinstance(value, dict):
        return Calibration.from_dict(value, "calibration=")
    if isinstance(value, (str, os.PathLike)):
        cal = read_calibration(value) if Path(value).is_dir() else None
        if cal is None:
            raise ValueError(f"calibration={str(value)!r}: not a folder with a calibration fitted by `hubkit "
                             "calibrate`")
        return cal
    raise TypeError(f"calibration= takes a Calibration, a dict, a run folder or False; got {type(value).__name__}")


def _collate(items: list[dict]) -> dict:
    return {"studies": [s for it in items for s in it["studies"]], "notes": [n for it in items for n in it["notes"]]}


def _preprocess(inputs: Any, slice_size: int | None = None, series_descriptions: Any = None,
                picker: str = "geometry", layout: str | None = None, coordinates: Any = None,
                localizer: str | None = None, return_images: bool = False) -> dict:
    study, notes = study_from_input(inputs, slice_size=slice_size, descriptions=series_descriptions, picker=picker,
                                    layout=layout, coordinates=coordinates, localizer=localizer)
    if return_images:
        study.shown = list(study.images)
    return {"studies": [study], "notes": [notes]}


def _encode(processor, dtype: Any, items: list[dict]) -> dict:
    """A batch for the decoder: the studies, their notes and the processor's tensors (pixel values in `dtype`)."""
    from .studies import prepare_inputs

    batch = _collate(items)
    encoded = prepare_inputs(processor, batch["studies"])
    if "pixel_values" in encoded and dtype is not None and dtype.is_floating_point:
        # the decoder casts them so anyway; doing it here halves what crosses from a worker process
        encoded["pixel_values"] = encoded["pixel_values"].to(dtype)
    for s in batch["studies"]:
        s.images = []  # encoded now; the images need not travel back from a worker
    return {**batch, "encoded": encoded}


def _worker_state(processor, dtype_name: str, params: dict) -> dict:
    """What each worker process of a pipeline holds (built once per process; see `batching.WorkerPool`)."""
    import torch

    return {"processor": processor, "dtype": getattr(torch, dtype_name, None), "params": params}


def _worker_batch(state: dict, chunk: list) -> tuple[list, dict]:
    items = [_preprocess(x, **state["params"]) for x in chunk]
    return items, _encode(state["processor"], state["dtype"], items)


# ------------------------------------------------------------------------------------------------ classes (lazy)
_CLASSES: tuple | None = None


def _classes():
    """Build (LumbarClassificationPipeline, LumbarAdapterModel) on first use (they need transformers)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import dataclasses
    import functools
    import weakref

    from transformers import AutoModelForImageTextToText, AutoProcessor, Pipeline

    from .answer_plan import answer_plan
    from .batching import WorkerPool, chunked, prefetched_batches
    from .decoding import constrained_decode
    from .studies import merge_encoded

    class LumbarAdapterModel(AutoModelForImageTextToText):
        """`from_pretrained(adapter_or_model)` = `loading.load_model` (base + adapter via PEFT; it refuses
        trust_remote_code)."""

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
            kwargs.pop("config", None)  # the factory passes the base's config; load_model reads it itself
            kwargs.pop("_from_pipeline", None)
            kwargs.pop("_commit_hash", None)
            return load_model(pretrained_model_name_or_path, dtype=kwargs.pop("dtype", "auto"),
                              load_in_4bit=kwargs.pop("load_in_4bit", None), revision=kwargs.pop("revision", None),
                              token=kwargs.pop("token", None), **kwargs)

    class LumbarClassificationPipeline(Pipeline):
        """Grades the 25 RSNA lumbar fields of a study with schema-constrained decoding.

        Call parameters: `batch_size`; `num_workers` (processes that read DICOM studies and run the processor
        for the next batches while the device works; default 0: one background thread); `method` ("auto":
        speculative for a single study, stepwise for batches, both exact; "stepwise"; "speculative"); `draft` (the
        speculative draft: one code or 25); `slice_size` (side of the slices read from DICOM; default: the run's,
        from its dataset manifest); `series_descriptions` (the RSNA series-descriptions CSV, or {series_id:
        description}; default: the CSV beside a `*_images/` folder, if there is one); `calibrate` (apply the model's
        calibration.json to the probabilities, default True when it has one; labels and JSON are never changed);
        `return_images` (the output's `images`: {view: the image the model was given}, for showing beside the
        grades; default False).

        Construction parameters (the run's facts; default: what the model carries in `model.config.hubkit`, which
        hubkit's loader sets from the run record, `hubkit.run_record.RunFacts`): `slice_size`; `calibration` (a
        `Calibration`, its dict, a run folder, or False for none). `self.facts` holds what the pipeline uses.
        """

        _load_processor = False
        _load_tokenizer = False
        _load_image_processor = False
        _load_feature_extractor = False
        _load_video_processor = False
        _pipeline_calls_generate = False

        def __init__(self, model, processor=None, *, slice_size: int | None = None, calibration: Any = None,
                     **kwargs):
            facts = RunFacts.of_model(model)  # set from the run record by hubkit's loader; empty otherwise
            if processor is None:
                processor = _load_processor(model, facts)
            super().__init__(model=model, processor=processor, **kwargs)
            if self._num_workers is None:
                self._num_workers = DEFAULT_WORKERS
            self.plan = answer_plan(self.processor.tokenizer)
            self.facts = dataclasses.replace(
                facts, slice_size=int(slice_size) if slice_size else facts.slice_size,
                calibration=facts.calibration if calibration is None else _calibration(calibration))
            # The side the training slices were stored at: DICOM folders are read at it, as the builder did.
            self.slice_size = self.facts.slice_size
            # Fitted by `hubkit calibrate` and shipped beside the adapter; applied unless a call says calibrate=False.
            self.calibration = self.facts.calibration
            missing = self.facts.missing()
            if missing and getattr(model.config, RunFacts.CONFIG_KEY, None) is None:
                # a model object hubkit's loader did not make: say now what DICOM folders will need
                log.warning("lumbar-classify: this model carries no run facts (it was not loaded from a hubkit run "
                            "folder or repo): pass %s to read DICOM study folders",
                            ", ".join(f"{m}=..." for m in missing))

        def _sanitize_parameters(self, method=None, draft=None, slice_size=None, series_descriptions=None,
                                 calibrate=None, coordinates=None, return_images=None, **kwargs):
            pre, fwd, post = {}, {}, {}
            if return_images:  # the images the model was given, by view: what a demo shows beside the grades
                pre["return_images"] = post["return_images"] = True
            if coordinates is not None:
                pre["coordinates"] = read_coordinates(coordinates)
            if calibrate is not None:
                post["calibrate"] = bool(calibrate)
            if slice_size is not None:
                pre["slice_size"] = int(slice_size)
            if series_descriptions is not None:
                pre["series_descriptions"] = series_descriptions
            if method is not None:
                fwd["method"] = method
            if draft is not None:
                fwd["draft"] = draft
            if kwargs:
                raise TypeError(f"lumbar-classify got unknown arguments {sorted(kwargs)}")
            return pre, fwd, post

        def __call__(self, inputs, *args, **kwargs):
            if _is_hf_dataset(inputs):  # map-style or streamed: rows in batches, results as an iterator
                inputs = (row for row in inputs)
            return super().__call__(inputs, *args, **kwargs)

        def preprocess(self, inputs, slice_size: int | None = None, series_descriptions: Any = None,
                       coordinates: Any = None, return_images: bool = False):
            return _preprocess(inputs, **self._read_params(slice_size, series_descriptions, coordinates,
                                                           return_images))

        def _read_params(self, slice_size=None, series_descriptions=None, coordinates=None,
                         return_images=False) -> dict:
            """How a study is read: the call's parameters, else the run's facts (picker, layout, slice size)."""
            picker, layout = self.facts.folder_picker
            return {"slice_size": slice_size or self.slice_size, "series_descriptions": series_descriptions,
                    "picker": picker, "layout": layout, "coordinates": coordinates, "localizer": self.facts.localizer,
                    "return_images": return_images}

        def _forward(self, model_inputs, method: str = "auto", draft: Any = "N"):
            studies = model_inputs["studies"]
            if method == "auto":  # both exact: one prefill + a pass per field the draft got wrong, or 25 steps
                method = "speculative" if len(studies) == 1 and self.plan.kind == "template" else "stepwise"
            preds = constrained_decode(self.model, self.processor, studies, method=method, draft=draft, plan=self.plan,
                                       encoded=model_inputs.get("encoded"))
            return {"results": [(p, s, n) for p, s, n in zip(preds, studies, model_inputs["notes"])]}

        def _encode(self, items: list[dict]) -> dict:
            return _encode(self.processor, self.model.dtype, items)

        def _merge(self, singles: list[dict]) -> dict:
            pad = self.processor.tokenizer.pad_token_id or 0
            return {**_collate(singles), "encoded": merge_encoded([b["encoded"] for b in singles], pad)}

        def _pool(self, workers: int, params: dict) -> WorkerPool:
            """This pipeline's worker processes, started on first use and kept for its later calls."""
            key = (workers, repr(sorted(params.items())))
            current = getattr(self, "_worker_pool", None)
            if current is None or current[0] != key:
                if current is not None:
                    current[1].close()
                pool = WorkerPool(workers, _worker_state,
                                  (self.processor, str(self.model.dtype).replace("torch.", ""), params), _worker_batch)
                weakref.finalize(self, pool.close)
                self._worker_pool = current = (key, pool)
            return current[1]

        def postprocess(self, model_outputs, calibrate: bool = True, return_images: bool = False):
            res = model_outputs["results"]
            if isinstance(res, list):
                res = res[0]
            pred, study, notes = res
            out = _format(pred, study.views, notes, self.calibration if calibrate else None, self.facts.views)
            if return_images:
                out["images"] = dict(zip(study.views, study.shown or []))
            if study.points is None:
                return out
            from .localized import with_priors  # a study located by the model's own localiser

            return with_priors({**out, "points": study.points}, study.unplaced, self.facts.label_counts)

        def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params,
                         postprocess_params):
            from transformers.pipelines.pt_utils import PipelineIterator

            # The next batches are read and run through the processor (in worker processes, or on a thread) while
            # this one is on the device.
            params = self._read_params(**preprocess_params)
            if num_workers:  # each study read and encoded by whichever worker is free; batches merged here
                pool = self._pool(num_workers, params)
                singles = (encoded for _, encoded in pool.batches(chunked(inputs, 1), depth=2 * batch_size))
                batches = (self._merge(group) for group in chunked(singles, batch_size))
            else:
                load = functools.partial(_preprocess, **params)
                batches = (encoded for _, encoded in prefetched_batches(inputs, batch_size, load, self._encode))
            model_iterator = PipelineIterator(batches, self.forward, forward_params, loader_batch_size=batch_size)
            return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _load_processor(model, facts):
        candidates = [c for c in dict.fromkeys((facts.source, getattr(model, "name_or_path", None))) if c]
        errors = []
        for c in candidates:
            try:
                return AutoProcessor.from_pretrained(c)
            except (OSError, ValueError, TypeError) as e:
                errors.append(f"{c}: {e}")
        raise LumbarLoadError("no processor found (looked in " + "; ".join(errors or ["nothing to look in"]) + ")")

    for c in (LumbarAdapterModel, LumbarClassificationPipeline):
        c.__module__ = __name__
        c.__qualname__ = c.__name__
    _CLASSES = (LumbarClassificationPipeline, LumbarAdapterModel)
    return _CLASSES


# Worker processes for reading studies by default: none, so the next batch is read on one background thread.
# `num_workers=N` puts N processes on it instead; on CPU they would fight the model for the cores, and on a GPU
# machine our one measurement of them stalled (BENCHMARKS.md 3c), so they are not the default until measured.
DEFAULT_WORKERS = 0


def _is_hf_dataset(x: Any) -> bool:
    """A `datasets.Dataset` or `IterableDataset` (checked without importing datasets)."""
    return any(c.__module__.startswith("datasets.") and c.__name__ in ("Dataset", "IterableDataset")
               for c in type(x).__mro__)


def __getattr__(name: str):
    if name == "LumbarClassificationPipeline":
        return _classes()[0]
    if name == "LumbarAdapterModel":
        return _classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

