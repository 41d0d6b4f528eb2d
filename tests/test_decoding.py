"""Schema-constrained decoding on a tiny Gemma 3 that was taught the answer format (CPU, ~20 s to build).

`trained_tiny_run()` is shared with test_pipeline.py / test_evaluation.py: it trains a LoRA adapter (+ projector and
final norm) on a tiny random base until greedy generation reproduces the compact answer, and writes a run folder
like `hubkit train` does (adapter files + processor files, `base_model_name_or_path` = the base folder). Built once
per test process.
"""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hubkit import schema

PATTERN_SEED = 0
TRAIN_STEPS = 100  # loss ~0.01 at step 100 on 6 examples (lr 1e-2, ~15 s): greedy then follows the template


def _images(n: int, seed: int, size: int = 64) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L") for _ in range(n)]


def patterns() -> dict[int, list[str]]:
    """The answer taught for studies with 1, 2 and 3 images (codes drawn 6:3:2 so all three occur)."""
    rng = random.Random(PATTERN_SEED)
    return {n: [rng.choices(schema.CODES, weights=[6, 3, 2])[0] for _ in range(25)] for n in (1, 2, 3)}


def make_study(n: int, seed: int, study_id: str | None = None):
    from hubkit.chat import CANONICAL_VIEWS
    from hubkit.decoding import StudyInput

    return StudyInput(_images(n, seed), list(CANONICAL_VIEWS[:n]), study_id=study_id or f"s{n}_{seed}")


@functools.lru_cache(maxsize=1)
def trained_tiny_run() -> tuple[Path, Path]:
    """(run_dir, base_dir) of a tiny LoRA run that follows the answer schema; built once per process."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hubkit import decoding
    from hubkit.base_models import write_tiny_base

    root = Path(tempfile.mkdtemp(prefix="hubkit-decoding-"))
    atexit.register(shutil.rmtree, root, True)
    base = write_tiny_base(root / "base", image_size=64, patch_size=8)  # the geometry this fixture was tuned on
    processor = AutoProcessor.from_pretrained(base)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 0.2 M-param model: one thread is faster than two on a shared 2-core box
    try:
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_pretrained(base)
        lora = LoraConfig(
            r=16, lora_alpha=32, task_type="CAUSAL_LM",
            target_modules=r".*language_model.*\.(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
            modules_to_save=["multi_modal_projector", "language_model.norm"],
        )
        model = get_peft_model(model, lora)
        pats = patterns()
        studies = [make_study(n, 10 * n + k) for n in (1, 2, 3) for k in range(2)]  # 2 per pattern: n, not pixels
        targets = [decoding.answer_text(pats[n]) for n in (1, 2, 3) for k in range(2)]
        enc = decoding.prepare_inputs(processor, studies)  # same layout as TRL's prompt-completion collator
        comp = processor.tokenizer([t + "<end_of_turn>\n" for t in targets], add_special_tokens=False,
                                   padding=True, padding_side="right", return_tensors="pt")
        ids = torch.cat([enc["input_ids"], comp["input_ids"]], 1)
        mask = torch.cat([enc["attention_mask"], comp["attention_mask"]], 1)
        labels = torch.cat([torch.full_like(enc["input_ids"], -100),
                            comp["input_ids"].masked_fill(comp["attention_mask"] == 0, -100)], 1)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": enc["pixel_values"],
                 "token_type_ids": torch.cat([enc["token_type_ids"], torch.zeros_like(comp["input_ids"])], 1),
                 "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
        model.train()
        for _ in range(TRAIN_STEPS):
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        run = root / "run"
        model.peft_config["default"].base_model_name_or_path = str(base)
        model.save_pretrained(run)
        processor.save_pretrained(run)
    finally:
        torch.set_num_threads(threads)
    return run, base


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two busy ones


@pytest.fixture(scope="session")
def tiny_run() -> tuple[Path, Path]:
    return trained_tiny_run()


@pytest.fixture(scope="session")
def trained(tiny_run):
    """(model, processor) of the trained run, LoRA merged, fp32 on CPU."""
    from hubkit.pipeline import load_model
    from transformers import AutoProcessor

    run, _ = tiny_run
    return load_model(run), AutoProcessor.from_pretrained(run)


def _flat(pred, what: str) -> list:
    return [getattr(pred, what)[lv][c] for lv, c in schema.ANSWER_FIELDS]


def test_answer_plan_template_for_hubkit_tokenizer(trained):
    from hubkit.decoding import answer_plan

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
    from hubkit import decoding

    st = decoding._PerChoiceStepper(plan)
    fed, cands = st.start()
    seq, out = list(fed), []
    for i, c in enumerate(codes):
        out.append((list(seq), cands))
        if i < len(codes) - 1:
            chunk, cands = st.advance(schema.CODES.index(c))
            seq += chunk
    return out


def test_per_choice_plan_reproduces_tokenization_of_merging_tokenizer():
    from hubkit import decoding

    tok = _MergingTokenizer()
    plan = decoding.answer_plan(tok)
    assert plan.kind == "per_choice" and plan.problems
    rng = random.Random(1)
    for _ in range(5):
        codes = [rng.choice(schema.CODES) for _ in range(25)]
        steps = _replay(plan, codes)
        fed, cands = steps[-1]
        seq = fed + cands[schema.CODES.index(codes[-1])]
        full = tok([decoding.answer_text(codes)])["input_ids"][0]
        assert full[: len(seq)] == seq  # what is fed = the answer's own tokenization
        multi = [c for _, cs in steps for c in cs if len(c) > 1]
        assert multi and all(len(c) == 2 for c in multi)  # '"' + 'M' / '"' + 'S' share a first token


def test_per_choice_decoding_with_multi_token_codes(trained):
    """Codes merged with quotes ('"N"' one token, '"M"' two): batched == single == full-forward products."""
    import torch

    from hubkit import decoding

    model, processor = trained
    plan = decoding.answer_plan(_MergingTokenizer())
    studies = [make_study(n, 300 + n) for n in (3, 1)]
    batch = decoding.constrained_decode(model, processor, studies, plan=plan)
    for s, b in zip(studies, batch):
        single = decoding.constrained_decode(model, processor, [s], plan=plan)[0]
        assert single.labels == b.labels
        np.testing.assert_allclose(_flat(single, "probs"), _flat(b, "probs"), atol=1e-5)
    s, b = studies[0], batch[0]
    enc = decoding._to_device(decoding.prepare_inputs(processor, [s]), model)
    steps = _replay(plan, _flat(b, "labels"))
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
        np.testing.assert_allclose(_flat(b, "probs")[i], ref / ref.sum(), atol=1e-5)


def test_constrained_equals_free_greedy_on_trained_model(trained):
    from hubkit.decoding import constrained_decode, free_generate

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
    assert {code for c in cons for code in _flat(c, "labels")} == set(schema.CODES)  # not a constant answer
    assert len({c.json for c in cons}) > 1


def test_probabilities_batching_and_left_padding(trained):
    from hubkit.decoding import constrained_decode, teacher_forced_probs

    model, processor = trained
    studies = [make_study(n, 700 + n) for n in (3, 1, 2)]  # different prompt lengths -> left padding
    batch = constrained_decode(model, processor, studies)
    for s, b in zip(studies, batch):
        single = constrained_decode(model, processor, [s])[0]
        assert single.labels == b.labels
        np.testing.assert_allclose(_flat(single, "probs"), _flat(b, "probs"), atol=1e-5)
        probs = np.array(_flat(b, "probs"))
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
        assert (probs >= 0).all() and 0 < b.schema_mass <= 1
        ref = teacher_forced_probs(model, processor, s, _flat(b, "labels"))  # one uncached forward pass
        np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_decode_batches_prefetches_and_equals_one_batch_at_a_time(trained):
    from hubkit.decoding import constrained_decode, decode_batches

    model, processor = trained
    studies = [make_study(n, 800 + n) for n in (3, 1, 2, 3, 2)]
    streamed = list(decode_batches(model, processor, studies, batch_size=2))
    direct = [p for i in range(0, 5, 2) for p in constrained_decode(model, processor, studies[i:i + 2])]
    assert [p.labels for p in streamed] == [p.labels for p in direct]
    np.testing.assert_allclose([_flat(p, "probs") for p in streamed], [_flat(p, "probs") for p in direct], atol=1e-6)


def test_prefetch_order_errors_and_early_exit():
    import threading
    import time

    from hubkit.decoding import Prefetch

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
    from hubkit.decoding import answer_plan, constrained_decode

    model, processor = trained
    studies = [make_study(n, 900 + n) for n in (2, 3)]
    ref = constrained_decode(model, processor, studies)
    timings: dict = {}
    spec = constrained_decode(model, processor, studies, method="speculative", timings=timings)
    per_choice = constrained_decode(model, processor, studies, plan=answer_plan(processor.tokenizer, True))
    for r, s, p in zip(ref, spec, per_choice):
        assert r.labels == s.labels == p.labels
        np.testing.assert_allclose(_flat(r, "probs"), _flat(s, "probs"), atol=1e-5)
        np.testing.assert_allclose(_flat(r, "probs"), _flat(p, "probs"), atol=1e-5)
    assert timings["passes"] < 25
    exact: dict = {}
    constrained_decode(model, processor, studies[:1], method="speculative", draft=_flat(ref[0], "labels"),
                       timings=exact)
    assert exact["passes"] == 2  # prefill + one verification pass when the draft is the answer


def test_sliding_window_cache_and_rollback(tiny_run):
    """Prompt longer than the sliding window: cached, batched and speculative decoding still equal one full pass."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from hubkit.decoding import constrained_decode, teacher_forced_probs

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
        ref = teacher_forced_probs(model, processor, s, _flat(a, "labels"))
        np.testing.assert_allclose(_flat(a, "probs"), ref, atol=1e-5)
        np.testing.assert_allclose(_flat(b, "probs"), ref, atol=1e-5)


def test_free_generate_parse_failure_falls_back_to_normal(tiny_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hubkit.decoding import free_generate, parse_answer

    _, base = tiny_run
    model = AutoModelForImageTextToText.from_pretrained(base).eval()  # untrained: emits no JSON
    processor = AutoProcessor.from_pretrained(base)
    out = free_generate(model, processor, [make_study(1, 3)], max_new_tokens=8)
    assert out[0].parse_failed and all(v == "N" for v in _flat(out[0], "labels"))
    assert parse_answer('{"L1L2": 1}') == (out[0].labels, True)
