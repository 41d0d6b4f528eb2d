"""Reading and writing the per-stage configs (`hubkit.config`): typed values from YAML or flags, shipped recipes by
name, JSON out.

Every value is coerced to its field's declared type before anything is built or loaded, with one line naming the
field, the value and the type when it cannot be (YAML reads `2e-4` as a string: it becomes the float 0.0002;
`learning_rate: fast` is refused). An unknown key is refused with the nearest valid names.

    from hubkit.config_io import config_from_mapping
    config_from_mapping(TrainConfig, {"learning_rate": "2e-4"}, "my.yaml").learning_rate    # 0.0002
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build `cls` from a mapping: each value coerced to its field's type, unknown keys refused with the nearest
    valid names; ValueError (one line, naming `source`) otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(f"{source}: " + "; ".join(_unknown(str(k), sorted(fields)) for k in unknown))
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce(v, hints[k], k, source) for k, v in data.items()}
    return cls(**kwargs)


def coerce_fields(obj: Any, source: str = "config") -> None:
    """Coerce every field of a frozen dataclass instance to its declared type, in place (its `__post_init__` calls
    this, so configs built in Python, from YAML or by `dataclasses.replace` are typed alike)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, coerce(getattr(obj, f.name), hints[f.name], f.name, source))


def _unknown(key: str, names: list[str]) -> str:
    near = difflib.get_close_matches(key, names, n=2, cutoff=0.6)
    if near:
        return f"unknown key {key!r} (did you mean {' or '.join(map(repr, near))}?)"
    return f"unknown key {key!r} (valid keys: {', '.join(names)})"


def coerce(value: Any, kind: Any, name: str, source: str = "config") -> Any:
    """`value` as the declared type `kind` of field `name` (int, float, bool, str, an Enum, tuple[str, ...], a union
    such as `int | None`); ValueError naming the field, the value and the type when it is not one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, name, source)
            except ValueError:
                continue
        raise ValueError(f"{source}: {name}: {value!r} is not {_type_name(kind)}") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: {name}: {value!r} is not a list (write it as [a, b, ...])")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{name}[{i}]", source) for i, v in enumerate(value))
    if kind is Any:
        return value
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{source}: {name}: {value!r} is not one of {[m.value for m in kind]}") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE | _FALSE:
            return text in _TRUE
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):
                return number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif isinstance(kind, type) and isinstance(value, kind):
        return value
    raise ValueError(f"{source}: {name}: {value!r} is not {_type_name(kind)}")


def _type_name(kind: Any) -> str:
    """How an error names a type: "a float", "an integer or None", "true or false"."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    return {int: "an integer", float: "a number (e.g. 2.0e-4)", bool: "true or false", str: "a string",
            type(None): "None"}.get(kind, getattr(kind, "__name__", str(kind)))


def shipped_configs() -> list[str]:
    """Names of the recipes shipped in `hubkit.configs` (e.g. "tiny-cpu", "seed-a100-40g")."""
    from importlib import resources

    return sorted(f.name[:-5] for f in resources.files("hubkit.configs").iterdir() if f.name.endswith(".yaml"))


def config_file(path_or_name: str | Path) -> Path:
    """A YAML path as given, or a shipped recipe by name ("tiny-cpu" -> hubkit/configs/tiny-cpu.yaml).

    Raises:
        FileNotFoundError: neither a file nor a shipped recipe (the message lists the shipped names).
    """
    from importlib import resources

    p = Path(path_or_name)
    if p.is_file():
        return p
    name = p.name[:-5] if p.name.endswith(".yaml") else p.name
    shipped = resources.files("hubkit.configs").joinpath(f"{name}.yaml")
    if p.parent == Path(".") and shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(f"{p}: config file not found (shipped recipes, usable by name: "
                            f"{', '.join(shipped_configs())})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, or a shipped recipe by name (`config_file`), into a dict (empty file -> {})."""
    import yaml

    p = config_file(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
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


