"""`pipeline("lumbar-classify")`: a LoRA adapter (folder or Hub repo) + its base -> 25 graded fields per study.

    import hubkit                                   # registers the task lazily (no transformers import here)
    from transformers import pipeline
    clf = pipeline("lumbar-classify", model="me/medgemma-lumbar")           # or a local run folder
    out = clf("train_images/4003253")                                       # a DICOM study folder
    out = clf({"images": [img1, img2], "views": ["Sagittal T2", "Axial T2 L4/L5"]})
    outs = clf([row1, row2, row3], batch_size=8)                            # dataset rows / several studies
    out["levels"]["L4L5"]["canal"]  # {"label": "M", "severity": "Moderate", "probs": {"N": .., "M": .., "S": ..}}

Loading: `adapter_config.json`'s `base_model_name_or_path` is loaded (4-bit nf4 on CUDA when bitsandbytes is
installed, else the checkpoint dtype: bf16 or fp32), the adapter is applied with PEFT (which, unlike transformers'
own adapter loader, restores `modules_to_save` weights) and merged unless the base is quantized; the processor comes
from the adapter folder. transformers' factory swaps an adapter path for its base and would load the processor from
the base, so the task registers `LumbarAdapterModel` (an `AutoModelForImageTextToText` whose `from_pretrained` does
the above) as its model class and the pipeline loads the processor itself. `model_kwargs={"load_in_4bit": False}`
keeps a CUDA model unquantized.

Decoding is `hubkit.decoding.constrained_decode` (schema-forced, batched, probabilities per field); a DICOM folder
goes through the dataset builder's reader and slice picker (`load_study(..., mode="geometry")`), so the pipeline
sees the same images as training.

This module imports only the standard library at import time; the pipeline classes are built on first use.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

TASK = "lumbar-classify"
ADAPTER_CONFIG = "adapter_config.json"
# Files fetched from a Hub repo: adapter/model weights + configs + processor files (never checkpoints/ or logs/).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


class LumbarLoadError(Exception):
    """The model/adapter could not be loaded.

    Deliberately not an OSError/ValueError/TypeError/RuntimeError: transformers' `pipeline()` catches those from a
    model class and silently retries with the next class (its own adapter loader), hiding the reason.
    """


def register() -> None:
    """Register "lumbar-classify" in transformers' PIPELINE_REGISTRY (imports transformers; idempotent)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    pipe_cls, model_cls = _classes()
    current = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if current is not None and current.get("impl") is pipe_cls:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=pipe_cls, pt_model=model_cls, type="multimodal")


def _register_quietly() -> None:
    try:
        register()
    except Exception as e:  # never break `import transformers.pipelines` for the user
        warnings.warn(f"hubkit could not register the {TASK!r} pipeline: {e}", stacklevel=2)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: runs `register()` right after `transformers.pipelines` has been imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers.pipelines":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            _register_quietly()

        spec.loader.exec_module = exec_module
        return spec


def install_lazy_registration() -> None:
    """Make "lumbar-classify" available to `transformers.pipeline` without importing transformers now.

    Registers at once if `transformers.pipelines` is already imported, else when it is first imported.
    `hubkit/__init__.py` calls this, so `import hubkit` stays fast (`hubkit --help`).
    """
    if "transformers.pipelines" in sys.modules:
        _register_quietly()
        return
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


def load_pipeline(model: str | os.PathLike, device: Any = None, batch_size: int | None = None,
                  dtype: Any = "auto", load_in_4bit: bool | None = None, **kwargs: Any):
    """`transformers.pipeline("lumbar-classify", model=...)` after making sure the task is registered.

    Args:
        model: run folder / adapter folder / Hub repo id of an adapter, or a full model (folder or repo); a repo
            is downloaded first (`hubkit.hub.download_snapshot`), so missing folders/repos fail with one message.
        device: torch device for the pipeline (default: CUDA if available, else CPU).
        batch_size: default batch size of calls.
        dtype: model dtype ("auto" = the checkpoint's).
        load_in_4bit: None = 4-bit nf4 on CUDA when bitsandbytes is installed; False = never; True = require it.
        kwargs: more `transformers.pipeline` arguments (e.g. `processor=`).
    """
    register()
    from transformers import pipeline

    src = resolve_model_dir(model, revision=kwargs.pop("revision", None), token=kwargs.get("token"))
    model_kwargs = dict(kwargs.pop("model_kwargs", None) or {})
    if load_in_4bit is not None:
        model_kwargs["load_in_4bit"] = load_in_4bit
    return pipeline(TASK, model=str(src), device=device, batch_size=batch_size, dtype=dtype,
                    model_kwargs=model_kwargs, **kwargs)


# ------------------------------------------------------------------------------------------------ model loading
def resolve_model_dir(model: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; anything else is a Hub repo id, downloaded (configs, weights, processor files)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    if p.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
        raise LumbarLoadError(f"{model}: not a model folder (and not a Hub repo id of the form owner/name)")
    from hubkit.hub import download_snapshot

    return download_snapshot(str(model), revision=revision, token=token, allow_patterns=_HUB_PATTERNS)


def base_model_of(model_dir: str | os.PathLike) -> str | None:
    """`base_model_name_or_path` from the folder's adapter_config.json, or None for a full model folder."""
    cfg = Path(model_dir) / ADAPTER_CONFIG
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise LumbarLoadError(f"{cfg}: no base_model_name_or_path; cannot tell which base model the adapter needs")
    return base


def _want_4bit(load_in_4bit: bool | None) -> bool:
    import importlib.util

    import torch

    if load_in_4bit is False or not torch.cuda.is_available():
        if load_in_4bit:
            raise LumbarLoadError("load_in_4bit=True needs a CUDA GPU")
        return False
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if load_in_4bit and not has_bnb:
        raise LumbarLoadError("load_in_4bit=True needs bitsandbytes: pip install 'hubkit[gpu]'")
    return has_bnb


def load_model(model: str | os.PathLike, dtype: Any = "auto", load_in_4bit: bool | None = None,
               revision: str | None = None, token: str | None = None, **from_pretrained_kwargs: Any):
    """Base + adapter (or a full model), ready for inference; `model._hubkit_source` = the folder it came from.

    Raises:
        LumbarLoadError: folder/repo/base model not found or not loadable (the message says which).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    src = resolve_model_dir(model, revision=revision, token=token)
    base = base_model_of(src)
    kwargs: dict[str, Any] = {k: v for k, v in from_pretrained_kwargs.items()
                              if k in ("device_map", "quantization_config", "attn_implementation", "cache_dir",
                                       "local_files_only")}
    if from_pretrained_kwargs.get("trust_remote_code"):
        raise LumbarLoadError("trust_remote_code=True is refused: hubkit never runs code shipped in a model repo")
    kwargs["dtype"] = dtype
    kwargs["use_safetensors"] = True  # never unpickle weights: .bin/.pt checkpoints can run code
    quantized = "quantization_config" in kwargs
    if not quantized and _want_4bit(load_in_4bit):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs.setdefault("device_map", {"": torch.cuda.current_device()})
        quantized = True
    target = base if base is not None else str(src)
    try:
        net = AutoModelForImageTextToText.from_pretrained(target, **kwargs)
    except (OSError, ValueError) as e:
        what = f"base model {base!r} named in {src / ADAPTER_CONFIG}" if base else f"model {src}"
        raise LumbarLoadError(f"could not load the {what}: {e}") from e
    if base is not None:
        from peft import PeftModel

        if not (src / "adapter_model.safetensors").is_file():
            raise LumbarLoadError(f"{src}: no adapter_model.safetensors; hubkit loads safetensors only (a .bin "
                                  "adapter is a pickle that can run code: re-save it with safe_serialization=True)")
        try:
            net = PeftModel.from_pretrained(net, str(src), is_trainable=False)
        except (OSError, ValueError, RuntimeError) as e:
            raise LumbarLoadError(f"could not apply the adapter in {src} to {base!r}: {e}") from e
        if not quantized:
            net = net.merge_and_unload()  # plain model: faster decoding, identical outputs
    net.eval()
    net._hubkit_source = str(src)
    net._hubkit_base = base
    return net


# ------------------------------------------------------------------------------------------------ inputs
def study_from_input(inputs: Any, image_size: int = 448):
    """A `decoding.StudyInput` (+ notes) from a study folder path, {"images", "views"[, "study_id", "prompt"]} or a
    dataset row. Raises ValueError saying what is missing or unreadable."""
    from hubkit.decoding import StudyInput

    if isinstance(inputs, (str, os.PathLike)):
        from hubkit.dataset_builder.dicom import DicomError
        from hubkit.dataset_builder.study import load_study

        path = Path(inputs)
        if path.is_file():
            raise ValueError(f"{path}: expected a study folder (one sub-folder of DICOM files per series), got a file")
        try:
            s = load_study(path, mode="geometry", image_size=image_size)
        except DicomError as e:
            raise ValueError(f"lumbar-classify cannot read study {path}: {e}") from e
        return StudyInput(s.images, s.views, study_id=s.study_id), list(s.notes)
    if isinstance(inputs, dict):
        missing = [k for k in ("images", "views") if k not in inputs or inputs[k] is None]
        if missing:
            raise ValueError(f"study dict lacks {missing}; expected {{'images': [...], 'views': [...]}} (one view name "
                             f"per image), got keys {sorted(inputs)}")
        images = [_to_pil(im, i) for i, im in enumerate(inputs["images"])]
        views = [str(v) for v in inputs["views"]]
        if len(images) != len(views) or not images:
            raise ValueError(f"got {len(images)} images and {len(views)} views; each image needs one view name")
        sid = inputs.get("study_id")
        return StudyInput(images, views, inputs.get("prompt"), None if sid is None else str(sid)), []
    raise TypeError(f"lumbar-classify takes a study folder path, a dict with images and views, or a dataset row; "
                    f"got {type(inputs).__name__}")


def _to_pil(im: Any, i: int):
    """A decoded PIL image from a PIL image, a path, a datasets Image value or an array (ValueError naming image i).

    Files and bytes are checked before decoding: more than MAX_PIXELS pixels (the DICOM reader's limit) or more
    than one frame is refused, so a small file that declares a gigantic image (a decompression bomb) costs nothing.
    """
    from PIL import Image

    from hubkit.dataset_builder.dicom import MAX_PIXELS

    if isinstance(im, Image.Image):
        return im
    if isinstance(im, (str, os.PathLike)):
        return _open_checked(im, i, str(im))
    if isinstance(im, dict) and (im.get("bytes") or im.get("path")):  # undecoded datasets Image value
        import io

        src = io.BytesIO(im["bytes"]) if im.get("bytes") else im["path"]
        return _open_checked(src, i, "bytes" if im.get("bytes") else str(im["path"]))
    try:
        import numpy as np

        arr = np.asarray(im)
        if arr.ndim not in (2, 3) or arr.shape[0] * arr.shape[1] > MAX_PIXELS:
            raise ValueError(f"shape {arr.shape}")
        return Image.fromarray(arr)
    except Exception as e:
        raise ValueError(f"image {i}: expected a PIL image, a path or a 2-D/3-D array of at most {MAX_PIXELS} "
                         f"pixels, got {type(im).__name__}") from e


def _open_checked(src: Any, i: int, name: str):
    from PIL import Image

    from hubkit.dataset_builder.dicom import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(src)
            w, h = img.size
            if w * h > MAX_PIXELS or getattr(img, "n_frames", 1) > 1:
                raise ValueError(f"image {i} ({name}): declares {w}x{h} pixels and {getattr(img, 'n_frames', 1)} "
                                 f"frame(s); at most {MAX_PIXELS} pixels and 1 frame are decoded (decompression "
                                 "bomb?); downscale it first")
            img.load()
    except ValueError:
        raise
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, SyntaxError) as e:
        raise ValueError(f"image {i} ({name}): cannot decode: {e}") from e
    return img


def _format(pred, views: list[str], notes: list[str]) -> dict[str, Any]:
    from hubkit import schema

    levels = {}
    for lv in schema.LEVELS:
        levels[lv] = {}
        for c in schema.CONDITIONS:
            code = pred.labels[lv][c]
            p = pred.probs[lv][c]
            levels[lv][c] = {"label": code, "severity": schema.SEVERITY_NAMES[schema.CODES.index(code)],
                             "probs": dict(zip(schema.CODES, p))}
    return {"study_id": pred.study_id, "levels": levels, "json": pred.json, "views": list(views), "notes": notes,
            "schema_mass": pred.schema_mass}


def _collate(items: list[dict]) -> dict:
    return {"studies": [s for it in items for s in it["studies"]], "notes": [n for it in items for n in it["notes"]]}


# ------------------------------------------------------------------------------------------------ classes (lazy)
_CLASSES: tuple | None = None


def _classes():
    """Build (LumbarClassificationPipeline, LumbarAdapterModel) on first use (they need transformers)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import collections.abc

    import torch.utils.data as torch_data
    from transformers import AutoModelForImageTextToText, AutoProcessor, Pipeline

    from hubkit.decoding import Prefetch, answer_plan, constrained_decode, prepare_inputs

    class LumbarAdapterModel(AutoModelForImageTextToText):
        """`from_pretrained(adapter_or_model)` = `hubkit.pipeline.load_model` (base + adapter via PEFT)."""

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
            kwargs.pop("config", None)  # the factory passes the base's config; load_model reads it itself
            kwargs.pop("_from_pipeline", None)
            if kwargs.pop("trust_remote_code", None):
                raise LumbarLoadError("trust_remote_code=True is refused: hubkit never runs code from a model repo")
            kwargs.pop("_commit_hash", None)
            return load_model(pretrained_model_name_or_path, dtype=kwargs.pop("dtype", "auto"),
                              load_in_4bit=kwargs.pop("load_in_4bit", None), revision=kwargs.pop("revision", None),
                              token=kwargs.pop("token", None), **kwargs)

    class LumbarClassificationPipeline(Pipeline):
        """Grades the 25 RSNA lumbar fields of a study with schema-constrained decoding.

        Call parameters: `batch_size`, `method` ("stepwise" | "speculative"), `draft` (speculative draft code),
        `image_size` (side of the slices read from DICOM, as the dataset builder: 448).
        """

        _load_processor = False
        _load_tokenizer = False
        _load_image_processor = False
        _load_feature_extractor = False
        _load_video_processor = False
        _pipeline_calls_generate = False

        def __init__(self, model, processor=None, **kwargs):
            if processor is None:
                processor = _load_processor(model)
            super().__init__(model=model, processor=processor, **kwargs)
            self.plan = answer_plan(self.processor.tokenizer)

        def _sanitize_parameters(self, method=None, draft=None, image_size=None, **kwargs):
            pre, fwd = {}, {}
            if image_size is not None:
                pre["image_size"] = int(image_size)
            if method is not None:
                fwd["method"] = method
            if draft is not None:
                fwd["draft"] = draft
            if kwargs:
                raise TypeError(f"lumbar-classify got unknown arguments {sorted(kwargs)}")
            return pre, fwd, {}

        def __call__(self, inputs, *args, **kwargs):
            if _is_hf_dataset(inputs):
                inputs = _Rows(inputs)
            return super().__call__(inputs, *args, **kwargs)

        def preprocess(self, inputs, image_size: int = 448):
            study, notes = study_from_input(inputs, image_size=image_size)
            return {"studies": [study], "notes": [notes]}

        def _forward(self, model_inputs, method: str = "stepwise", draft: Any = "N"):
            studies = model_inputs["studies"]
            preds = constrained_decode(self.model, self.processor, studies, method=method, draft=draft, plan=self.plan,
                                       encoded=model_inputs.get("encoded"))
            return {"results": [(p, s.views, n) for p, s, n in zip(preds, studies, model_inputs["notes"])]}

        def _encode(self, batch: dict) -> dict:
            return {**batch, "encoded": prepare_inputs(self.processor, batch["studies"])}

        def postprocess(self, model_outputs):
            res = model_outputs["results"]
            if isinstance(res, list):
                res = res[0]
            pred, views, notes = res
            return _format(pred, views, notes)

        def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params,
                         postprocess_params):
            from torch.utils.data import DataLoader
            from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

            if isinstance(inputs, collections.abc.Sized):
                dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
            else:
                num_workers = min(num_workers, 1)
                dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_collate)
            # Batch k+1 is read and run through the processor on a thread while batch k is on the device.
            batches = Prefetch(loader, self._encode)
            model_iterator = PipelineIterator(batches, self.forward, forward_params, loader_batch_size=batch_size)
            return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _load_processor(model):
        src = getattr(model, "_hubkit_source", None)
        candidates = [c for c in (src, getattr(model, "_hubkit_base", None), getattr(model, "name_or_path", None))
                      if c]
        errors = []
        for c in candidates:
            try:
                return AutoProcessor.from_pretrained(c)
            except (OSError, ValueError, TypeError) as e:
                errors.append(f"{c}: {e}")
        raise LumbarLoadError("no processor found (looked in " + "; ".join(errors or ["nothing to look in"]) + ")")

    class _Rows(torch_data.Dataset):
        """A `datasets.Dataset` seen row by row: the pipeline streams it in batches and returns an iterator."""

        def __init__(self, ds):
            self.ds = ds

        def __len__(self) -> int:
            return len(self.ds)

        def __getitem__(self, i: int) -> dict:
            return self.ds[int(i)]

    for c in (LumbarAdapterModel, LumbarClassificationPipeline):
        c.__module__ = __name__
        c.__qualname__ = c.__name__
    _CLASSES = (LumbarClassificationPipeline, LumbarAdapterModel)
    return _CLASSES


def _is_hf_dataset(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("datasets.") and hasattr(x, "column_names") and hasattr(x, "__getitem__")


def __getattr__(name: str):
    if name == "LumbarClassificationPipeline":
        return _classes()[0]
    if name == "LumbarAdapterModel":
        return _classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
