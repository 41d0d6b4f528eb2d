"""The submission file `hubkit predict` writes, resumably and from several processes: the note that says which model
and settings wrote it, the part files of each rank, the merge, and the process group's barriers.

A note beside the output (`.<name>.predict.json`) records the model (its weights' fingerprint), the calibration and
the slice size; a later run with other ones refuses the file, naming both, unless told to overwrite it. Rows are
appended and flushed batch by batch, a study cut short is dropped on resuming, and rank 0 merges the ranks' part
files (`.<name>.part<rank>.csv`) in study order into one file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from hubkit.distributed import World

from .submission import HEADER, read_submission, write_rows

__all__ = ["note_path", "part_path", "parts", "fingerprint", "describe", "written", "truncate_to_complete", "append",
           "group", "barrier", "merge"]


def note_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.predict.json")


def part_path(out: Path, rank: int) -> Path:
    return out.with_name(f".{out.name}.part{rank}.csv")


def parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.part*.csv")) if out.parent.is_dir() else []


def fingerprint(source: str | None) -> str | None:
    """What tells one model's weights from another's: a digest of the adapter's weights (or, for a full model, of
    its config and the sizes of its weight files: hashing gigabytes would cost more than the check is worth)."""
    import hashlib

    from hubkit.run_record import ADAPTER_WEIGHTS

    if not source or not Path(source).is_dir():
        return None
    folder, digest = Path(source), hashlib.sha256()
    adapter = folder / ADAPTER_WEIGHTS
    if adapter.is_file():
        with adapter.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    else:
        config = folder / "config.json"
        digest.update(config.read_bytes() if config.is_file() else b"")
        for f in sorted(folder.glob("*.safetensors")):
            digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def describe(note: dict) -> str:
    cal = "raw" if note.get("calibration") is None else "calibrated"
    return (f"model {note.get('model')} (weights {note.get('fingerprint')}), {cal} probabilities, slices at "
            f"{note.get('slice_size')} px")


def written(out: Path, studies: list[Path], note: dict, w: World, overwrite: bool) -> set[str]:
    """Study ids already written by an earlier run (the output and any part files), after checking that run used
    the same model and settings; with `overwrite`, an earlier run's files are removed instead."""
    files = [f for f in (out, *parts(out)) if f.is_file()]
    if files and overwrite:
        barrier(w)  # every rank has looked before rank 0 removes
        if w.main:
            for f in files:
                f.unlink()
            note_path(out).unlink(missing_ok=True)
        barrier(w)
        files = []
    if not files:
        if w.main:
            note_path(out).parent.mkdir(parents=True, exist_ok=True)
            note_path(out).write_text(json.dumps(note) + "\n")
        return set()
    before = json.loads(note_path(out).read_text()) if note_path(out).is_file() else None
    if before is None:
        raise ValueError(f"{out}: already exists and hubkit predict did not write it (no {note_path(out).name} beside "
                         "it); pass --overwrite to replace it, or choose another --output")
    if any(before.get(k) != note[k] for k in ("fingerprint", "calibration", "slice_size")):
        raise ValueError(f"{out}: written by {describe(before)}; this run is {describe(note)}. Pass --overwrite "
                         "to replace it, or choose another --output")
    names = {s.name for s in studies}
    done: set[str] = set()
    for f in files:
        for sid in read_submission(f):
            if sid not in names:
                raise ValueError(f"{f}: holds study {sid}, which is not in this test folder; delete it or choose "
                                 "another --output")
            done.add(sid)
    return done


def truncate_to_complete(path: Path) -> None:
    """Start `path` with the header, keeping only its complete studies (a study cut short is predicted again)."""
    studies = read_submission(path) if path.is_file() else {}
    with path.open("w", newline="") as fh:
        write_rows(fh, [HEADER, *(r for rows in studies.values() for r in rows)])


def append(path: Path, rows: list[list[str]]) -> None:
    with path.open("a", newline="") as fh:
        write_rows(fh, rows)
        fh.flush()
        os.fsync(fh.fileno())  # an interruption keeps every batch written so far


@contextlib.contextmanager
def group(w: World):
    """The ranks' process group, only for barriers: gloo works for that on CPU and GPU hosts alike."""
    if not w.distributed:
        yield
        return
    import datetime

    import torch.distributed as dist

    ours = not dist.is_initialized()
    if ours:  # on a long test set a rank may wait for the slowest for hours, far past the default timeout
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    try:
        yield
    finally:
        if ours:
            dist.destroy_process_group()


def barrier(w: World) -> None:
    if w.distributed:
        import torch.distributed as dist

        dist.barrier()


def merge(out: Path, studies: list[Path]) -> None:
    """Rank 0: the output rewritten in study order from itself and the part files, atomically; parts removed."""
    found: dict[str, list[list[str]]] = {}
    for f in [out, *parts(out)]:
        if f.is_file():
            for sid, rows in read_submission(f).items():
                found.setdefault(sid, rows)
    missing = [s.name for s in studies if s.name not in found]
    if missing:
        raise RuntimeError(f"{out}: {len(missing)} studies have no rows after all ranks finished, e.g. {missing[0]}")
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="") as fh:
        write_rows(fh, [HEADER, *(r for s in studies for r in found[s.name])])
    os.replace(tmp, out)
    for f in parts(out):
        f.unlink()  # the note stays: it says which model and settings wrote the file
