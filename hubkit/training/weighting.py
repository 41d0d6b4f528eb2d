"""A training loss weighted like the metric: the answer tokens that carry a Moderate or Severe grade weigh more.

The official score weighs Moderate rows 2 and Severe rows 4; the plain loss weighs every answer token alike, so the
grades the score cares most about are a few tokens among ~150. With `TrainConfig.loss_weights` ("moderate=2,
severe=4"), the trainer computes the loss itself (`trainer_loss`): every supervised token weighs 1, a grade token
whose true grade is M or S weighs its factor, and the sum is normalised by the weight sum.

Where the grades are: the answer is `PIECES[0] + code + PIECES[1] + ... + PIECES[25]` (`hubkit.schema`), tokenized on
its own after the prompt (TRL's prompt-completion rows, Unsloth's too), and each code is one token, so the 25 grade
tokens sit at fixed offsets from the completion's first token. `grade_layout` derives those offsets and the N/M/S
token ids from the tokenizer (checking the layout on whole answers), and `token_weights` places the weights:

    >>> import torch
    >>> from hubkit.training.weighting import token_weights
    >>> labels = torch.tensor([[-100, -100, 7, 50, 8, 51, 9]])     # prompt, then an answer with 2 grade tokens
    >>> token_weights(labels, offsets=(1, 3), code_ids=(49, 50, 51), factors={0: 1.0, 1: 2.0, 2: 4.0})
    tensor([[0., 0., 1., 2., 1., 4., 1.]])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from hubkit import schema

__all__ = ["grade_layout", "token_weights", "weighted_token_loss", "trainer_loss"]


def grade_layout(tokenizer) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    """(offsets of the 25 grade tokens from the answer's first token, token ids of N, M, S).

    Raises:
        ValueError: a grade is not one token, or the pieces tokenize differently inside a whole answer (then the
            grades have no fixed places and `loss_weights` cannot find them).
    """
    def encode(texts: list[str]) -> list[list[int]]:
        return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    codes = encode(list(schema.CODES))
    pieces = encode(list(schema.PIECES))
    if any(len(c) != 1 for c in codes) or len({c[0] for c in codes}) != len(codes):
        raise ValueError(f"loss_weights: the grade codes {list(schema.CODES)} are not distinct single tokens for this "
                         "tokenizer; train with loss_weights ''")
    code_ids = tuple(c[0] for c in codes)
    offsets, at = [], 0
    for piece in pieces[:-1]:
        at += len(piece)
        offsets.append(at)
        at += 1
    for code in schema.CODES:  # the layout must hold for whole answers, as the collator tokenizes them
        whole = encode([schema.answer_text([code] * schema.N_FIELDS)])[0]
        if [whole[o] for o in offsets if o < len(whole)] != [code_ids[schema.CODES.index(code)]] * len(offsets):
            raise ValueError("loss_weights: this tokenizer merges the answer's grades with the text around them, so "
                             "they have no fixed places; train with loss_weights ''")
    return tuple(offsets), code_ids  # type: ignore[return-value]


def token_weights(labels, offsets: Sequence[int], code_ids: Sequence[int], factors: Mapping[int, float],
                  first=None):
    """Per-token weights [batch, seq] for `labels` (-100 = not supervised): 0 off the completion, 1 on it, and
    factors[k] at a grade token whose label is grade k's code. `first`: each row's first answer position, when the
    caller has it already. Raises ValueError when a row's grade tokens are not where the answer template puts them
    (the message says which row). Every batch is checked, with one device sync: a later batch can hold a truncated
    or off-template answer too, which would otherwise be weighted wrongly without a word."""
    import torch

    supervised = labels != -100
    weights = supervised.to(torch.float32)
    if first is None:
        first = supervised.int().argmax(1)
    pos = first[:, None] + torch.as_tensor(offsets, device=labels.device)[None, :]
    inside = pos < labels.shape[1]
    grades = labels.gather(1, pos.clamp(max=labels.shape[1] - 1))  # clamped: read, then refused below if outside
    ids = torch.as_tensor(code_ids, device=labels.device)
    known = (grades[..., None] == ids).any(-1) & inside
    if not known.all():
        if not inside.all():
            raise ValueError("loss_weights: an answer is shorter than the 25-grade template (truncated?); check "
                             "max_length")
        row = int((~known).any(1).nonzero()[0])
        raise ValueError(f"loss_weights: row {row}'s answer does not have its grades where the answer template puts "
                         "them; train with loss_weights ''")
    factor = torch.ones_like(grades, dtype=torch.float32)
    for k, f in factors.items():
        factor[grades == code_ids[k]] = float(f)
    weights.scatter_(1, pos, factor)
    return weights


def weighted_token_loss(logits, labels, weights):
    """sum(w * cross-entropy) / sum(w) over the tokens, where logits[:, t] predicts labels[:, t] (already shifted)."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
    w = weights.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum()


def trainer_loss(trainer, model, inputs: dict[str, Any], return_outputs: bool, num_items_in_batch,
                 layout: tuple[tuple[int, ...], tuple[int, int, int]], factors: Mapping[int, float]):
    """The Trainer's `compute_loss` with the weighted loss: the model returns only the logits of the positions from
    the earliest answer token on (`logits_to_keep`), which are all the loss reads, and the result is scaled as the
    Trainer scales a token-mean loss under gradient accumulation (so equal weights give the plain loss)."""
    labels = inputs["labels"]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    first = (labels != -100).int().argmax(1)  # each row's first answer token
    start = int(first.min())
    keep = labels.shape[1] - start + 1  # the position before the first answer token predicts it
    # The weights (and their check's device sync) before the forward pass, so the sync does not wait for it.
    weights = token_weights(labels, layout[0], layout[1], factors, first=first)
    outputs = model(**rest, use_cache=False, logits_to_keep=keep)
    shifted = slice(labels.shape[1] - keep + 1, None)
    loss = weighted_token_loss(outputs.logits[:, :-1], labels[:, shifted], weights[:, shifted])
    if trainer.model_accepts_loss_kwargs and num_items_in_batch is not None:
        # the Trainer then sums micro-batches instead of averaging them: weigh this one by its share of the tokens
        loss = loss * (labels[:, 1:] != -100).sum() / num_items_in_batch
        if trainer.args.average_tokens_across_devices:
            loss = loss * trainer.accelerator.num_processes
    return (loss, outputs) if return_outputs else loss
