"""Schema-constrained decoding of the 25-field lumbar answer: batched, with the model's probability for every field.

The compact answer is a fixed JSON skeleton with 25 three-way choices (`schema.answer_template()`), so nothing but
the choices needs generating:

    from hubkit.inference.decoding import StudyInput, constrained_decode
    studies = [StudyInput(images, views) for ...]              # PIL images + one view name each
    preds = constrained_decode(model, processor, studies)      # one batched prefill + 24 cached steps
    preds[0].labels["L4L5"]["canal"], preds[0].probs["spinal_canal_stenosis_l4_l5"], preds[0].json

Constrained decoding: prefill prompt + images (left-padded batch) + the fixed text up to the first code; at each code
position the model's softmax restricted to the N/M/S tokens is that field's distribution (what the RSNA log loss
needs); the argmax and the fixed text up to the next code are appended with the KV cache, all rows in lockstep. The
labels equal greedy generation's whenever greedy follows the schema. `method="speculative"` drafts the whole answer
(all "N" by default), verifies it in one pass and re-runs from the first field the model disagrees with: same
labels and probabilities in 1 + (number of disagreeing fields) passes at batch 1. How the answer is tokenized and
fed: `hubkit.inference.answer_plan`.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

from hubkit import schema
from hubkit.schema import N_FIELDS, answer_text

from .answer_plan import AnswerPlan, _steppers, answer_plan
from .batching import prefetched_batches
from .studies import (StudyInput, StudyPrediction, as_study, by_column, core_model, nest, prepare_inputs, sync,
                      to_device)

__all__ = ["StudyInput", "StudyPrediction", "constrained_decode", "decode_batches", "prepare_inputs"]


def _prefill(core, enc: dict, first: list[list[int]]):
    """Forward prompt + images + the first answer tokens; returns (output, cache, mask, last position)."""
    import torch
    from transformers import DynamicCache

    ids, mask = enc["input_ids"], enc["attention_mask"]
    dev = ids.device
    extra = torch.tensor(first, dtype=ids.dtype, device=dev)
    ids = torch.cat([ids, extra], 1)
    mask = torch.cat([mask, torch.ones_like(extra)], 1)
    kwargs = {}
    if "token_type_ids" in enc:
        kwargs["token_type_ids"] = torch.cat([enc["token_type_ids"], torch.zeros_like(extra)], 1)
    if "pixel_values" in enc:
        kwargs["pixel_values"] = enc["pixel_values"]
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=core.config)
    out = core(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
               logits_to_keep=1, **kwargs)
    return out, cache, mask, pos[:, -1]


def _step(core, cache, mask, last_pos, chunks: list[list[int]], pad_id: int, keep: int = 1):
    """Append per-row token chunks (left-padded inside the chunk when lengths differ) with the KV cache."""
    import torch

    dev = mask.device
    width = max(len(c) for c in chunks)
    ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in chunks], dtype=torch.long, device=dev)
    cmask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunks], dtype=mask.dtype, device=dev)
    pos = last_pos[:, None] + cmask.long().cumsum(-1)
    mask = torch.cat([mask, cmask], 1)
    out = core(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
               logits_to_keep=keep)
    return out, mask, pos[:, -1]


def _code_dist(logits, cands: list[list[int]]):
    """(probs over the 3 candidates, total full-vocabulary mass on them) per row; single-token candidates."""
    import torch

    logp = logits.float().log_softmax(-1)
    lp3 = logp.gather(1, torch.tensor(cands, dtype=torch.long, device=logits.device))
    return lp3.softmax(-1), lp3.exp().sum(-1)


def _branch(cands: list[list[int]]) -> list[int]:
    """Tokens to feed so that multi-token candidates can be scored: the prefix the two of them share."""
    multi = [c for c in cands if len(c) > 1]
    return multi[0][:-1] if multi else []


def _score(logits, cands, core, cache, mask, last, pad_id: int):
    """Like `_code_dist` for candidates of several tokens: feeds the shared prefix, scores, rolls the cache back."""
    import torch

    if all(len(c) == 1 for row in cands for c in row):
        return _code_dist(logits, [[c[0] for c in row] for row in cands])
    first = logits.float().log_softmax(-1)
    branches = [_branch(row) for row in cands]
    width = max(len(b) for b in branches)
    out, _, _ = _step(core, cache, mask, last, branches, pad_id, keep=width)  # rows without a branch: all pads
    cache.crop(-width)
    later = out.logits.float().log_softmax(-1)  # (rows, width, vocab)
    lps = []
    for r, (row, b) in enumerate(zip(cands, branches)):
        off = later.shape[1] - len(b)
        row_lp = []
        for c in row:
            lp = first[r, c[0]]
            for j in range(1, len(c)):  # c[:j] == b[:j] for the candidates that share the branch
                lp = lp + later[r, off + j - 1, c[j]]
            row_lp.append(lp)
        lps.append(torch.stack(row_lp))
    lp3 = torch.stack(lps)
    return lp3.softmax(-1), lp3.exp().sum(-1)


def _predictions(codes, probs, mass, studies) -> list[StudyPrediction]:
    out = []
    for r, s in enumerate(studies):
        cs = [schema.CODES[k] for k in codes[r]]
        out.append(StudyPrediction(labels=nest(cs), probs=by_column([[float(x) for x in p] for p in probs[r]]),
                                   json=answer_text(cs), schema_mass=float(min(mass[r])), study_id=s.study_id))
    return out

def decode_batches(model, processor, studies: Sequence[StudyInput | dict], batch_size: int = 8,
                   method: str = "stepwise", draft: Sequence[str] | str = "N", plan: AnswerPlan | None = None):
    """Yield one `StudyPrediction` per study, decoding `batch_size` studies at a time.

    The processor work of batch k+1 runs on a thread while batch k is on the device (`Prefetch`), so on a GPU the
    CPU image preprocessing is off the critical path; results equal `constrained_decode` on each batch.
    """
    plan = plan or answer_plan(processor.tokenizer)
    for chunk, enc in prefetched_batches(studies, batch_size, load=as_study,
                                         prepare=functools.partial(prepare_inputs, processor)):
        yield from constrained_decode(model, processor, chunk, method=method, draft=draft, plan=plan, encoded=enc)


def constrained_decode(model, processor, studies: Sequence[StudyInput | dict], method: str = "stepwise",
                       draft: Sequence[str] | str = "N", plan: AnswerPlan | None = None,
                       timings: dict | None = None, encoded: Any = None) -> list[StudyPrediction]:
    """Decode the 25 fields of each study with the answer skeleton forced; one batch, rows in lockstep.

    Args:
        model: a Gemma 3 image-text-to-text model (plain, LoRA-merged, or a PEFT wrapper), eval mode.
        processor: its processor (the one saved with the adapter).
        studies: `StudyInput`s or dicts with images, views[, prompt, study_id].
        method: "stepwise" (25 forward passes) or "speculative" (draft + verify; template plans only).
        draft: speculative draft, one code for all fields ("N") or 25 codes in answer order.
        plan: from `answer_plan(processor.tokenizer)` (computed and cached when None).
        timings: if given, gets "preprocess_s", "prefill_s", "decode_s" (seconds, CUDA-synchronised) and "passes".
        encoded: `prepare_inputs(processor, studies)` computed beforehand (e.g. on a prefetch thread).

    Returns:
        One `StudyPrediction` per study, in order.
    """
    import torch

    studies = [as_study(s) for s in studies]
    if not studies:
        return []
    plan = plan or answer_plan(processor.tokenizer)
    if method not in ("stepwise", "speculative"):
        raise ValueError(f"method must be 'stepwise' or 'speculative', got {method!r}")
    core = core_model(model)
    dev = next(core.parameters()).device
    t0 = time.perf_counter()
    enc = to_device(encoded if encoded is not None else prepare_inputs(processor, studies), core)
    t1 = time.perf_counter()
    pad_id = processor.tokenizer.pad_token_id or 0
    with torch.inference_mode():
        if method == "speculative" and plan.kind == "template":
            codes, probs, mass, t2, passes = _speculative(core, enc, plan, len(studies), draft, dev)
        else:
            codes, probs, mass, t2, passes = _stepwise(core, enc, plan, len(studies), pad_id, dev)
    sync(dev)
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(preprocess_s=t1 - t0, prefill_s=t2 - t1, decode_s=t3 - t2, passes=passes)
    return _predictions(codes, probs, mass, studies)


def _stepwise(core, enc, plan, n, pad_id, dev):
    steppers = _steppers(plan, n)
    starts = [s.start() for s in steppers]
    if len({tuple(f) for f, _ in starts}) != 1:
        raise RuntimeError("the first answer tokens differ between rows")  # cannot happen: nothing decided yet
    out, cache, mask, last = _prefill(core, enc, [f for f, _ in starts])
    rollback = plan.kind != "template"
    if rollback:
        cache.activate_past_recording()  # multi-token candidates are scored, then rolled back with `crop`
    sync(dev)
    t2 = time.perf_counter()
    cands = [c for _, c in starts]
    codes = [[0] * N_FIELDS for _ in range(n)]
    probs = [[None] * N_FIELDS for _ in range(n)]
    mass = [[1.0] * N_FIELDS for _ in range(n)]
    for i in range(N_FIELDS):
        p, m = _score(out.logits[:, -1], cands, core, cache, mask, last, pad_id)
        choice = _record(codes, probs, mass, i, p, m)
        if i == N_FIELDS - 1:
            break
        steps = [s.advance(k) for s, k in zip(steppers, choice)]
        cands = [c for _, c in steps]
        out, mask, last = _step(core, cache, mask, last, [f for f, _ in steps], pad_id)
        if rollback:
            cache.crop(0)  # sliding-window layers: drop what the window no longer needs
    return codes, probs, mass, t2, N_FIELDS


def _record(codes, probs, mass, field: int, p, m) -> list[int]:
    """Store each row's argmax code, N/M/S distribution and schema mass for `field`; return the codes."""
    choice = p.argmax(-1).tolist()
    for r, (pr, mr) in enumerate(zip(p.tolist(), m.tolist())):
        codes[r][field], probs[r][field], mass[r][field] = choice[r], pr, mr
    return choice


def _draft_codes(draft: Sequence[str] | str) -> list[int]:
    codes = [draft] * N_FIELDS if isinstance(draft, str) and len(draft) == 1 else list(draft)
    if len(codes) != N_FIELDS or any(c not in schema.CODES for c in codes):
        raise ValueError(f"draft must be one code or {N_FIELDS} codes from {schema.CODES}, got {draft!r}")
    return [schema.CODES.index(c) for c in codes]


def _speculative(core, enc, plan, n, draft, dev):
    """Draft all fields, verify in one pass, accept up to the first disagreement of any row, repeat from there."""
    cid, pieces = plan.code_ids, plan.piece_ids
    cands = [list(cid)] * n  # single tokens (template plan)
    out, cache, mask, last = _prefill(core, enc, [list(pieces[0])] * n)
    cache.activate_past_recording()  # sliding-window layers keep what a rollback needs until `crop`
    sync(dev)
    t2 = time.perf_counter()
    base = _draft_codes(draft)
    codes = [list(base) for _ in range(n)]
    probs = [[None] * N_FIELDS for _ in range(n)]
    mass = [[1.0] * N_FIELDS for _ in range(n)]
    p, m = _code_dist(out.logits[:, -1], cands)
    a, passes = 0, 1
    while True:
        _record(codes, probs, mass, a, p, m)
        if a == N_FIELDS - 1:
            break
        # chunk = code a, piece a+1, draft code a+1, ..., draft code 23, piece 24; read after each piece
        chunks, reads = [], []
        for r in range(n):
            toks: list[int] = []
            for j in range(a, N_FIELDS - 1):
                toks.append(cid[codes[r][j]])
                toks.extend(pieces[j + 1])
                if r == 0:
                    reads.append(len(toks) - 1)
            chunks.append(toks)
        width = len(chunks[0])
        out, mask, last = _step(core, cache, mask, last, chunks, 0, keep=width)
        passes += 1
        logits = out.logits[:, reads]  # (n, fields a+1..24, vocab)
        dists = [_code_dist(logits[:, t], cands) for t in range(len(reads))]
        first_bad = N_FIELDS
        for t, (pt, _) in enumerate(dists):
            j = a + 1 + t
            agree = pt.argmax(-1).tolist()
            if any(agree[r] != codes[r][j] for r in range(n)):
                first_bad = j
                break
        for t in range(min(first_bad, N_FIELDS) - a - 1):
            pt, mt = dists[t]
            pl, ml = pt.tolist(), mt.tolist()
            for r in range(n):
                probs[r][a + 1 + t], mass[r][a + 1 + t] = pl[r], ml[r]
        if first_bad == N_FIELDS:
            break
        # keep the cache up to the piece before field `first_bad`; its distribution is already known
        keep_len = reads[first_bad - a - 1] + 1
        drop = width - keep_len
        cache.crop(-drop if drop else 0)
        if drop:
            mask = mask[:, :-drop]
            last = last - drop
        p, m = dists[first_bad - a - 1]
        a = first_bad
    return codes, probs, mass, t2, passes

