"""Schema-constrained decoding on a tiny Gemma 3 that was taught the answer format (`tests.fixtures.tiny_run`)."""

from __future__ import annotations

import numpy as np
import pytest

from hubkit import schema
from tests.fixtures.tiny_run import flat, make_study

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two busy ones


def test_answer_plan_template_for_hubkit_tokenizer(trained):
    from hubkit.inference.answer_plan import answer_plan

    _, processor = trained
    plan = answer_plan(processor.tokenizer)
    assert plan.kind == "template", plan.problems
    assert len(set(plan.code_ids)) == 3 and len(plan.piece_ids) == 26


class _MergingTokenizer:
    """Character tokenizer that merges '"N"' into one token: codes do not tokenize the same in context."""

    def __init__(self):
        self.vocab = {'"N"': 0}

    def _id(self, tok):
        return self.vocab.setdefault(tok, len(self.vocab))

    def __call__(self, texts, add_special_tokens=False):
        out = []
        for t in texts:
            ids, i = [], 0
            while i < len(t):
                if t.startswith('"N"', i):
                    ids.append(self._id('"N"'))
                    i += 3
                else:
                    ids.append(self._id(t[i]))
                    i += 1
            out.append(ids)
        return {"input_ids": out}


def _replay(plan, codes):
    """(answer tokens fed before field i, candidates at field i) for each field, via a fresh per-choice stepper."""
    from hubkit.inference import answer_plan as ap

    st = ap._PerChoiceStepper(plan)
    fed, cands = st.start()
    seq, out = list(fed), []
    for i, c in enumerate(codes):
        out.append((list(seq), cands))
        if i < len(codes) - 1:
            chunk, cands = st.advance(schema.CODES.index(c))
            seq += chunk
    return out


def test_per_choice_plan_reproduces_tokenization_of_merging_tokenizer():
    import random

    from hubkit.inference import answer_plan as ap

    tok = _MergingTokenizer()
    plan = ap.answer_plan(tok)
    assert plan.kind == "per_choice" and plan.problems
    rng = random.Random(1)
    for _ in range(5):
        codes = [rng.choice(schema.CODES) for _ in range(25)]
        steps = _replay(plan, codes)
        fed, cands = steps[-1]
        seq = fed + cands[schema.CODES.index(codes[-1])]
        full = tok([schema.answer_text(codes)])["input_ids"][0]
        assert full[: len(seq)] == seq  # what is fed = the answer's own tokenization
        multi = [c for _, cs in steps for c in cs if len(c) > 1]
        assert multi and all(len(c) == 2 for c in multi)  # '"' + 'M' / '"' + 'S' share a first token


def test_per_choice_decoding_with_multi_token_codes(trained):
    """Codes merged with quotes ('"N"' one token, '"M"' two): batched == single == full-forward products."""
    import torch

    from hubkit.inference import answer_plan as ap, decoding
    from hubkit.inference.studies import prepare_inputs, to_device

    model, processor = trained
    plan = ap.answer_plan(_MergingTokenizer())
    batch_studies = [make_study(n, 300 + n) for n in (3, 1)]
    batch = decoding.constrained_decode(model, processor, batch_studies, plan=plan)
    for s, b in zip(batch_studies, batch):
        single = decoding.constrained_decode(model, processor, [s], plan=plan)[0]
        assert single.labels == b.labels
        np.testing.assert_allclose(flat(single, "probs"), flat(b, "probs"), atol=1e-5)
    s, b = batch_studies[0], batch[0]
    enc = to_device(prepare_inputs(processor, [s]), model)
    steps = _replay(plan, flat(b, "labels"))
    for i in (0, 7, 24):
        fed, cands = steps[i]
        lps = []
        for c in cands:
            extra = torch.tensor([fed + c])
            ids = torch.cat([enc["input_ids"], extra], 1)
            with torch.inference_mode():
                logp = model(input_ids=ids, pixel_values=enc["pixel_values"], attention_mask=torch.ones_like(ids),
                             token_type_ids=torch.cat([enc["token_type_ids"], torch.zeros_like(extra)], 1),
                             use_cache=False).logits[0].log_softmax(-1)
            start = enc["input_ids"].shape[1] + len(fed)
            lps.append(sum(float(logp[start + j - 1, t]) for j, t in enumerate(c)))
        ref = np.exp(np.array(lps) - max(lps))
        np.testing.assert_allclose(flat(b, "probs")[i], ref / ref.sum(), atol=1e-5)


def test_constrained_equals_free_greedy_on_trained_model(trained):
    from hubkit.inference.decoding import constrained_decode
    from hubkit.inference.generate import free_generate

    model, processor = trained
    studies = [make_study(n, 500 + n) for n in (1, 2, 3, 3)]  # unseen images
    free = free_generate(model, processor, studies)
    cons = constrained_decode(model, processor, studies)
    followed = [f for f in free if not f.parse_failed]
    assert len(followed) >= 3, [f.text for f in free]  # the trained model follows the schema
    for f, c in zip(free, cons):
        assert not c.parse_failed and schema.parse_target(c.json)
        if not f.parse_failed:
            assert c.labels == f.labels and c.json == f.text.strip()
    assert {code for c in cons for code in flat(c, "labels")} == set(schema.CODES)  # not a constant answer
    assert len({c.json for c in cons}) > 1


def test_probabilities_batching_and_left_padding(trained):
    from hubkit.inference.decoding import constrained_decode
    from tests.fixtures.oracle import teacher_forced_probs

    model, processor = trained
    studies = [make_study(n, 700 + n) for n in (3, 1, 2)]  # different prompt lengths -> left padding
    batch = constrained_decode(model, processor, studies)
    for s, b in zip(studies, batch):
        single = constrained_decode(model, processor, [s])[0]
        assert single.labels == b.labels
        np.testing.assert_allclose(flat(single, "probs"), flat(b, "probs"), atol=1e-5)
        probs = np.array(flat(b, "probs"))
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
        assert (probs >= 0).all() and 0 < b.schema_mass <= 1
        ref = teacher_forced_probs(model, processor, s, flat(b, "labels"))  # one uncached forward pass
        np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_decode_batches_prefetches_and_equals_one_batch_at_a_time(trained):
    from hubkit.inference.decoding import constrained_decode, decode_batches

    model, processor = trained
    studies = [make_study(n, 800 + n) for n in (3, 1, 2, 3, 2)]
    streamed = list(decode_batches(model, processor, studies, batch_size=2))
    direct = [p for i in range(0, 5, 2) for p in constrained_decode(model, processor, studies[i:i + 2])]
    assert [p.labels for p in streamed] == [p.labels for p in direct]
    np.testing.assert_allclose([flat(p, "probs") for p in streamed], [flat(p, "probs") for p in direct], atol=1e-6)


def test_prefetch_order_errors_and_early_exit():
    import threading
    import time

    from hubkit.inference.batching import Prefetch

    threads = set()

    def slow_square(x):
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return x * x

    assert list(Prefetch(range(6), slow_square, depth=2)) == [0, 1, 4, 9, 16, 25]
    assert threads == {"hubkit-prefetch"} and len(Prefetch([1, 2, 3])) == 3

    def boom(x):
        if x == 2:
            raise ValueError("study 2 unreadable")
        return x

    got = []
    with pytest.raises(ValueError, match="study 2 unreadable"):
        for x in Prefetch(range(5), boom):
            got.append(x)
    assert got == [0, 1]  # results before the failing item still arrive, in order

    produced = []
    for x in Prefetch(range(1000), lambda v: produced.append(v) or v):
        if x == 3:
            break
    time.sleep(0.3)
    assert len(produced) < 10  # the producer stopped when the consumer left
    assert not any(t.name == "hubkit-prefetch" for t in threading.enumerate())


def test_speculative_and_per_choice_match_stepwise(trained):
    from hubkit.inference.answer_plan import answer_plan
    from hubkit.inference.decoding import constrained_decode

    model, processor = trained
    studies = [make_study(n, 900 + n) for n in (2, 3)]
    ref = constrained_decode(model, processor, studies)
    timings: dict = {}
    spec = constrained_decode(model, processor, studies, method="speculative", timings=timings)
    per_choice = constrained_decode(model, processor, studies, plan=answer_plan(processor.tokenizer, True))
    for r, s, p in zip(ref, spec, per_choice):
        assert r.labels == s.labels == p.labels
        np.testing.assert_allclose(flat(r, "probs"), flat(s, "probs"), atol=1e-5)
        np.testing.assert_allclose(flat(r, "probs"), flat(p, "probs"), atol=1e-5)
    assert timings["passes"] < 25
    exact: dict = {}
    constrained_decode(model, processor, studies[:1], method="speculative", draft=flat(ref[0], "labels"),
                       timings=exact)
    assert exact["passes"] == 2  # prefill + one verification pass when the draft is the answer


def test_sliding_window_cache_and_rollback(tiny_run):
    """Prompt longer than the sliding window: cached, batched and speculative decoding still equal one full pass."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from hubkit.inference.decoding import constrained_decode
    from tests.fixtures.oracle import teacher_forced_probs

    _, base = tiny_run
    cfg = AutoConfig.from_pretrained(base)
    cfg.text_config.sliding_window = 24
    model = AutoModelForImageTextToText.from_pretrained(base, config=cfg).eval()
    assert "sliding_attention" in cfg.text_config.layer_types
    processor = AutoProcessor.from_pretrained(base)
    studies = [make_study(n, 40 + n) for n in (1, 3)]
    step = constrained_decode(model, processor, studies)
    spec = constrained_decode(model, processor, studies, method="speculative", draft="M")
    for s, a, b in zip(studies, step, spec):
        assert a.labels == b.labels
        ref = teacher_forced_probs(model, processor, s, flat(a, "labels"))
        np.testing.assert_allclose(flat(a, "probs"), ref, atol=1e-5)
        np.testing.assert_allclose(flat(b, "probs"), ref, atol=1e-5)


def test_free_generate_parse_failure_falls_back_to_normal(tiny_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hubkit.inference.generate import free_generate, parse_answer

    _, base = tiny_run
    model = AutoModelForImageTextToText.from_pretrained(base).eval()  # untrained: emits no JSON
    processor = AutoProcessor.from_pretrained(base)
    out = free_generate(model, processor, [make_study(1, 3)], max_new_tokens=8)
    assert out[0].parse_failed and all(v == "N" for v in flat(out[0], "labels"))
    assert parse_answer('{"L1L2": 1}') == (out[0].labels, True)


def test_studies_encoded_apart_and_merged_equal_one_batch(trained):
    """What the pipeline's worker processes do (one study each, merged after) gives the batch's exact tensors."""
    import torch

    from hubkit.inference.studies import merge_encoded, prepare_inputs

    _, processor = trained
    studies = [make_study(n, 950 + n) for n in (2, 3, 1)]  # different lengths: left padding
    whole = prepare_inputs(processor, studies)
    merged = merge_encoded([prepare_inputs(processor, [s]) for s in studies], processor.tokenizer.pad_token_id)
    assert set(merged) == set(whole)
    for k in whole:
        assert merged[k].dtype == whole[k].dtype and torch.equal(merged[k], whole[k]), k
