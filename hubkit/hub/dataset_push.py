"""A built dataset folder -> a Hub dataset repo in ONE commit: Parquet shards, the card, and the files it links.

The card's `configs` / `dataset_info` metadata (what `load_dataset` and the Hub's viewer read) is written here from
the data, the same fields `DatasetDict.push_to_hub` would write, so the shards, the card, the manifest and the chart
arrive together. The shards are byte-for-byte reproducible, so pushing an unchanged dataset again uploads nothing
and makes no commit (the Hub skips files whose content it already has).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

from .core import _token, log
from .transfer import PushResult, _commit

DATA_DIR = "data"


def _shards(dd, out: Path, max_shard_bytes: int) -> tuple[list[Path], dict]:
    """Write each split as data/<split>-0000i-of-0000n.parquet; returns (files, split sizes for the card)."""
    files, sizes = [], {}
    for split, ds in dd.items():
        n = max(1, math.ceil(ds.data.nbytes / max_shard_bytes))
        for i in range(n):
            path = out / DATA_DIR / f"{split}-{i:05d}-of-{n:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(path))
            files.append(path)
        sizes[split] = (len(ds), ds.data.nbytes)
    return files, sizes


def _card_with_data_metadata(card_text: str, features, sizes: dict, parquet_bytes: int) -> str:
    """`card_text` with the `configs` (data files per split) and `dataset_info` (features, splits) metadata."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    card = DatasetCard(card_text)
    splits = SplitDict()
    for split, (rows, nbytes) in sizes.items():
        splits.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=rows))
    info = DatasetInfo(features=features, splits=splits, download_size=parquet_bytes,
                       dataset_size=sum(b for _, b in sizes.values()))
    DatasetInfosDict({"default": info}).to_dataset_card_data(card.data)
    MetadataConfigs({"default": {"data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*"} for s in sizes]}}
                    ).to_dataset_card_data(card.data)
    return str(card)


def push_dataset(dataset_dir: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None,
                 card_text: str | None = None, extra_files: Sequence[str | os.PathLike] = (),
                 max_shard_size: int = 100 * 2**20, validate=None) -> PushResult:
    """Push a `DatasetDict.save_to_disk` folder to a (private by default) dataset repo in one commit.

    Args:
        dataset_dir: folder written by `DatasetDict.save_to_disk`.
        repo_id: ``namespace/name`` of the dataset repo.
        private: visibility asked for (see `ensure_repo`).
        token: Hub token; default ``HF_TOKEN`` or the stored login token.
        card_text: the dataset card (default: ``<dataset_dir>/README.md`` if present); its data metadata is added.
        extra_files: more files for the commit, uploaded under their path in `dataset_dir` (their name when
            outside it): the manifest, the card's chart, a localiser's files.
        max_shard_size: bytes of Arrow data per Parquet shard.
        validate: called with the final README text before anything is uploaded (card metadata checks).

    Returns:
        `PushResult` (url, commit, changed: False when nothing differed from the repo's head).

    Raises:
        HubError: see `ensure_repo`; also when the push fails.
        FileNotFoundError: `dataset_dir` is not a save_to_disk folder of a DatasetDict.
    """
    import datasets
    from huggingface_hub import CommitOperationAdd

    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{dataset_dir}: not a DatasetDict.save_to_disk folder (no dataset_dict.json)")
    dd = datasets.load_from_disk(str(dataset_dir))
    if card_text is None and (dataset_dir / "README.md").is_file():
        card_text = (dataset_dir / "README.md").read_text(encoding="utf-8")
    tok = _token(token, required=True)
    with tempfile.TemporaryDirectory() as tmp:
        files, sizes = _shards(dd, Path(tmp), max_shard_size)
        readme = _card_with_data_metadata(card_text or "", next(iter(dd.values())).features, sizes,
                                          sum(f.stat().st_size for f in files))
        if validate is not None:
            validate(readme)
        ops = [CommitOperationAdd(str(f.relative_to(tmp)), str(f)) for f in files]
        ops += [CommitOperationAdd("README.md", readme.encode("utf-8"))]
        ops += [CommitOperationAdd(_in_repo(f, dataset_dir), str(f)) for f in extra_files]
        # Shards of an earlier push that this one does not overwrite (another split, fewer shards) are deleted.
        res = _commit(tok, repo_id, "dataset", private, ops, "Upload dataset (hubkit push)", "push to",
                      replace_under=DATA_DIR)
    log.info("pushed %s to %s (%s)", dataset_dir, res.url, res.commit)
    return res


def _in_repo(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return Path(path).name
