"""Random-init base models: the tiny CPU model and MedGemma 1.5 4B's exact geometry (config only on CPU)."""

from __future__ import annotations

import json
import random

import pytest

from hubkit import schema
from hubkit.devkit.base_models import (
    BOI, EOI, EOT, IMAGE, MEDGEMMA_SPECIAL_IDS, SOT, build_tokenizer, medgemma_config, tiny_config,
    write_medgemma_arch_base, write_tiny_base,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_base(tmp_path_factory.mktemp("tiny-base"), seed=0)


def test_tiny_base_loads_with_auto_classes(tiny):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from hubkit.chat import build_chat_row

    processor = AutoProcessor.from_pretrained(tiny)
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(processor).__name__ == "Gemma3Processor"
    assert isinstance(processor.image_processor, Gemma3ImageProcessorPil)
    assert processor.image_seq_length == model.config.mm_tokens_per_image == 16
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    # random-init traps fixed: the projector is not all zeros, embeddings are wide enough for sharp logits
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0
    assert 0.12 < model.get_input_embeddings().weight.std().item() < 0.18

    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>", SOT, EOT, BOI, EOI, IMAGE)}
    assert [ids["<pad>"], ids["<eos>"], ids["<bos>"], ids["<unk>"], ids[SOT], ids[EOT]] == [0, 1, 2, 3, 105, 106]
    cfg = model.config
    assert (cfg.boi_token_index, cfg.eoi_token_index, cfg.image_token_index) == (ids[BOI], ids[EOI], ids[IMAGE])
    assert model.generation_config.eos_token_id == [1, 106]

    images = [Image.new("L", (448, 448), 128) for _ in range(2)]
    row = build_chat_row(images, ["Sagittal T2", "Axial T2 L4/L5"], "Classify.")
    text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<bos><start_of_turn>user\nSagittal T2<start_of_image>Axial T2 L4/L5<start_of_image>")
    assert text.endswith("Classify.<end_of_turn>\n<start_of_turn>model\n")
    enc = processor(text=[text], images=[row["images"]], add_special_tokens=False, return_tensors="pt")
    assert enc["pixel_values"].shape == (2, 3, 128, 128)
    assert (enc["input_ids"] == ids[IMAGE]).sum() == 32 and enc["token_type_ids"].sum() == 32
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_severity_codes_are_single_tokens_in_the_compact_answer():
    tok = build_tokenizer()
    code_ids = tok.convert_tokens_to_ids(list(schema.CODES))
    assert len(set(code_ids)) == 3 and tok.unk_token_id not in code_ids
    pieces = schema.answer_template()
    piece_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in pieces]
    rng = random.Random(0)
    for _ in range(30):
        labels = {c: rng.choice([-1, 0, 1, 2]) for c in schema.LABEL_COLUMNS}
        answer = schema.build_target(labels)
        codes = [json.loads(answer)[lv][c] for lv, c in schema.ANSWER_FIELDS]
        # the answer tokenizes as template piece, code, piece, code, ...: every code is exactly one token and the
        # pieces around it tokenize the same whichever code sits between them
        expected = list(piece_ids[0])
        for code, ids in zip(codes, piece_ids[1:]):
            expected += [tok.convert_tokens_to_ids(code)] + ids
        assert tok(answer, add_special_tokens=False)["input_ids"] == expected
        assert tok.decode(expected) == answer


def test_tiny_config_rejects_bad_projector_geometry():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(build_tokenizer(), image_size=64, mm_tokens_per_image=9, patch_size=8)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(build_tokenizer(), image_size=100, mm_tokens_per_image=16, patch_size=16)


def test_medgemma_arch_config_matches_medgemma_1_5_4b():
    import torch
    from transformers import Gemma3ForConditionalGeneration

    cfg = medgemma_config()
    t, v = cfg.text_config, cfg.vision_config
    assert (t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers) == (262_208, 2560, 10240, 34)
    assert (t.num_attention_heads, t.num_key_value_heads, t.head_dim, t.query_pre_attn_scalar) == (8, 4, 256, 256)
    assert t.sliding_window == 1024 and t.layer_types.count("full_attention") == 5
    assert t.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
    assert t.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    assert (v.num_hidden_layers, v.hidden_size, v.intermediate_size, v.num_attention_heads) == (27, 1152, 4304, 16)
    assert (v.image_size, v.patch_size, v.vision_use_head) == (896, 14, False)
    assert (cfg.mm_tokens_per_image, cfg.boi_token_index, cfg.eoi_token_index, cfg.image_token_index) == (
        256, 255_999, 256_000, 262_144)
    assert cfg.eos_token_id == [1, 106] and cfg.tie_word_embeddings
    with torch.device("meta"):  # never materialise 4B parameters on a CPU box
        model = Gemma3ForConditionalGeneration(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 4.29e9 < n < 4.31e9, n


def test_medgemma_processor_has_real_special_ids(tmp_path):
    from transformers import AutoProcessor

    from hubkit.devkit.base_models import medgemma_processor

    medgemma_processor().save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    tok = processor.tokenizer
    assert len(tok) == 262_208
    assert {t: tok.convert_tokens_to_ids(t) for t in MEDGEMMA_SPECIAL_IDS} == MEDGEMMA_SPECIAL_IDS
    assert processor.image_seq_length == 256
    assert processor.image_processor.size["height"] == 896


@pytest.mark.gpu
def test_medgemma_arch_base_loads_with_transformers_and_unsloth(tmp_path):
    import torch

    out = write_medgemma_arch_base(tmp_path / "mg", device="cuda")
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.bfloat16)
    assert abs(sum(p.numel() for p in model.parameters()) - 4.30e9) < 0.01e9
    del model
    from unsloth import FastVisionModel

    model, processor = FastVisionModel.from_pretrained(str(out), load_in_4bit=True, use_exact_model_name=True)
    assert processor.image_seq_length == 256
