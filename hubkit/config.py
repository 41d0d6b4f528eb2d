"""Frozen per-stage configs and their (de)serialisation.

Each stage has one frozen dataclass (`BuildConfig` here; `TrainConfig` in `hubkit.train_config`, ...). They are
written as JSON into run/output folders and read back by the card, so every field must be JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build `cls` from a mapping, rejecting unknown keys with a message naming them and the source."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        default = names[k].default
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (empty file -> {})."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: top level must be a mapping of config keys")
    return data


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` (a dataclass or a JSON-ready value) as pretty JSON; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    p.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return p


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """How `hubkit build-dataset` turns an RSNA-layout folder into a dataset."""

    # RSNA-layout folder (train.csv, train_series_descriptions.csv, train_label_coordinates.csv, train_images/).
    data_dir: str = ""
    # `coords` uses train_label_coordinates.csv (as the seed did); `geometry` uses DICOM geometry only, exactly as
    # the inference pipeline does.
    picker: str = "coords"
    # Side of the square 8-bit grayscale images stored in the dataset (the seed used 448).
    image_size: int = 448
    # Share of studies held out for validation, split by study id (deterministic for `seed`).
    validation_fraction: float = 0.1
    seed: int = 0
    # Worker processes for the builder (shards are lists of studies).
    num_proc: int = 1
    # Keep at most this many studies (None = all); handy for quick runs.
    max_studies: int | None = None

    def __post_init__(self) -> None:
        if self.picker not in ("coords", "geometry"):
            raise ValueError(f"picker must be 'coords' or 'geometry', got {self.picker!r}")
        if not 32 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be between 32 and 2048, got {self.image_size}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
