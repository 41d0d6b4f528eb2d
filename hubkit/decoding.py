"""Schema-constrained decoding of the 25-field lumbar answer, and the seed's free generation for comparison.

The compact answer is a fixed JSON skeleton with 25 three-way choices (`schema.answer_template()`), so nothing but
the choices needs generating (inference-design.md):

    from hubkit.decoding import StudyInput, constrained_decode, free_generate
    studies = [StudyInput(images, views) for ...]              # PIL images + one view name each
    preds = constrained_decode(model, processor, studies)      # one batched prefill + 24 cached steps
    preds[0].labels["L4L5"]["canal"], preds[0].probs["L4L5"]["canal"], preds[0].json
    seed = free_generate(model, processor, studies)            # greedy generate(max_new_tokens=200) + parse

Constrained decoding: prefill prompt + images (left-padded batch) + the fixed text up to the first code; at each code
position the model's softmax restricted to the N/M/S tokens is that field's distribution (what the RSNA log loss
needs); the argmax and the fixed text up to the next code are appended with the KV cache, all rows in lockstep. The
labels equal greedy generation's whenever greedy follows the schema. `method="speculative"` drafts the whole answer
(all "N" by default), verifies it in one pass and re-runs from the first field the model disagrees with: same
labels and probabilities in 1 + (number of disagreeing fields) passes at batch 1.

The answer is tokenized exactly as in training (TRL tokenizes the completion on its own, after `model\\n`).
`answer_plan` checks that the template pieces tokenize identically around every code and that each code is one
token; if a tokenizer merges differently, per-choice segments are built from the tokenization of the whole answer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import time
import warnings
from typing import Any, Sequence

from hubkit import schema
from hubkit.chat import build_chat_row

PIECES: tuple[str, ...] = tuple(schema.answer_template())
N_FIELDS = len(schema.ANSWER_FIELDS)  # 25


@dataclasses.dataclass
class StudyInput:
    """One study for the decoder: images (PIL or anything the processor takes), one view name per image."""

    images: list
    views: list[str]
    prompt: str | None = None  # default: schema.build_prompt(views), the training prompt
    study_id: str | None = None


@dataclasses.dataclass
class StudyPrediction:
    """Decoded answer of one study.

    labels: {level: {condition: "N"|"M"|"S"}}; probs: {level: {condition: [pN, pM, pS]}} (sum 1); json: the compact
    answer; schema_mass: smallest total probability (full vocabulary) the model gave the three codes at a code
    position (1.0 for free generation); parse_failed/text: free generation only.
    """

    labels: dict[str, dict[str, str]]
    probs: dict[str, dict[str, list[float]]]
    json: str
    schema_mass: float = 1.0
    parse_failed: bool = False
    text: str | None = None
    study_id: str | None = None

    def class_probs(self) -> dict[str, list[float]]:
        """{RSNA label column: [p_normal_mild, p_moderate, p_severe]} (input of `hubkit.metrics.study_rows`)."""
        return {schema.label_column(c, lv): self.probs[lv][c] for lv, c in schema.ANSWER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def answer_text(codes: Sequence[str]) -> str:
    """The compact answer for 25 codes in answer order (level-major), e.g. `answer_text("N" * 25)`."""
    if len(codes) != N_FIELDS or any(c not in schema.CODES for c in codes):
        raise ValueError(f"need {N_FIELDS} codes from {schema.CODES}, got {codes!r}")
    return "".join(p + c for p, c in zip(PIECES, codes)) + PIECES[-1]


def _nest(values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {lv: {} for lv in schema.LEVELS}
    for (lv, c), v in zip(schema.ANSWER_FIELDS, values):
        out[lv][c] = v
    return out


# ------------------------------------------------------------------------------------------------ tokenization plan
@dataclasses.dataclass(frozen=True)
class AnswerPlan:
    """How the answer is fed: "template" = fixed token pieces + one token per code; "per_choice" = re-tokenized."""

    kind: str
    code_ids: tuple[int, int, int]
    piece_ids: tuple[tuple[int, ...], ...]  # tokens of PIECES[i] (template kind)
    problems: tuple[str, ...] = ()  # why the template kind was not possible
    tokenizer: Any = dataclasses.field(default=None, compare=False, repr=False)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _check_vectors(rng: random.Random) -> list[list[str]]:
    """Code vectors covering every (field, code, neighbour code) combination, plus random ones."""
    vecs = [[b] * N_FIELDS for b in schema.CODES]
    for i in range(N_FIELDS):
        for k in schema.CODES:
            for b in schema.CODES:
                if k != b:
                    v = [b] * N_FIELDS
                    v[i] = k
                    vecs.append(v)
    vecs += [[rng.choice(schema.CODES) for _ in range(N_FIELDS)] for _ in range(32)]
    return vecs


def answer_plan(tokenizer, force_per_choice: bool = False) -> AnswerPlan:
    """Check how `tokenizer` splits the answer and return the plan the decoder follows.

    "template" needs: each code one token, the three distinct, and tokenize(answer) == tokens(piece 0) + code +
    tokens(piece 1) + ... for every checked code vector (all codes next to all neighbours, plus random answers).
    A warning says if the answer would merge with the generation prompt's "model\\n" when tokenized as one text.
    Otherwise (or with `force_per_choice`) "per_choice": at each field the three candidate answers are tokenized
    and the tokens up to where they differ are fed; the three differing tokens must be distinct.
    """
    return _plan_cached(tokenizer, bool(force_per_choice))


@functools.lru_cache(maxsize=8)
def _plan_cached(tokenizer, force_per_choice: bool) -> AnswerPlan:
    problems: list[str] = []
    code_tok = _encode(tokenizer, list(schema.CODES))
    piece_ids = tuple(tuple(x) for x in _encode(tokenizer, list(PIECES)))
    if any(len(t) != 1 for t in code_tok):
        problems.append(f"codes are not single tokens: {dict(zip(schema.CODES, code_tok))}")
        code_ids = (-1, -1, -1)
    else:
        code_ids = tuple(t[0] for t in code_tok)
        if len(set(code_ids)) != 3:
            problems.append(f"codes share token ids: {code_ids}")
    if not problems:
        vecs = _check_vectors(random.Random(0))
        texts = [answer_text(v) for v in vecs]
        lead = "model\n"  # the generation prompt ends with it; training tokenizes the completion on its own
        lead_ids = _encode(tokenizer, [lead])[0]
        boundary_warned = False
        for v, got, in_ctx in zip(vecs, _encode(tokenizer, texts), _encode(tokenizer, [lead + t for t in texts])):
            want = [t for i, c in enumerate(v) for t in (*piece_ids[i], code_ids[schema.CODES.index(c)])]
            want += list(piece_ids[-1])
            if got != want:
                problems.append(f"pieces merge with the codes around them for answer {''.join(v)}")
                break
            if in_ctx != lead_ids + want and not boundary_warned:
                boundary_warned = True  # TRL tokenizes the completion on its own, as we do; others may not
                warnings.warn("the answer's first tokens merge with the generation prompt's 'model\\n' when "
                              "tokenized as one text; hubkit (like TRL's collator) tokenizes the answer on its own",
                              stacklevel=3)
    kind = "per_choice" if (problems or force_per_choice) else "template"
    return AnswerPlan(kind, code_ids, piece_ids, tuple(problems), tokenizer)


class _TemplateStepper:
    """Per-row feed for the template plan: constant pieces, one token per code."""

    def __init__(self, plan: AnswerPlan):
        self.plan = plan
        self.i = 0

    def start(self) -> tuple[list[int], list[list[int]]]:
        return list(self.plan.piece_ids[0]), [[t] for t in self.plan.code_ids]

    def advance(self, k: int) -> tuple[list[int], list[list[int]]]:
        self.i += 1
        return [self.plan.code_ids[k], *self.plan.piece_ids[self.i]], [[t] for t in self.plan.code_ids]


class _PerChoiceStepper:
    """Per-row feed when codes merge with the text around them: tokenize the three candidate answers each field.

    At field i the three answers (decided codes, then N/M/S, then "N" filler) are tokenized; the tokens they share
    are fed, and each code's candidate is its shortest token sequence that no other code's sequence starts with
    (one token unless two codes start with the same token, e.g. '"' + 'M' vs '"' + 'S' next to '"N"').
    """

    def __init__(self, plan: AnswerPlan):
        self.tok = plan.tokenizer
        self.codes: list[str] = []
        self.fed: list[int] = []  # answer tokens already in the KV cache
        self._cands: list[list[int]] = []
        self._fed_next: list[list[int]] = []

    def _next(self) -> tuple[list[int], list[list[int]]]:
        i = len(self.codes)
        fill = ["N"] * (N_FIELDS - i - 1)
        seqs = _encode(self.tok, [answer_text(self.codes + [k] + fill) for k in schema.CODES])
        n = len(self.fed)
        if any(s[:n] != self.fed for s in seqs):
            raise ValueError(f"answer field {i}: the tokenizer re-tokenizes text already fed when a later code "
                             "changes; constrained decoding cannot follow it")
        split = n
        while all(split < len(s) for s in seqs) and len({s[split] for s in seqs}) == 1:
            split += 1
        cands = []
        for k, s in enumerate(seqs):
            d = 1
            while any(j != k and o[split:split + d] == s[split:split + d] for j, o in enumerate(seqs)):
                d += 1
                if split + d > len(s):
                    raise ValueError(f"answer field {i}: code {schema.CODES[k]} has no tokens of its own")
            cands.append(s[split:split + d])
        self._cands = cands
        self._fed_next = [s[:split] + c for s, c in zip(seqs, cands)]
        return seqs[0][n:split], cands

    def start(self) -> tuple[list[int], list[list[int]]]:
        return self._next()

    def advance(self, k: int) -> tuple[list[int], list[list[int]]]:
        chosen = self._cands[k]
        self.codes.append(schema.CODES[k])
        self.fed = self._fed_next[k]
        feed, cands = self._next()
        return [*chosen, *feed], cands


def _steppers(plan: AnswerPlan, n: int) -> list:
    cls = _TemplateStepper if plan.kind == "template" else _PerChoiceStepper
    return [cls(plan) for _ in range(n)]


# ------------------------------------------------------------------------------------------------------ inputs
def _as_study(s: Any) -> StudyInput:
    if isinstance(s, StudyInput):
        return s
    if isinstance(s, dict):
        return StudyInput(list(s["images"]), list(s["views"]), s.get("prompt"), s.get("study_id"))
    raise TypeError(f"expected StudyInput or a dict with images and views, got {type(s).__name__}")


def prepare_inputs(processor, studies: Sequence[StudyInput | dict]):
    """Processor outputs for a left-padded batch, built with `chat.build_chat_row` exactly as in training."""
    texts, images = [], []
    for s in map(_as_study, studies):
        row = build_chat_row(s.images, s.views, s.prompt or schema.build_prompt(s.views))
        texts.append(processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False))
        images.append([im.convert("RGB") if hasattr(im, "convert") else im for im in row["images"]])
    return processor(text=texts, images=images, padding=True, padding_side="left", add_special_tokens=False,
                     return_tensors="pt")


def core_model(model):
    """The module to call: a PEFT wrapper's underlying model (LoRA layers are injected into it in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _to_device(enc, model) -> dict:
    import torch

    dev = next(model.parameters()).device
    dtype = getattr(model, "dtype", None) or torch.float32
    out = {}
    for k, v in enc.items():
        if hasattr(v, "to"):
            v = v.to(dev)
            if k == "pixel_values" and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        out.append(StudyPrediction(labels=_nest(cs), probs=_nest([[float(x) for x in p] for p in probs[r]]),
                                   json=answer_text(cs), schema_mass=float(min(mass[r])), study_id=s.study_id))
    return out


class Prefetch:
    """Iterate `fn(item)` for `item` in `items`, produced on a background thread up to `depth` results ahead.

    Overlaps the CPU side of a batch (reading a study, the processor's image resize/normalise and tokenisation)
    with the device work on the previous batch; PIL and torch release the GIL in their kernels. Iterating `items`
    happens on the thread too (a DataLoader's reading included). An exception is re-raised in the consumer at the
    item that caused it; `len()` is that of `items`; leaving the loop early stops the thread.
    """

    _END = object()

    def __init__(self, items, fn=lambda x: x, depth: int = 1):
        self.items, self.fn, self.depth = items, fn, max(1, int(depth))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        import queue
        import threading

        q: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()

        def put(x) -> bool:
            while not stop.is_set():
                try:
                    q.put(x, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for item in self.items:
                    if not put((True, self.fn(item))):
                        return
            except BaseException as e:  # handed to the consumer, raised there
                put((False, e))
                return
            put((True, self._END))

        t = threading.Thread(target=produce, name="hubkit-prefetch", daemon=True)
        t.start()
        try:
            while True:
                ok, x = q.get()
                if not ok:
                    raise x
                if x is self._END:
                    return
                yield x
        finally:
            stop.set()
            t.join()


def decode_batches(model, processor, studies: Sequence[StudyInput | dict], batch_size: int = 8,
                   method: str = "stepwise", draft: Sequence[str] | str = "N", plan: AnswerPlan | None = None):
    """Yield one `StudyPrediction` per study, decoding `batch_size` studies at a time.

    The processor work of batch k+1 runs on a thread while batch k is on the device (`Prefetch`), so on a GPU the
    CPU image preprocessing is off the critical path; results equal `constrained_decode` on each batch.
    """
    studies = [_as_study(s) for s in studies]
    plan = plan or answer_plan(processor.tokenizer)
    chunks = [studies[i:i + batch_size] for i in range(0, len(studies), max(1, int(batch_size)))]
    for chunk, enc in zip(chunks, Prefetch(chunks, functools.partial(prepare_inputs, processor))):
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

    studies = [_as_study(s) for s in studies]
    if not studies:
        return []
    plan = plan or answer_plan(processor.tokenizer)
    if method not in ("stepwise", "speculative"):
        raise ValueError(f"method must be 'stepwise' or 'speculative', got {method!r}")
    core = core_model(model)
    dev = next(core.parameters()).device
    t0 = time.perf_counter()
    enc = _to_device(encoded if encoded is not None else prepare_inputs(processor, studies), core)
    t1 = time.perf_counter()
    pad_id = processor.tokenizer.pad_token_id or 0
    with torch.inference_mode():
        if method == "speculative" and plan.kind == "template":
            codes, probs, mass, t2, passes = _speculative(core, enc, plan, len(studies), draft, dev)
        else:
            codes, probs, mass, t2, passes = _stepwise(core, enc, plan, len(studies), pad_id, dev)
    _sync(dev)
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
    _sync(dev)
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
    import torch

    cid, pieces = plan.code_ids, plan.piece_ids
    cands = [list(cid)] * n  # single tokens (template plan)
    out, cache, mask, last = _prefill(core, enc, [list(pieces[0])] * n)
    cache.activate_past_recording()  # sliding-window layers keep what a rollback needs until `crop`
    _sync(dev)
    t2 = time.perf_counter()
    base = _draft_codes(draft)
    codes = [list(base) for _ in range(n)]
    probs = [[None] * N_FIELDS for _ in range(n)]
    mass = [[1.0] * N_FIELDS for _ in range(n)]
    p, m = _code_dist(out.logits[:, -1], cands)
    a, passes = 0, 1
    while True:
        choice = _record(codes, probs, mass, a, p, m)
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


# ------------------------------------------------------------------------------------------------ free generation
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

    studies = [_as_study(s) for s in studies]
    if not studies:
        return []
    t0 = time.perf_counter()
    dev = next(core_model(model).parameters()).device
    enc = _to_device(prepare_inputs(processor, studies), core_model(model))
    t1 = time.perf_counter()
    tok = processor.tokenizer
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if tok.pad_token_id is not None:
        kwargs["pad_token_id"] = tok.pad_token_id
    with torch.inference_mode():
        seqs = model.generate(**enc, **kwargs)
    _sync(dev)
    t2 = time.perf_counter()
    new = seqs[:, enc["input_ids"].shape[1]:]
    if timings is not None:
        timings.update(preprocess_s=t1 - t0, generate_s=t2 - t1, new_tokens=int(new.shape[1]))
    out = []
    for s, text in zip(studies, tok.batch_decode(new, skip_special_tokens=True)):
        labels, failed = parse_answer(text)
        codes = [labels[lv][c] for lv, c in schema.ANSWER_FIELDS]
        probs = [[1.0 if k == c else 0.0 for k in schema.CODES] for c in codes]
        out.append(StudyPrediction(labels=labels, probs=_nest(probs), json=answer_text(codes), parse_failed=failed,
                                   text=text, study_id=s.study_id))
    return out


def teacher_forced_probs(model, processor, study: StudyInput | dict, codes: Sequence[str]) -> list[list[float]]:
    """Reference: one full forward (no cache) of prompt + answer(codes); the 3-way softmax at each code position.

    Slow and unbatched; for tests of the cached decoders (their probabilities must match this).
    """
    import torch

    plan = answer_plan(processor.tokenizer)
    if plan.kind != "template":
        raise ValueError("teacher_forced_probs needs a template plan")
    core = core_model(model)
    enc = _to_device(prepare_inputs(processor, [study]), core)
    ans: list[int] = []
    reads = []
    for i, c in enumerate(codes):
        ans.extend(plan.piece_ids[i])
        reads.append(enc["input_ids"].shape[1] + len(ans) - 1)
        ans.append(plan.code_ids[schema.CODES.index(c)])
    extra = torch.tensor([ans], device=enc["input_ids"].device)
    ids = torch.cat([enc["input_ids"], extra], 1)
    kw = {"attention_mask": torch.ones_like(ids), "pixel_values": enc.get("pixel_values")}
    if "token_type_ids" in enc:
        kw["token_type_ids"] = torch.cat([enc["token_type_ids"], torch.zeros_like(extra)], 1)
    with torch.inference_mode():
        logits = core(input_ids=ids, use_cache=False, **kw).logits[0, reads]
    p, _ = _code_dist(logits, [list(plan.code_ids)] * len(reads))
    return p.tolist()


def to_json_line(pred: StudyPrediction) -> str:
    return json.dumps(pred.to_dict(), separators=(",", ":"))
