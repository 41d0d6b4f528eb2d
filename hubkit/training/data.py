"""The data side of `hubkit.train`: stream a hubkit dataset as chat rows and size the token budget.

Streams come from `datasets.load_dataset(..., streaming=True)` (Hub repos, local Parquet/Arrow folders) or, for a
`DatasetDict.save_to_disk` folder, from `load_from_disk(DIR)[split].to_iterable_dataset(num_shards)` (load_dataset
cannot read those folders: it takes their JSON state files for data). Nothing here imports torch/transformers at
module level.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from hubkit import chat, schema
from hubkit.config import TrainConfig

REQUIRED_COLUMNS = ("images", "views", "prompt", "target")


def open_streams(source: str, config: TrainConfig, image_size: int | None = None) -> dict[str, Any]:
    """Open `train`/`validation` as `IterableDataset`s of chat rows (oversampled + shuffled train).

    With `image_size`, images are resized (PIL bilinear, in their own mode) to the processor's input size while
    streaming: the processor's own resize then is a no-op and its output is bit-identical (checked), but resizing
    a grayscale image before the processor converts it to RGB costs 3x less, which matters on CPU. With
    `config.image_cache_mb` > 0 as well, the stream carries the encoded PNGs and each distinct image is decoded and
    resized once, then kept (resized) in memory up to that budget: later epochs reuse it, bit-identical to decoding
    again. On the tiny CPU demo model that was a third of every step (PNG decode + resize of 64 images of 448 px).

    `load_dataset(DIR, streaming=True)` does NOT work on a `save_to_disk` folder (it reads the folder's JSON state
    files as data), so such folders are opened with `load_from_disk(DIR)[split].to_iterable_dataset(num_shards)`;
    Hub repos and local Parquet/Arrow folders stream through `load_dataset(..., streaming=True)`.
    Returns {"train", "validation", "train_rows" (after oversampling, or None), "validation_rows", "identity",
    "image_cache" (the `ImageCache`, or None)}.
    """
    import datasets

    path = Path(source)
    factors = config.oversample_factors()
    oversampling = any(f != 1 for f in factors.values())
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(path))
        _check_splits(source, list(dd))
        raw = {s: dd[s].to_iterable_dataset(num_shards=max(1, min(config.stream_shards, len(dd[s]))))
               for s in ("train", "validation")}
        rows = {s: len(dd[s]) for s in ("train", "validation")}
        light = lambda cols: dd["train"].select_columns(cols)  # noqa: E731  (memory-mapped: no image decoding)
        identity = {"kind": "save_to_disk", "path": str(path.resolve()),
                    "fingerprint": {s: dd[s]._fingerprint for s in ("train", "validation")}}
    else:
        if not path.exists() and source.count("/") != 1:
            raise FileNotFoundError(f"dataset {source!r}: no such folder, and not a Hub repo id (owner/name)")
        dd = datasets.load_dataset(source, streaming=True)
        _check_splits(source, list(dd))
        raw = {s: dd[s] for s in ("train", "validation")}
        splits = dd["train"].info.splits or {}
        rows = {s: (splits[s].num_examples if s in splits else None) for s in ("train", "validation")}
        light = lambda cols: _column_stream(source, cols)  # noqa: E731
        identity = _stream_identity(source, path)
    for split, ds in raw.items():
        _check_columns(source, split, ds, oversampling)
    cache = None
    encoded = {s: _encoded(ds) for s, ds in raw.items()} if image_size and config.image_cache_mb > 0 else {}
    if encoded and all(ds is not None for ds in encoded.values()):
        raw = encoded
        cache = ImageCache(image_size, config.image_cache_mb * 2**20)
    train_rows = rows["train"]
    if oversampling:  # rows after oversampling, from the label columns only
        train_rows = sum(factors.get(_worst(r), 1) for r in light(list(schema.LABEL_COLUMNS)))
    elif train_rows is None:
        train_rows = sum(1 for _ in light(["study_id"]))
    train = raw["train"]
    if oversampling:
        train = train.map(lambda b: _repeat_batch(b, factors), batched=True, batch_size=16)
    train = train.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer)
    augment = mirror = None
    if config.augment != "none":
        from hubkit.training.augment import Augmenter

        augment = Augmenter(config.seed, config.augment)
    if config.lr_flip > 0:
        from hubkit.training.augment import LeftRightMirror

        mirror = LeftRightMirror(config.lr_flip, config.seed)
    return {"train": _to_chat(train, raw["train"], image_size, augment, cache, mirror),
            "validation": _to_chat(raw["validation"], raw["validation"], image_size, cache=cache),
            "train_rows": train_rows, "validation_rows": rows["validation"], "identity": identity,
            "image_cache": cache}


def _column_stream(source: str, columns: list[str]):
    """Stream only `columns` (Parquet reads just those; other formats fall back to dropping the rest)."""
    import datasets

    try:
        return datasets.load_dataset(source, split="train", streaming=True, columns=columns)
    except (TypeError, ValueError):
        return datasets.load_dataset(source, split="train", streaming=True).select_columns(columns)


def _check_splits(source: str, splits: list[str]) -> None:
    missing = [s for s in ("train", "validation") if s not in splits]
    if missing:
        raise ValueError(f"dataset {source!r} has no {missing} split(s) (found {splits}); hubkit train needs train "
                         "and validation")


def _columns(ds) -> list[str]:
    return list(ds.features) if ds.features is not None else list(next(iter(ds)))


def _check_columns(source: str, split: str, ds, need_labels: bool) -> None:
    needed = list(REQUIRED_COLUMNS) + (list(schema.LABEL_COLUMNS) if need_labels else [])
    missing = [c for c in needed if c not in _columns(ds)]
    if missing:
        why = " (needed for oversampling)" if set(missing) <= set(schema.LABEL_COLUMNS) else ""
        raise ValueError(f"dataset {source!r} split {split!r} is missing column(s) {missing}{why}; "
                         "`hubkit build-dataset` writes images, views, prompt, target and the 25 label columns")


def _worst(row: dict) -> int:
    return max((v for c in schema.LABEL_COLUMNS if (v := row.get(c)) is not None), default=-1)


def _repeat_batch(batch: dict[str, list], factors: dict[int, int]) -> dict[str, list]:
    n = len(batch["target"])
    reps = [factors.get(_worst({c: batch[c][i] for c in schema.LABEL_COLUMNS}), 1) for i in range(n)]
    return {k: [v[i] for i in range(n) for _ in range(reps[i])] for k, v in batch.items()}


_BYTES_PER_PIXEL = {"I;16": 2, "I": 4, "F": 4}  # other PIL modes: one byte per band


class ImageCache:
    """Decoded, resized images by the hash of their encoded bytes, up to `max_bytes` of pixels (then no more kept).

    Call it with a row's undecoded `images` ([{"bytes", "path"}, ...]); returns PIL images exactly as decoding with
    `datasets.Image()` and resizing with `resize_to` would. Each DataLoader worker process holds its own copy.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size, self.max_bytes, self.used = size, max_bytes, 0
        self.store: dict[Any, Any] = {}
        self.hits = self.misses = 0

    def __call__(self, values: list[dict]) -> list:
        return [self.image(v) for v in values]

    def image(self, value: dict):
        data, path = value.get("bytes"), value.get("path")
        key = hashlib.blake2b(data, digest_size=16).digest() if data else path
        im = self.store.get(key)
        if im is not None:
            self.hits += 1
            return im
        self.misses += 1
        im = resize_to(_decode(data, path), self.size)
        nbytes = im.width * im.height * _BYTES_PER_PIXEL.get(im.mode, len(im.getbands()))
        if self.used + nbytes <= self.max_bytes:
            self.store[key] = im
            self.used += nbytes
        return im


def resize_to(im, size: int | None):
    """`im` at size x size, PIL bilinear (the Gemma 3 processor's resample) in its own mode; unchanged if already."""
    if not size or im.size == (size, size):
        return im
    return im.resize((size, size), 2)


def _decode(data: bytes | None, path: str | None):
    from PIL import Image

    im = Image.open(io.BytesIO(data) if data else path)
    im.load()  # as datasets.Image.decode_example (no mode conversion: its mode is None)
    return im


def _encoded(ds):
    """`ds` with its `images` column left encoded ({"bytes", "path"}), or None if the column is not a list of Image."""
    import copy

    from datasets import Image

    feat = (ds.features or {}).get("images")
    inner = getattr(feat, "feature", None)
    if not isinstance(inner, Image):
        return None
    if not inner.decode:
        return ds
    plain = copy.deepcopy(feat)
    plain.feature.decode = False
    return ds.cast_column("images", plain)


def _to_chat(ds, original, image_size: int | None, augment=None, cache: ImageCache | None = None, mirror=None):
    def row(ex):
        images = cache(ex["images"]) if cache is not None else [resize_to(im, image_size) for im in ex["images"]]
        views, prompt, target = ex["views"], ex["prompt"], ex["target"]
        if mirror is not None:
            images, views, prompt, target = mirror(images, views, prompt, target)
        if augment is not None:
            images = augment(images)
        return chat.build_chat_row(images, views, prompt, target)

    return ds.map(row, remove_columns=_columns(original))


def _stream_identity(source: str, path: Path) -> dict[str, Any]:
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        digest = hashlib.sha256("".join(f"{p.relative_to(path)}:{p.stat().st_size}\n" for p in files).encode())
        return {"kind": "local", "path": str(path.resolve()), "fingerprint": digest.hexdigest()[:16]}
    try:  # cosmetic enrichment: the commit the stream read
        from huggingface_hub import HfApi

        return {"kind": "hub", "repo_id": source, "revision": HfApi().dataset_info(source).sha}
    except Exception:  # noqa: BLE001
        return {"kind": "hub", "repo_id": source, "revision": None}


def count_tokens(processor, row: dict) -> int:
    """Tokens of a chat row (prompt + completion) with every image expanded to its soft tokens."""
    text = processor.apply_chat_template(row["prompt"] + row.get("completion", []), tokenize=False)
    text = text.replace(processor.tokenizer.boi_token, processor.full_image_sequence)
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def sequence_budget(processor, config: TrainConfig) -> int:
    """max_length for a full 8-view study (+16 tokens slack); a configured smaller budget raises ValueError."""
    views = list(chat.CANONICAL_VIEWS)
    row = chat.build_chat_row([None] * len(views), views, schema.build_prompt(views), schema.build_target({}))
    needed = count_tokens(processor, row) + 16
    if config.max_length and config.max_length < needed:
        raise ValueError(
            f"max_length {config.max_length} is too small: a study with {len(views)} images needs {needed} tokens "
            f"({processor.image_seq_length} soft tokens + 4 markers per image, plus the text); image tokens are "
            "never truncated"
        )
    return config.max_length or needed
