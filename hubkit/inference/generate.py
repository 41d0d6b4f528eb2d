"""The seed's way of answering: greedy `generate`, then parse the JSON (kept as the reference decoders are measured
against, and what a consumer without hubkit does with transformers alone).

    from hubkit.inference.generate import free_generate
    seed = free_generate(model, processor, studies)            # greedy generate(max_new_tokens=200) + parse
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from hubkit import schema
from hubkit.schema import answer_text

from .studies import StudyInput, StudyPrediction, as_study, by_column, core_model, prepare_inputs, sync, to_device


def parse_answer(text: str) -> tuple[dict[str, dict[str, str]], bool]:
    """(labels, parse_failed): a generated answer parsed with `schema.parse_target`; all "N" when it fails."""
    try:
        return schema.parse_target(text.strip()), False
    except (ValueError, TypeError, KeyError):
        return {lv: {c: "N" for c in schema.CONDITIONS} for lv in schema.LEVELS}, True


def free_generate(model, processor, studies: Sequence[StudyInput | dict], max_new_tokens: int = 200,
                  min_new_tokens: int | None = None, timings: dict | None = None) -> list[StudyPrediction]:
    """The seed's way: greedy `generate`, parse the JSON, fall back to all "N" on failure (flagged).

    Probabilities are the one-hot of the parsed labels (what a hard-label submission scores).
    `min_new_tokens` forces length for benchmarks on random weights. `timings` gets preprocess_s, generate_s.
    """
    import torch

    studies = [as_study(s) for s in studies]
    if not studies:
        return []
    t0 = time.perf_counter()
    dev = next(core_model(model).parameters()).device
    enc = to_device(prepare_inputs(processor, studies), core_model(model))
    t1 = time.perf_counter()
    tok = processor.tokenizer
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if tok.pad_token_id is not None:
        kwargs["pad_token_id"] = tok.pad_token_id
    with torch.inference_mode():
        seqs = model.generate(**enc, **kwargs)
    sync(dev)
    t2 = time.perf_counter()
    new = seqs[:, enc["input_ids"].shape[1]:]
    if timings is not None:
        timings.update(preprocess_s=t1 - t0, generate_s=t2 - t1, new_tokens=int(new.shape[1]))
    out = []
    for s, text in zip(studies, tok.batch_decode(new, skip_special_tokens=True)):
        labels, failed = parse_answer(text)
        codes = [labels[lv][c] for lv, c in schema.ANSWER_FIELDS]
        probs = [[1.0 if k == c else 0.0 for k in schema.CODES] for c in codes]
        out.append(StudyPrediction(labels=labels, probs=by_column(probs), json=answer_text(codes), parse_failed=failed,
                                   text=text, study_id=s.study_id))
    return out
