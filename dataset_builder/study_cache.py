"""Per-study cache that makes an interrupted `hubkit build-dataset` resumable.

Every built study is written (PNG bytes + its row fields + its report entry) to
``<output parent>/.<output name>.build/studies/<study_id>-<key>/`` the moment it is done, by writing a temporary
folder and renaming it into place (a kill leaves either the whole entry or none). A re-run with the same inputs
finds the entry and skips reading DICOMs for that study, so only unfinished studies are decoded again; the rows are
byte-identical, hence the same dataset. The work folder is deleted after a successful build.

The key hashes everything the row depends on: the cache format, the picker and slice size, the study's CSV
record (labels, series descriptions, coordinates) and the name, size and mtime of every file in its folder. Any
change there means a fresh decode. Nothing here is unpickled: entries are JSON + PNG.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

FORMAT = 2  # bump when pixels/picking change what a study produces

__all__ = ["study_key", "load_entry", "store_entry"]


def study_key(picker: str, slice_size: int, record: dict, study_dir: Path) -> str:
    """Hex digest of everything a study's row depends on (see the module docstring)."""
    files = []
    if study_dir.is_dir():
        for rel, st in sorted(_walk(study_dir, ()), key=lambda e: e[0]):  # the order of sorted(rglob("*"))
            files.append([os.path.join(*rel), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"format": FORMAT, "picker": str(picker), "slice_size": slice_size, "record": record,
                       "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _walk(directory: Path | str, rel: tuple[str, ...]):
    """(relative path parts, lstat) of everything under `directory`, like `Path.rglob("*")` (no symlinked folders
    followed) but several times faster: os.scandir gives the lstat of each entry without another system call."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        yield rel + (e.name,), st
        if e.is_dir(follow_symlinks=False):
            yield from _walk(e.path, rel + (e.name,))


def _entry_dir(cache_dir: Path, study_id: str, key: str) -> Path:
    return cache_dir / f"{study_id}-{key}"


def load_entry(cache_dir: Path, study_id: str, key: str) -> tuple[dict, list[bytes], dict] | None:
    """(row fields without images, PNG bytes per image, report entry), or None when not cached / unreadable."""
    d = _entry_dir(cache_dir, study_id, key)
    try:
        meta = json.loads((d / "entry.json").read_text())
        pngs = [(d / f"{i}.png").read_bytes() for i in range(meta["n_images"])]
    except (OSError, ValueError, KeyError):
        return None
    return meta["row"], pngs, meta["report"]


def store_entry(cache_dir: Path, study_id: str, key: str, row: dict, pngs: list[bytes], report: dict) -> None:
    """Write one study's entry atomically (temporary folder + rename)."""
    final = _entry_dir(cache_dir, study_id, key)
    if final.is_dir():
        return
    tmp = cache_dir / f".tmp-{study_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, data in enumerate(pngs):
        (tmp / f"{i}.png").write_bytes(data)
    (tmp / "entry.json").write_text(json.dumps({"n_images": len(pngs), "row": row, "report": report}))
    try:
        os.replace(tmp, final)
    except OSError:  # another worker won the race: its entry is identical
        shutil.rmtree(tmp, ignore_errors=True)
