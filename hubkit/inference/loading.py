"""Loading what the pipeline runs: a run/adapter folder or Hub repo -> base model + LoRA, ready for inference.

`adapter_config.json`'s `base_model_name_or_path` is loaded (4-bit nf4 on CUDA when bitsandbytes is installed, else
the checkpoint dtype: bf16 or fp32), the adapter is applied with PEFT (which, unlike transformers' own adapter
loader, restores `modules_to_save` weights) and merged unless the base is quantized.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hubkit._imports import available, install_hint
from hubkit.modeling import REMOTE_CODE_REFUSED, nf4_config

ADAPTER_CONFIG = "adapter_config.json"
RUN_CONFIG = "hubkit_config.json"  # written by `hubkit train` (hubkit.training.recipe)
# Files fetched from a Hub repo: adapter/model weights + configs + processor files (never checkpoints/ or logs/).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


class LumbarLoadError(Exception):
    """The model/adapter could not be loaded.

    Deliberately not an OSError/ValueError/TypeError/RuntimeError: transformers' `pipeline()` catches those from a
    model class and silently retries with the next class (its own adapter loader), hiding the reason.
    """


def resolve_model_dir(model: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; anything else is a Hub repo id, downloaded (configs, weights, processor files)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    if p.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
        raise LumbarLoadError(f"{model}: not a model folder (and not a Hub repo id of the form owner/name)")
    from hubkit.hub import download_snapshot

    return download_snapshot(str(model), revision=revision, token=token, allow_patterns=_HUB_PATTERNS)


def run_manifest(model_dir: str | os.PathLike) -> dict | None:
    """The manifest of the dataset the run trained on (`hubkit_config.json` -> dataset -> manifest), or None.

    Its `slice_size` is the side the pipeline reads DICOM slices at, so inference sees training's pixels.
    """
    path = Path(model_dir) / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        return (json.loads(path.read_text()).get("dataset") or {}).get("manifest")
    except ValueError as e:
        raise LumbarLoadError(f"{path}: not valid JSON ({e})") from e


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
    import torch

    if load_in_4bit is False or not torch.cuda.is_available():
        if load_in_4bit:
            raise LumbarLoadError("load_in_4bit=True needs a CUDA GPU")
        return False
    has_bnb = available("bitsandbytes")
    if load_in_4bit and not has_bnb:
        raise LumbarLoadError(f"load_in_4bit=True needs bitsandbytes: {install_hint('gpu')}")
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
        raise LumbarLoadError(REMOTE_CODE_REFUSED)
    kwargs["dtype"] = dtype
    kwargs["use_safetensors"] = True  # never unpickle weights: .bin/.pt checkpoints can run code
    quantized = "quantization_config" in kwargs
    if not quantized and _want_4bit(load_in_4bit):
        kwargs["quantization_config"] = nf4_config(torch.bfloat16)
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
    net._hubkit_manifest = run_manifest(src)
    return net

