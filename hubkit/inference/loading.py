"""Loading what the pipeline runs: a run/adapter folder or Hub repo -> base model + LoRA, ready for inference.

`adapter_config.json`'s `base_model_name_or_path` is loaded (on CUDA in bf16, or in 4-bit nf4 when asked for or
when bf16 does not fit: `choose_4bit`; on CPU in the checkpoint's dtype), the adapter is applied with PEFT (which,
unlike transformers' own adapter loader, restores `modules_to_save` weights) and merged unless the base is quantized.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from hubkit._imports import available, install_hint
from hubkit.modeling import REMOTE_CODE_REFUSED, nf4_config
from hubkit.run_record import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RUN_FILE, RunFacts, run_facts

log = logging.getLogger("hubkit.inference")
# Files fetched from a Hub repo: adapter/model weights + configs + processor files (never checkpoints/ or logs/).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


class LumbarLoadError(Exception):
    """The model/adapter could not be loaded.

    Deliberately not an OSError/ValueError/TypeError/RuntimeError: transformers' `pipeline()` catches those from a
    model class and silently retries with the next class (its own adapter loader), hiding the reason.
    """


def resolve_model_dir(model: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; a Hub repo id is downloaded (configs, weights, processor files); `sources.locate` tells
    which."""
    from hubkit.sources import locate

    try:
        loc = locate(model, "model")
    except FileNotFoundError:
        loc = None
    if loc is None or (loc.path is not None and not loc.path.is_dir()):
        raise LumbarLoadError(f"{model}: not a model folder (and not a Hub repo id of the form owner/name)")
    if loc.path is not None:
        return loc.path
    from hubkit.hub import download_snapshot

    return download_snapshot(loc.repo_id, revision=revision, token=token, allow_patterns=_HUB_PATTERNS)


def base_model_of(model_dir: str | os.PathLike) -> str | None:
    """`base_model_name_or_path` from the folder's adapter_config.json, or None for a full model folder."""
    cfg = Path(model_dir) / ADAPTER_CONFIG
    if not cfg.is_file():
        if (Path(model_dir) / RUN_FILE).is_file() and not (Path(model_dir) / "config.json").is_file():
            from hubkit.run_record import check_finished

            try:
                check_finished(model_dir)  # says what the folder is instead, in the words every verb uses
            except FileNotFoundError as e:
                raise LumbarLoadError(str(e)) from None
        if not (Path(model_dir) / "config.json").is_file():
            what = ("a dataset folder, not a model" if (Path(model_dir) / "dataset_dict.json").is_file()
                    else "not a model folder")
            raise LumbarLoadError(f"{model_dir}: {what} (a run folder from `hubkit train`, an adapter folder or a "
                                  "saved model; give the dataset with --dataset)")
        return None
    try:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except ValueError as e:  # a ValueError would make transformers' pipeline() quietly try its next model class
        raise LumbarLoadError(f"{cfg}: not valid JSON ({e})") from e
    if not base:
        raise LumbarLoadError(f"{cfg}: no base_model_name_or_path; cannot tell which base model the adapter needs")
    return base


GiB = 2**30
# What a bf16 model needs beside its weights to decode batches of 8-image studies (KV cache, activations, logits).
DECODE_HEADROOM = 4 * GiB


def choose_4bit(load_in_4bit: bool | None, cuda: bool, has_bnb: bool, free_bytes: int | None,
                weight_bytes: int | None) -> tuple[bool, str]:
    """(load the base in 4-bit?, the one line that says why). bf16 with the LoRA merged is the fast path and the
    default; 4-bit nf4 only when asked for, or on a GPU whose free memory cannot hold the bf16 weights plus the
    decoding headroom (and bitsandbytes is there).

    Raises:
        LumbarLoadError: 4-bit asked for without a CUDA GPU or without bitsandbytes.
    """
    if load_in_4bit and not cuda:
        raise LumbarLoadError("load_in_4bit=True needs a CUDA GPU")
    if load_in_4bit and not has_bnb:
        raise LumbarLoadError(f"load_in_4bit=True needs bitsandbytes: {install_hint('gpu')}")
    if load_in_4bit:
        return True, "4-bit nf4 base, LoRA unmerged (load_in_4bit=True)"
    if not cuda:
        return False, "CPU: the checkpoint's dtype, LoRA merged"
    if load_in_4bit is False:
        return False, "bf16, LoRA merged (load_in_4bit=False)"
    if free_bytes is None or weight_bytes is None:
        return False, "bf16, LoRA merged (model size unknown: not checked against free GPU memory)"
    need = weight_bytes + max(DECODE_HEADROOM, weight_bytes // 2)
    sizes = f"{weight_bytes / GiB:.1f} GiB of bf16 weights, {free_bytes / GiB:.1f} GiB free on the GPU"
    if free_bytes >= need:
        return False, f"bf16, LoRA merged ({sizes})"
    if has_bnb:
        return True, f"4-bit nf4 base, LoRA unmerged: bf16 needs ~{need / GiB:.1f} GiB ({sizes})"
    return False, f"bf16, LoRA merged, although it may not fit ({sizes}); install bitsandbytes for 4-bit"


def bf16_weight_bytes(model: str) -> int | None:
    """Size of a model's weights in bf16, from its safetensors files (local folder or Hub repo); None if unknown."""
    path = Path(model)
    try:
        if path.is_dir():
            sizes = [p.stat().st_size for p in path.glob("*.safetensors")]
            cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        else:
            from hubkit.hub import repo_file_sizes

            files = repo_file_sizes(model)
            sizes = [n for f, n in files.items() if f.endswith(".safetensors")]
            cfg = {}
    except Exception:  # noqa: BLE001 - only an estimate: unknown size means "not checked", said in the log line
        return None
    if not sizes:
        return None
    width = {"float32": 4, "float16": 2, "bfloat16": 2}.get(str(cfg.get("dtype") or cfg.get("torch_dtype")), 2)
    return int(sum(sizes) * 2 / width)


def load_model(model: str | os.PathLike, dtype: Any = "auto", load_in_4bit: bool | None = None,
               revision: str | None = None, token: str | None = None, **from_pretrained_kwargs: Any):
    """Base + adapter (or a full model), ready for inference, with the run's facts (`hubkit.run_record.RunFacts`:
    slice size, picker, calibration, label counts; and `source`, the folder it came from) in `model.config.hubkit`,
    where a pipeline built from the model object finds them, and `save_pretrained` keeps them.

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
    kwargs["use_safetensors"] = True  # never unpickle weights: .bin/.pt checkpoints can run code
    target = base if base is not None else str(src)
    quantized = "quantization_config" in kwargs
    cuda = torch.cuda.is_available()
    note = "quantization_config given"
    if not quantized:
        free = torch.cuda.mem_get_info()[0] if cuda else None
        quantized, note = choose_4bit(load_in_4bit, cuda, available("bitsandbytes"), free,
                                      bf16_weight_bytes(target) if cuda and load_in_4bit is None else None)
        if quantized:
            kwargs["quantization_config"] = nf4_config(torch.bfloat16)
        if cuda:
            kwargs.setdefault("device_map", {"": torch.cuda.current_device()})
            if dtype == "auto" and not quantized:
                dtype = torch.bfloat16
    kwargs["dtype"] = dtype
    log.info("lumbar-classify: %s", note)
    facts = facts_of(src)  # before the weights: a broken record or calibration.json fails in the first second
    try:
        net = AutoModelForImageTextToText.from_pretrained(target, **kwargs)
    except (OSError, ValueError) as e:
        what = f"base model {base!r} named in {src / ADAPTER_CONFIG}" if base else f"model {src}"
        raise LumbarLoadError(f"could not load the {what}: {e}") from e
    if base is not None:
        from peft import PeftModel

        if not (src / ADAPTER_WEIGHTS).is_file():
            raise LumbarLoadError(f"{src}: no {ADAPTER_WEIGHTS}; hubkit loads safetensors only (a .bin "
                                  "adapter is a pickle that can run code: re-save it with safe_serialization=True)")
        try:
            net = PeftModel.from_pretrained(net, str(src), is_trainable=False)
        except (OSError, ValueError, RuntimeError) as e:
            raise LumbarLoadError(f"could not apply the adapter in {src} to {base!r}: {e}") from e
        if not quantized:
            net = net.merge_and_unload()  # plain model: faster decoding, identical outputs
    net.eval()
    # a saved model that carries its facts in its config keeps them where its folder has no run record
    setattr(net.config, RunFacts.CONFIG_KEY, facts.or_else(RunFacts.of_model(net)).to_config())
    return net


def facts_of(src: Path) -> RunFacts:
    """The run's facts (`run_record.run_facts`); a broken record or calibration.json is a load error."""
    try:
        return run_facts(src)
    except ValueError as e:
        raise LumbarLoadError(str(e)) from e
