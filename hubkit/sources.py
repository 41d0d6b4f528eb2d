"""Where a dataset or model comes from: a local folder, or a Hub repo id. The one rule, and the one dataset opener.

Rule (`locate`): a path that exists locally is local, whatever it looks like; anything else must be a Hub repo id
(`namespace/name`, as huggingface_hub validates it), or it is an error naming both readings. Training, evaluation,
the pipeline and the manifest reader all call this, so `runs/ds` means the same thing everywhere.

    from hubkit.sources import locate, open_split
    locate("me/lumbar-ds").repo_id                       # "me/lumbar-ds"
    ds = open_split("runs/ds", "validation")             # save_to_disk folder, Parquet folder or Hub repo
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Location:
    """`source` resolved: exactly one of `path` (local) and `repo_id` (Hub) is set."""

    source: str
    path: Path | None = None
    repo_id: str | None = None

    @property
    def is_save_to_disk(self) -> bool:
        """A folder written by `Dataset(Dict).save_to_disk` (load_dataset cannot read those: it takes their JSON
        state files for data)."""
        return self.path is not None and ((self.path / "dataset_dict.json").is_file()
                                          or (self.path / "state.json").is_file())

    @property
    def arg(self) -> str:
        """What to hand `datasets.load_dataset` / `from_pretrained`."""
        return str(self.path) if self.path is not None else str(self.repo_id)


def is_repo_id(value: str | os.PathLike) -> bool:
    """True if `value` is a valid Hub repo id of the form namespace/name (huggingface_hub's own validation)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(value)
    if text.count("/") != 1 or text.startswith(("~", ".")):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def locate(source: str | os.PathLike, kind: str = "dataset") -> Location:
    """Local path or Hub repo id (see the module docstring).

    Raises:
        FileNotFoundError: neither an existing path nor a valid repo id; the message says both.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return Location(text, path=path)
    if is_repo_id(text):
        return Location(text, repo_id=text)
    raise FileNotFoundError(f"{kind} {text!r}: no such file or folder, and not a Hub repo id (namespace/name)")


def display_name(source: str | os.PathLike) -> str:
    """How a card or a message names a dataset or model to others: a Hub repo id as it is, a local path by its folder
    name only (a path on the author's disk means nothing elsewhere and says what it should not)."""
    text = str(source)
    if is_repo_id(text) and not Path(text).expanduser().exists():
        return text
    return Path(text).expanduser().name or text


def _check_splits(source: str, wanted: Sequence[str], available: Sequence[str]) -> None:
    missing = [s for s in wanted if s not in available]
    if missing:
        raise ValueError(f"dataset {source!r} has no split {', '.join(map(repr, missing))} "
                         f"(found {sorted(available)})")


def open_split(source: str | os.PathLike, split: str, *, streaming: bool = False, shards: int = 8,
               columns: Sequence[str] | None = None):
    """One split of a `save_to_disk` folder, a local Parquet/Arrow folder or a Hub dataset repo.

    Args:
        streaming: an `IterableDataset` (a save_to_disk split is split into `shards` shards for it) instead of a
            map-style `Dataset`.
        columns: read only these columns (Parquet reads just them when streaming).

    Raises:
        FileNotFoundError: see `locate`. ValueError: no such split. HubError: repo not found or not visible.
    """
    import datasets

    loc = locate(source, "dataset")
    if loc.is_save_to_disk:
        obj = datasets.load_from_disk(loc.arg)
        _check_splits(loc.source, [split], _disk_splits(obj))
        ds = obj[split] if isinstance(obj, datasets.DatasetDict) else obj
        if columns is not None:
            ds = ds.select_columns(list(columns))
        return ds.to_iterable_dataset(num_shards=max(1, min(shards, len(ds)))) if streaming else ds
    return _hub_errors_of(loc, lambda: _load_dataset(loc, split, streaming, columns))


def split_names(source: str | os.PathLike) -> list[str]:
    """The splits a dataset has (reads metadata only)."""
    import datasets

    loc = locate(source, "dataset")
    if loc.is_save_to_disk:
        return _disk_splits(datasets.load_from_disk(loc.arg))
    return _hub_errors_of(loc, lambda: list(datasets.get_dataset_split_names(loc.arg)))


def _disk_splits(obj) -> list[str]:
    """Split names of what `load_from_disk` returned: a single saved `Dataset` counts as `train` only, so asking it
    for another split fails instead of silently handing back training rows."""
    import datasets

    return list(obj) if isinstance(obj, datasets.DatasetDict) else ["train"]


def _load_dataset(loc: Location, split: str, streaming: bool, columns: Sequence[str] | None):
    import datasets

    kwargs = {"columns": list(columns)} if columns is not None and streaming else {}
    try:
        ds = datasets.load_dataset(loc.arg, split=split, streaming=streaming, **kwargs)
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"dataset {loc.source!r} has no split {split!r} ({str(e).splitlines()[0][:200]})") from e
        raise
    except TypeError:  # a format whose builder takes no `columns`: read everything, keep the columns
        ds = datasets.load_dataset(loc.arg, split=split, streaming=streaming)
    if columns is not None and not kwargs:
        ds = ds.select_columns(list(columns))
    return ds


def check_readable(source: str | os.PathLike, kind: str = "dataset") -> Location:
    """`locate(source)`, and for a Hub repo one quick read of its metadata: a missing folder, a missing or private
    repo or an unreachable Hub is one line within a second, before any library retries or anything is loaded.

    Raises:
        FileNotFoundError: see `locate`. HubError: the repo cannot be read.
    """
    loc = locate(source, kind)
    if loc.repo_id is not None:
        _read_once(loc.repo_id, "dataset" if kind == "dataset" else "model", os.environ.get("HF_ENDPOINT"))
    return loc


@functools.lru_cache(maxsize=64)
def _read_once(repo_id: str, repo_type: str, endpoint: str | None) -> str:
    """`hub.check_readable`, once per repo, Hub and process (a run opens the same dataset several times)."""
    from hubkit.hub import check_readable as hub_check

    return hub_check(repo_id, repo_type)


def _hub_errors_of(loc: Location, fn):
    """Run `fn` after one quick read of the repo (datasets retries an unreachable Hub for half a minute); a repo
    that is missing or not visible becomes `HubError` (one line) instead of datasets' own error."""
    if loc.repo_id is None:
        return fn()
    from hubkit.hub import hub_errors

    _read_once(loc.repo_id, "dataset", os.environ.get("HF_ENDPOINT"))
    with hub_errors(loc.repo_id, "dataset", "load"):
        return fn()
