"""Random-init Gemma 3 VLM base models for tests, the CPU demo and GPU benchmarks (no weights downloaded).

Example:

    from hubkit.devkit.base_models import write_tiny_base, write_medgemma_arch_base
    tiny = write_tiny_base("runs/tiny-base")              # tiny (BENCHMARKS.md 4b), 128 px images, 16 tokens/image
    write_medgemma_arch_base("runs/mg-arch", device="cuda")  # MedGemma 1.5 4B geometry, random weights (GPU only)

Both folders load with `AutoModelForImageTextToText.from_pretrained` / `AutoProcessor.from_pretrained` (and with
Unsloth's `FastVisionModel.from_pretrained(path, use_exact_model_name=True)` on a GPU). The tokenizer is a byte-level
BPE over hubkit's own prompt/answer vocabulary with Gemma 3's special tokens; its pre-tokenizer isolates runs of
letters/digits from runs of punctuation, so each severity code of the compact answer ("N", "M", "S" between `":"`
and `","`) is one token and the template pieces around it tokenize identically whatever the code is.
"""

from __future__ import annotations

import math
from pathlib import Path

from hubkit import schema
from hubkit.slots import VIEWS

# Gemma 3's chat template (system text merged into the first user turn; an image item renders as <start_of_image>,
# which the processor expands to "\n\n<start_of_image>" + N soft tokens + "<end_of_image>\n\n").
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}"
    "{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
    "{%- else -%}{{ raise_exception('Invalid content type') }}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SOT, EOT = "<start_of_turn>", "<end_of_turn>"
BOI, EOI, IMAGE = "<start_of_image>", "<end_of_image>", "<image_soft_token>"

# MedGemma 1.5 4B / Gemma 3 4B special-token ids (the published tokenizer's).
MEDGEMMA_VOCAB_SIZE = 262_208
MEDGEMMA_SPECIAL_IDS: dict[str, int] = {
    PAD: 0, EOS: 1, BOS: 2, UNK: 3, SOT: 105, EOT: 106, BOI: 255_999, EOI: 256_000, IMAGE: 262_144,
}
# Isolates letter/digit runs and punctuation runs (each with an optional leading space) so that answer codes never
# merge with the JSON punctuation around them.
_PRETOKENIZE_PATTERN = r" ?[A-Za-z0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"


def _tokenizer_corpus() -> list[str]:
    """Text the BPE merges are learned from: every prompt variant, view label and answer piece hubkit emits."""
    import itertools
    import random

    views = list(VIEWS)
    texts = [schema.build_prompt(views), schema.build_prompt(views[:3]), "user\n", "model\n", "Sagittal T1"]
    texts += views + list(schema.SEVERITY_NAMES) + list(schema.CONDITION_TITLES.values())
    for n in range(1, len(views) + 1):
        texts += [schema.build_prompt(list(c)) for c in itertools.islice(itertools.combinations(views, n), 3)]
    rng = random.Random(0)
    for _ in range(64):
        texts.append(schema.build_target({c: rng.choice([-1, 0, 1, 2]) for c in schema.LABEL_COLUMNS}))
    return texts


def build_tokenizer(special_ids: dict[str, int] | None = None, vocab_size: int | None = None):
    """A `PreTrainedTokenizerFast` with Gemma 3's special tokens, chat template and BOS post-processing.

    Args:
        special_ids: token -> id for the 9 special tokens; default: pad/eos/bos/unk 0-3, <start_of_turn> 105,
            <end_of_turn> 106 and the three image tokens at the top of the vocabulary (Gemma 3's layout, compact).
        vocab_size: total size; ids not used by a special or learned token become `<unusedK>`. Default: the
            smallest multiple of 64 that fits.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, EOS, BOS, UNK, SOT, EOT, BOI, EOI, IMAGE]
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre
    learner.train_from_iterator(
        _tokenizer_corpus(),
        trainers.BpeTrainer(vocab_size=4096, min_frequency=1, show_progress=False,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    learned = sorted(learner.get_vocab().items(), key=lambda kv: kv[1])
    merges = [tuple(m) for m in _merges_of(learner)]
    if special_ids is None:
        n = len(learned) + len(specials)
        size = vocab_size or 64 * math.ceil((n + 8) / 64)
        special_ids = {PAD: 0, EOS: 1, BOS: 2, UNK: 3, SOT: 105, EOT: 106, BOI: size - 3, EOI: size - 2, IMAGE: size - 1}
        vocab_size = size
    vocab_size = vocab_size or max(special_ids.values()) + 1
    if set(special_ids) != set(specials):
        raise ValueError(f"special_ids must name exactly {specials}")
    taken = set(special_ids.values())
    free = (i for i in range(vocab_size) if i not in taken)
    vocab: dict[str, int] = dict(special_ids)
    for tok, _ in learned:
        try:
            vocab[tok] = next(free)
        except StopIteration:
            raise ValueError(f"vocab_size {vocab_size} is too small for {len(learned)} learned tokens") from None
    for k, i in enumerate(free):
        vocab[f"<unused{k}>"] = i

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE,
                              "sot_token": SOT, "eot_token": EOT},
        chat_template=GEMMA3_CHAT_TEMPLATE,
        padding_side="right",
    )


def _merges_of(tokenizer) -> list[list[str]]:
    import json

    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [m.split(" ") if isinstance(m, str) else m for m in merges]


def build_processor(tokenizer, image_size: int, mm_tokens_per_image: int):
    """`Gemma3Processor` around `tokenizer` with the PIL image processor (works without torchvision)."""
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        resample=2,  # PIL bilinear, as Gemma 3
        do_convert_rgb=True, do_pan_and_scan=False,
    )
    return Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=mm_tokens_per_image,
    )


def tiny_config(tokenizer, image_size: int = 64, mm_tokens_per_image: int = 16, hidden_size: int = 64,
                num_layers: int = 2, vision_hidden_size: int = 64, vision_layers: int = 2, patch_size: int = 8):
    """A tiny `Gemma3Config` matching `tokenizer`'s ids. Raises ValueError if the projector geometry is invalid."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    patches = image_size // patch_size
    side = math.isqrt(mm_tokens_per_image)
    if image_size % patch_size or side * side != mm_tokens_per_image or patches % side:
        raise ValueError(
            f"image_size {image_size} / patch {patch_size} = {patches} patches per side must be divisible by "
            f"sqrt(mm_tokens_per_image={mm_tokens_per_image}) (a square number)"
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD, EOS, BOS, EOT, BOI, EOI, IMAGE)}
    heads = max(1, hidden_size // 32)
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=1,
        head_dim=hidden_size // heads, query_pre_attn_scalar=hidden_size // heads, sliding_window=1024,
        layer_types=["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(num_layers - 1)]
        + ["full_attention"],
        max_position_embeddings=8192, pad_token_id=ids[PAD], eos_token_id=ids[EOS], bos_token_id=ids[BOS],
    )
    vision = SiglipVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size, num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden_size // 32), image_size=image_size, patch_size=patch_size,
        vision_use_head=False,
    )
    return Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=ids[BOI], eoi_token_index=ids[EOI], image_token_index=ids[IMAGE],
        eos_token_id=[ids[EOS], ids[EOT]], pad_token_id=ids[PAD], bos_token_id=ids[BOS],
    )


def medgemma_config():
    """MedGemma 1.5 4B's exact `Gemma3Config` (the published google/gemma-3-4b-it config.json, field by field)."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=MEDGEMMA_VOCAB_SIZE, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, sliding_window=1024, sliding_window_pattern=6,
        max_position_embeddings=131_072, tie_word_embeddings=True,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=896,
        patch_size=14, vision_use_head=False, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
    )
    return Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=256, boi_token_index=255_999,
        eoi_token_index=256_000, image_token_index=262_144, eos_token_id=[1, 106], pad_token_id=0, bos_token_id=2,
        tie_word_embeddings=True,
    )


def _fix_random_init(model, embed_std: float | None) -> None:
    """Undo two random-init traps: transformers zeroes the projector weight (a bare Parameter LoRA cannot reach, so
    images would contribute nothing), and std-0.02 tied embeddings keep a tiny model's logits too flat to learn."""
    import torch

    proj = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        proj.normal_(0.0, 1.0 / math.sqrt(proj.shape[0]))
        if embed_std is not None:
            model.get_input_embeddings().weight.normal_(0.0, embed_std)


def _pixel_vision_init(model, gain: float = 0.1) -> None:
    """Make a random SigLIP tower pass pixels through: each patch embeds as a coarse grid of block means.

    The patch convolution gets fixed box filters (channel k = mean of block k of a sqrt(hidden) x sqrt(hidden)
    grid over the patch, RGB averaged), position embeddings and every layer's residual branch (attention
    out_proj, MLP fc2) are scaled by `gain`, so the tower's output is ~ a downsampled image, normalised per patch.
    Pixel differences then reach the language model from step 0 instead of through a random projection. Only for
    the tiny demo/test model.
    """
    import torch

    vt = model.model.vision_tower
    vt = getattr(vt, "vision_model", vt)
    conv = vt.embeddings.patch_embedding
    d, _, p, _ = conv.weight.shape
    g = math.isqrt(d)
    if g * g != d or p % g:
        raise ValueError(f"pixel init needs a square vision width (got {d}) whose side divides the patch ({p})")
    b = p // g
    w = torch.zeros_like(conv.weight)
    for k in range(d):
        i, j = divmod(k, g)
        w[k, :, i * b:(i + 1) * b, j * b:(j + 1) * b] = 1.0 / (3 * b * b)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.zero_()
        vt.embeddings.position_embedding.weight.mul_(gain)
        for layer in vt.encoder.layers:
            layer.self_attn.out_proj.weight.mul_(gain)
            layer.mlp.fc2.weight.mul_(gain)


def _save(model, processor, out: Path) -> Path:
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(EOT)], do_sample=False,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)  # preprocessor_config.json too, for loaders that read it alone
    return out


def write_tiny_base(out_dir: str | Path, seed: int = 0, image_size: int = 128, mm_tokens_per_image: int = 16,
                    hidden_size: int = 64, num_layers: int = 2, vision_hidden_size: int = 64,
                    vision_layers: int = 2, patch_size: int = 32, embed_std: float = 0.15,
                    pixel_vision: bool = True) -> Path:
    """Write a tiny random `Gemma3ForConditionalGeneration` + processor that can learn on CPU.

    Args:
        out_dir: folder to create (overwritten files if it exists).
        seed: torch seed for the random weights.
        image_size, patch_size, mm_tokens_per_image: SigLIP input side, patch side and pooled tokens per image;
            (image_size // patch_size) must be divisible by sqrt(mm_tokens_per_image). The default 128 px / patch 32
            gives 4x4 patches = 16 tokens with no pooling, each token a 32x32-pixel region (with `pixel_vision`, its
            8x8 block means), cheaper on CPU than 128 px / patch 16 pooled to 16 tokens.
        hidden_size, num_layers, vision_hidden_size, vision_layers: widths/depths of the two towers.
        embed_std: std of the (tied) token embeddings; large enough that logits can get sharp.
        pixel_vision: initialise the vision tower to pass a downsampled image through (`_pixel_vision_init`), so
            that a random tower does not scramble the pixels the tiny model must learn to read (what it reaches with
            configs/tiny-cpu.yaml on the synthetic phantom: BENCHMARKS.md 4).

    Returns:
        The folder path.
    """
    import torch
    from transformers import Gemma3ForConditionalGeneration

    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer, image_size, mm_tokens_per_image, hidden_size, num_layers,
                         vision_hidden_size, vision_layers, patch_size)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    _fix_random_init(model, embed_std)
    if pixel_vision:
        _pixel_vision_init(model)
    return _save(model, build_processor(tokenizer, image_size, mm_tokens_per_image), Path(out_dir))


def medgemma_processor():
    """Processor with MedGemma's special ids over a synthetic 262,208-token vocab: 896 px, 256 tokens per image."""
    tokenizer = build_tokenizer(MEDGEMMA_SPECIAL_IDS, MEDGEMMA_VOCAB_SIZE)
    return build_processor(tokenizer, image_size=896, mm_tokens_per_image=256)


def write_medgemma_arch_base(out_dir: str | Path, dtype: str = "bfloat16", device: str = "cpu",
                             seed: int = 0) -> Path:
    """Write a random-init model with MedGemma 1.5 4B's exact config (≈ 4.30 B params, ≈ 8.6 GB in bf16).

    For GPU benchmarks without downloading weights. Building holds the whole model (its bf16 size above) in memory
    on `device` ("cuda" recommended; "cpu" works on a machine with enough RAM). Returns the folder path.
    """
    import torch
    from transformers import Gemma3ForConditionalGeneration

    processor = medgemma_processor()
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = Gemma3ForConditionalGeneration(medgemma_config()).eval()
    finally:
        torch.set_default_dtype(old)
    _fix_random_init(model, embed_std=None)
    return _save(model, processor, Path(out_dir))
