"""Publishing what hubkit built: a dataset folder or a run folder -> a private Hub repo, cards re-rendered for it.

    from hubkit.publish import push_dataset_folder
    url = push_dataset_folder("runs/ds", "me/lumbar-ds")      # Parquet shards, then card + manifest + chart

The dataset card is re-rendered from the folder's manifest with the real repo id (so its snippet loads that repo),
and every file the card links to travels in the same commit.
"""

from __future__ import annotations

import os
from pathlib import Path


def push_dataset_folder(folder: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Push a `hubkit build-dataset` output folder; returns the repo URL.

    Raises:
        FileNotFoundError: not a save_to_disk folder. HubError: see `hubkit.hub.push_dataset`.
    """
    from hubkit.cards.dataset import CHART_FILE, render_dataset_card
    from hubkit.hub import push_dataset
    from hubkit.manifest import MANIFEST_FILE, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else None
    card_text = render_dataset_card(manifest, repo_id) if manifest is not None else None
    extra = [folder / name for name in (MANIFEST_FILE, CHART_FILE) if (folder / name).is_file()]
    return push_dataset(folder, repo_id, private=private, token=token, card_text=card_text, extra_files=extra)
