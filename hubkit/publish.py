"""Publishing what hubkit built, without rebuilding or retraining it: a dataset folder or a run folder -> a Hub repo.

    hubkit push runs/ds me/lumbar-ds            # a build-dataset folder: Parquet + card + manifest + chart
    hubkit push runs/seed me/medgemma-lumbar    # a train run folder: adapter, processor, config, card

    from hubkit.publish import push
    res = push("runs/ds", "me/lumbar-ds")       # PushResult(url, commit, changed)

Private by default, one commit, and no commit at all when nothing changed. The dataset card is re-rendered from the
folder's manifest with the real repo id (its snippet loads that repo); every file a card links to travels in the
same commit. `build-dataset --push` and `train --push` call this after their work; `check` runs before it.
"""

from __future__ import annotations

import os
from pathlib import Path

# What a run folder publishes (checkpoints, TensorBoard logs and PEFT's generic README stay local); the card and
# its figures come from `hubkit card`, or the card rendered when training ends.
RUN_FILES = [
    "adapter_model.safetensors", "adapter_config.json", "hubkit_config.json", "training_log.jsonl",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "processor_config.json", "preprocessor_config.json", "calibration.json", "README.md",
    "card_assets/*",
]


def kind_of(path: str | os.PathLike) -> str:
    """"dataset" for a build-dataset folder, "model" for a train run folder.

    Raises:
        FileNotFoundError: neither (the message says what each holds).
    """
    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        return "dataset"
    if (p / "adapter_config.json").is_file() and (p / "hubkit_config.json").is_file():
        return "model"
    if (p / "hubkit_config.json").is_file():
        raise FileNotFoundError(f"{p}: a run folder without an adapter yet (training has not finished); push it "
                                "when `hubkit train` has written adapter_model.safetensors")
    raise FileNotFoundError(f"{p}: not a dataset folder (dataset_dict.json, from `hubkit build-dataset`) nor a run "
                            "folder (adapter_config.json + hubkit_config.json, from `hubkit train`)")


def check(repo_id: str, repo_type: str, private: bool = True, token: str | None = None) -> str:
    """Before the long work: can this token push `repo_id` as asked? Returns the user name (HubError if not)."""
    from hubkit.hub import check_push_access

    return check_push_access(repo_id, repo_type, private=private, token=token)


def push(path: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Push a dataset folder or a run folder (see the module docstring); returns `hubkit.hub.PushResult`.

    Raises:
        FileNotFoundError: not a folder hubkit built. HubError: token, access, visibility, or the upload.
    """
    kind = kind_of(path)
    return push_dataset_folder(path, repo_id, private, token) if kind == "dataset" else \
        push_run_folder(path, repo_id, private, token)


def push_dataset_folder(folder: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Push a `hubkit build-dataset` output folder in one commit; returns `PushResult`."""
    from hubkit.cards.dataset import CHART_FILE, render_dataset_card
    from hubkit.cards.metadata import check_card
    from hubkit.hub import push_dataset
    from hubkit.manifest import MANIFEST_FILE, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else None
    card_text = render_dataset_card(manifest, repo_id) if manifest is not None else None
    extra = [folder / name for name in (MANIFEST_FILE, CHART_FILE) if (folder / name).is_file()]
    return push_dataset(folder, repo_id, private=private, token=token, card_text=card_text, extra_files=extra,
                        validate=lambda text: check_card(text, "dataset"))


def push_run_folder(run_dir: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Push a run folder's distributable files in one commit, with a card (rendered now if it has none)."""
    from hubkit.cards.metadata import check_card
    from hubkit.cards.model import write_model_card
    from hubkit.hub import push_files

    run = Path(run_dir)
    readme = run / "README.md"
    if not readme.is_file() or "hubkit card" not in readme.read_text(encoding="utf-8", errors="replace"):
        write_model_card(run, None, repo_id)  # PEFT's boilerplate README is not a card
    return push_files(run, repo_id, "model", "hubkit push: adapter, processor, config and card",
                      allow_patterns=RUN_FILES, private=private, token=token,
                      validate=lambda text: check_card(text, "model"))
