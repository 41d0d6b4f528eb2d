"""The loss weighted like the metric (hubkit.training.weighting): equal to a hand computation on a tiny batch, equal
to the model's own loss with weights 1, and wired into `hubkit train` on the TRL backend."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hubkit import schema
from hubkit.training.weighting import grade_layout, token_weights, trainer_loss
from hubkit.run_record import read_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two busy ones
# Answers with all three grades, at different fields, for two studies with different prompt lengths.
CODES = ["N" * 3 + "M" + "N" * 10 + "S" + "N" * 5 + "MSN" + "NN",
         "S" + "N" * 6 + "M" * 2 + "N" * 15 + "S"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, processor, batch) : a tiny random Gemma 3 and one batch from the training collator."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hubkit.chat import build_chat_row
    from hubkit.devkit.base_models import write_tiny_base
    from hubkit.training.collate import CachedVLMCollator
    from tests.fixtures.tiny_run import make_study

    base = write_tiny_base(tmp_path_factory.mktemp("w") / "base", image_size=64, patch_size=8)
    processor = AutoProcessor.from_pretrained(base)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(base).eval()
    rows = []
    for n, codes in zip((1, 3), CODES):  # 1 and 3 images: the answers start at different columns
        s = make_study(n, 40 + n)
        rows.append(build_chat_row(s.images, s.views, schema.build_prompt(s.views), schema.answer_text(list(codes))))
    batch = CachedVLMCollator(processor)(rows)
    return model, processor, batch


def _grade_positions(tokenizer, codes: str) -> list[int]:
    """By hand: field i's token is where the tokenization of the answer changes when only field i's code does."""
    base = tokenizer(schema.answer_text(list(codes)), add_special_tokens=False)["input_ids"]
    out = []
    for i, c in enumerate(codes):
        other = list(codes)
        other[i] = "N" if c != "N" else "S"
        alt = tokenizer(schema.answer_text(other), add_special_tokens=False)["input_ids"]
        diff = [t for t, (a, b) in enumerate(zip(base, alt)) if a != b]
        assert len(diff) == 1 and len(alt) == len(base)
        out.append(diff[0])
    return out


def _hand_loss(model, processor, batch, factors) -> float:
    import math

    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"]
    total = weight_sum = 0.0
    for r, codes in enumerate(CODES):
        start = next(t for t in range(labels.shape[1]) if labels[r, t] != -100)
        grades = {start + p: schema.CODES.index(c) for p, c in zip(_grade_positions(processor.tokenizer, codes), codes)}
        for t in range(1, labels.shape[1]):
            if labels[r, t] == -100:
                continue
            logp = logits[r, t - 1].double().log_softmax(-1)[labels[r, t]].item()
            w = factors[grades[t]] if t in grades else 1.0
            total += -w * logp
            weight_sum += w
    assert math.isfinite(total)
    return total / weight_sum


def _trainer(accepts: bool = False):
    return SimpleNamespace(model_accepts_loss_kwargs=accepts, args=SimpleNamespace(average_tokens_across_devices=False))


def test_layout_finds_the_grade_tokens(tiny):
    _, processor, batch = tiny
    offsets, code_ids = grade_layout(processor.tokenizer)
    assert list(offsets) == _grade_positions(processor.tokenizer, CODES[0])
    w = token_weights(batch["labels"], offsets, code_ids, {0: 1.0, 1: 2.0, 2: 4.0})
    supervised = batch["labels"] != -100
    assert ((w > 0) == supervised).all()
    for r, codes in enumerate(CODES):
        extra = sum({"N": 0, "M": 1, "S": 3}[c] for c in codes)  # each M adds 1 over 1, each S 3
        assert float(w[r].sum()) == pytest.approx(float(supervised[r].sum()) + extra)
    broken = batch["labels"].clone()
    broken[1, int(supervised[1].int().argmax()) + offsets[4]] = 7  # a grade token replaced by another token
    with pytest.raises(ValueError, match="row 1's answer does not have its grades where"):
        token_weights(broken, offsets, code_ids, {0: 1.0, 1: 2.0, 2: 4.0})


def test_weighted_loss_equals_a_hand_computation(tiny):
    import torch

    model, processor, batch = tiny
    layout = grade_layout(processor.tokenizer)
    factors = {0: 1.0, 1: 2.0, 2: 4.0}
    with torch.no_grad():
        loss, outputs = trainer_loss(_trainer(), model, dict(batch), True, None, layout, factors)
    assert float(loss) == pytest.approx(_hand_loss(model, processor, batch, factors), rel=1e-5)
    start = int((batch["labels"] != -100).int().argmax(1).min())
    assert outputs.logits.shape[1] == batch["labels"].shape[1] - start + 1  # only the answer's logits


def test_weights_of_one_give_the_unweighted_loss(tiny):
    import torch

    model, processor, batch = tiny
    layout = grade_layout(processor.tokenizer)
    ones = {0: 1.0, 1: 1.0, 2: 1.0}
    with torch.no_grad():
        plain = float(model(**batch, use_cache=False).loss)
        assert float(trainer_loss(_trainer(), model, dict(batch), False, None, layout, ones)) == pytest.approx(
            plain, rel=1e-5)
        n = int((batch["labels"][:, 1:] != -100).sum())  # a Trainer that sums micro-batches over 2n tokens
        assert float(trainer_loss(_trainer(accepts=True), model, dict(batch), False, 2 * n, layout, ones)) == \
            pytest.approx(plain / 2, rel=1e-5)


def test_hubkit_train_uses_it_on_the_trl_backend(tmp_path, monkeypatch):
    from pathlib import Path

    from hubkit.config import BuildConfig, TrainConfig
    from hubkit.dataset_builder.build import build_dataset
    from hubkit.devkit.base_models import write_tiny_base
    from hubkit.devkit.synth import synth_cohort
    from hubkit.training import train, weighting

    calls = []
    real = weighting.trainer_loss

    def counting(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(weighting, "trainer_loss", counting)
    synth_cohort(tmp_path / "cohort", 6, seed=1, progress=False)
    build_dataset(BuildConfig(data_dir=str(tmp_path / "cohort"), slice_size=64, validation_fraction=0.34),
                  tmp_path / "ds")
    base = write_tiny_base(tmp_path / "base", image_size=64, patch_size=8)
    yaml = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
    cfg = TrainConfig.from_yaml(yaml).with_overrides(
        max_steps=2, per_device_train_batch_size=2, per_device_eval_batch_size=2, eval_steps=2, save_steps=2,
        logging_steps=1, eval_on_start=False, oversample="", augment="none", lr_flip=0.0,
        loss_weights="moderate=2,severe=4")
    run = train(str(tmp_path / "ds"), str(base), tmp_path / "run", cfg)
    assert calls and all(f == {0: 1.0, 1: 2.0, 2: 4.0} for f in calls)  # training and evaluation steps
    meta = read_run(run)
    assert meta.train_config["loss_weights"] == "moderate=2,severe=4" and meta.global_step == 2
