"""How the 25-field answer is fed to the model: the tokenization plan and its per-row steppers.

The answer is tokenized exactly as in training (TRL tokenizes the completion on its own, after `model\\n`).
`answer_plan` checks that the template pieces tokenize identically around every code and that each code is one
token; if a tokenizer merges differently, per-choice segments are built from the tokenization of the whole answer.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import warnings
from typing import Any

from hubkit import schema
from hubkit.model_family import GEMMA3
from hubkit.schema import N_FIELDS, PIECES, answer_text


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
        lead = GEMMA3.generation_tail  # the generation prompt ends with it; training tokenizes the completion alone
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

