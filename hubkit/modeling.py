"""What training and inference share about models: the 4-bit config, the remote-code refusal, the base-model check.

    from hubkit.modeling import nf4_config
    quant = nf4_config(torch.bfloat16)        # QLoRA's nf4 + double quantisation, for from_pretrained
"""

from __future__ import annotations

from typing import Any


def nf4_config(compute_dtype: Any):
    """The one 4-bit config hubkit loads with (training's QLoRA and the pipeline's 4-bit path): nf4 + double quant."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


REMOTE_CODE_REFUSED = "trust_remote_code=True is refused: hubkit never runs code shipped in a model repo"


def base_card_facts(base_model: str) -> dict | None:
    """The licence, tags and citation a base model's own card declares (local folder or Hub repo); None without a card.

    A card that cannot be read is left out (None), not guessed from the model's name.
    """
    from pathlib import Path

    from huggingface_hub import ModelCard

    path = Path(base_model) / "README.md"
    if Path(base_model).is_dir() and not path.is_file():
        return None
    try:
        if not path.is_file():
            from hubkit.hub import HubError, download_file

            try:
                path = download_file(base_model, "README.md")
            except (HubError, ValueError):
                return None
        text = path.read_text(encoding="utf-8")
        data = ModelCard(text).data.to_dict()
    except (OSError, ValueError):
        return None
    from hubkit.cards.citation import citation_of

    facts = {k: data[k] for k in ("license", "license_name", "license_link", "tags") if data.get(k)}
    citation = citation_of(text)
    return {**facts, "citation": citation} if citation else facts


def check_vision_base(base_model: str) -> Any:
    """Load `base_model`'s config and fail clearly if it has no vision tower; returns the config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_model)
    if getattr(config, "vision_config", None) is None:
        raise ValueError(
            f"base model {base_model!r} (model_type={config.model_type!r}) has no vision tower; hubkit needs an "
            "image-text-to-text model such as Gemma 3 / MedGemma (Gemma3ForConditionalGeneration)"
        )
    return config
