"""The data side of `hubkit train`: stream a hubkit dataset as chat rows and size the token budget.

Streams come from `hubkit.sources.open_split(..., streaming=True)`: Hub repos and local Parquet/Arrow folders through
`datasets.load_dataset`, a `save_to_disk` folder as an iterable dataset of a few shards. Nothing here imports
torch/transformers at module level.
"""

from __future__ import annotations

import functools
import hashlib
import io
from typing import Any

from hubkit import chat, schema
from hubkit.config import TrainConfig
from hubkit.model_family import expand_images, resize_like, tokens_per_image

REQUIRED_COLUMNS = ("images", "views", "prompt", "target")
SPLITS = ("train", "validation")  # what hubkit train reads; both must exist


def open_streams(source: str, config: TrainConfig, vision_size: int | None = None,
                 image_processor: Any = None) -> dict[str, Any]:
    """Open `train`/`validation` as `IterableDataset`s of chat rows (oversampled + shuffled train).

    With `vision_size` (the vision tower's input side) and the base's `image_processor`, images are resized to it
    while streaming, with the processor's own filter in their own mode (`model_family.resize_like`): the processor's
    resize then is a no-op and its output is the one it would make from the stored image, but resizing a grayscale
    image before the processor converts it to RGB is cheaper, which matters on CPU. With
    `config.image_cache_mb` > 0 as well, the stream carries the encoded PNGs and each distinct image is decoded and
    resized once, then kept (resized) in memory up to that budget: later epochs reuse it, bit-identical to decoding
    again (BENCHMARKS.md 4a has what it saves on the tiny CPU model).

    Returns {"train", "validation", "train_rows" (after oversampling, or None), "validation_rows", "identity",
    "manifest" (the dataset's `hubkit_dataset.json`, or None), "image_cache" (the `ImageCache`, or None)}.
    """
    from hubkit.manifest import read_manifest
    from hubkit.sources import _check_splits, locate, open_split, split_names

    loc = locate(source, "dataset")
    _check_splits(source, SPLITS, split_names(source))
    factors = config.oversample_factors()
    oversampling = any(f != 1 for f in factors.values())
    raw = {s: open_split(source, s, streaming=True, shards=config.stream_shards) for s in SPLITS}
    # A save_to_disk folder is also opened map-style (memory-mapped, once per split): its row counts, fingerprints
    # and the light column reads below all come from these objects.
    local = {s: open_split(source, s) for s in SPLITS} if loc.is_save_to_disk else None
    if local is not None:
        rows = {s: ds.num_rows for s, ds in local.items()}
    else:
        splits = raw["train"].info.splits or {}
        rows = {s: (splits[s].num_examples if s in splits else None) for s in SPLITS}
    identity = _identity(loc, source, local)
    for split, ds in raw.items():
        _check_columns(source, split, ds, oversampling)
    cache = None
    encoded = {s: _encoded(ds) for s, ds in raw.items()} if vision_size and config.image_cache_mb > 0 else {}
    if encoded and all(ds is not None for ds in encoded.values()):
        raw = encoded
        cache = ImageCache(vision_size, config.image_cache_mb * 2**20, image_processor)
    train_rows = rows["train"]

    def light(cols):  # only these columns (memory-mapped, or Parquet column reads): no image decoding
        if local is not None:
            return local["train"].select_columns(list(cols))
        return open_split(source, "train", streaming=True, columns=cols)

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
    validation, validation_rows = raw["validation"], rows["validation"]
    if config.eval_max_studies:  # a fixed subset: the stream's first N studies, the same at every evaluation
        validation = validation.take(config.eval_max_studies)
        validation_rows = min(validation_rows, config.eval_max_studies) if validation_rows is not None else None
    resize = functools.partial(resize_like, size=vision_size, image_processor=image_processor)
    return {"train": _to_chat(train, raw["train"], resize, augment, cache, mirror),
            "validation": _to_chat(validation, raw["validation"], resize, cache=cache),
            "train_rows": train_rows, "validation_rows": validation_rows, "identity": identity,
            "manifest": read_manifest(source, revision=identity.get("revision")), "image_cache": cache}


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
    `datasets.Image()` and resizing with `resize_like` (the processor's filter) would. Each DataLoader worker process
    holds its own copy.
    """

    def __init__(self, size: int, max_bytes: int, image_processor: Any = None) -> None:
        self.size, self.max_bytes, self.used = size, max_bytes, 0
        self.image_processor = image_processor
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
        im = resize_like(_decode(data, path), self.size, self.image_processor)
        nbytes = im.width * im.height * _BYTES_PER_PIXEL.get(im.mode, len(im.getbands()))
        if self.used + nbytes <= self.max_bytes:
            self.store[key] = im
            self.used += nbytes
        return im


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


def _to_chat(ds, original, resize, augment=None, cache: ImageCache | None = None, mirror=None):
    def row(ex):
        images = cache(ex["images"]) if cache is not None else [resize(im) for im in ex["images"]]
        views, prompt, target = ex["views"], ex["prompt"], ex["target"]
        if mirror is not None:
            images, views, prompt, target = mirror(images, views, prompt, target)
        if augment is not None:
            images = augment(images)
        return chat.build_chat_row(images, views, prompt, target)

    return ds.map(row, remove_columns=_columns(original))


def _identity(loc, source: str, local: dict | None = None) -> dict[str, Any]:
    """What the run read: a save_to_disk folder's split fingerprints (from `local`, its splits opened map-style),
    another local folder's file listing digest, or the Hub commit the stream read."""
    if local is not None:
        return {"kind": "save_to_disk", "path": str(loc.path.resolve()),
                "fingerprint": {s: ds._fingerprint for s, ds in local.items()}}
    if loc.path is not None:
        path = loc.path
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        digest = hashlib.sha256("".join(f"{p.relative_to(path)}:{p.stat().st_size}\n" for p in files).encode())
        return {"kind": "local", "path": str(path.resolve()), "fingerprint": digest.hexdigest()[:16]}
    try:  # cosmetic enrichment: the commit the stream read
        from hubkit.hub import dataset_revision

        return {"kind": "hub", "repo_id": source, "revision": dataset_revision(source)}
    except Exception:  # noqa: BLE001
        return {"kind": "hub", "repo_id": source, "revision": None}


def count_tokens(processor, row: dict) -> int:
    """Tokens of a chat row (prompt + completion) with every image expanded to its soft tokens."""
    text = processor.apply_chat_template(row["prompt"] + row.get("completion", []), tokenize=False)
    return len(processor.tokenizer(expand_images(processor, text), add_special_tokens=False)["input_ids"])


def sequence_budget(processor, config: TrainConfig, views: list[str] | None = None) -> int:
    """max_length for a study with every view of the dataset's slot table (`views`, from its manifest; the whole-slice
    modes' 8 when the dataset has none) plus 16 tokens of slack; a configured smaller budget raises ValueError."""
    from hubkit.slots import VIEWS

    views = list(views or VIEWS)
    row = chat.build_chat_row([None] * len(views), views, schema.build_prompt(views), schema.build_target({}))
    needed = count_tokens(processor, row) + 16
    if config.max_length and config.max_length < needed:
        raise ValueError(
            f"max_length {config.max_length} is too small: a study with {len(views)} images needs {needed} tokens "
            f"({tokens_per_image(processor)} soft tokens + 4 markers per image, plus the text); image tokens are "
            "never truncated"
        )
    return config.max_length or needed
