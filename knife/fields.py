"""Typed config fields: one declaration gives a key its default, its allowed values and its doc.

Every config section of the project (training, evaluation, the plasticity monitor, the
sequence's switch protocol) is a frozen dataclass whose fields are declared with `spec()`.
The dataclass validates itself on construction (`validate_fields` in `__post_init__`), so a
YAML file, `QMixConfig.training(...)` and a sweep grid all get the same check and the same
message, and `knife config` prints the table from the same declarations (`describe`).

Written by hand, not with pydantic: the rules are few (a kind, a range, a choice list), the
messages must start with the dotted YAML path, and this module must import in milliseconds
with no dependency (`knife train bad.yaml` answers before Ray or torch load).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

# YAML 1.1 (PyYAML) reads `5e-4` and `1e5` as strings; numeric fields accept them.
_FLOAT_LITERAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def spec(
    default: Any,
    kind: type,
    doc: str,
    *,
    check: Callable[[Any], bool] | None = None,
    allowed: str = "",
    choices: tuple[str, ...] = (),
) -> Any:
    """A dataclass field with its kind, allowed values (`check` + the words `allowed`, or
    `choices`) and a one-line `doc`."""
    return field(
        default=default,
        metadata={"kind": kind, "check": check, "allowed": allowed, "choices": choices, "doc": doc},
    )


# Range checks used by the schemas; `allowed` says the same in words.
def gt0(v: float) -> bool:
    return v > 0


def ge0(v: float) -> bool:
    return v >= 0


def ge1(v: float) -> bool:
    return v >= 1


def unit_closed(v: float) -> bool:
    return 0 <= v <= 1


def unit_half_open(v: float) -> bool:
    """(0, 1]"""
    return 0 < v <= 1


def unit_open_right(v: float) -> bool:
    """[0, 1)"""
    return 0 <= v < 1


def kind_name(kind: type, choices: tuple[str, ...] = ()) -> str:
    if choices:
        return "one of " + ", ".join(choices)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


def coerce(path: str, value: Any, kind: type, allowed: str = "", choices: tuple = ()) -> Any:
    """`value` as `kind`, or a ConfigError naming `path` and what is allowed."""
    what = allowed or kind_name(kind, choices)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: must be true or false, got {value!r}")
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be {what}, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(f"{path}: unknown {value!r}; allowed: {', '.join(choices)}")
        return value
    # Numbers. bool is an int subclass in Python; `steps: true` is a mistake, not 1.
    num = value
    if isinstance(num, str) and _FLOAT_LITERAL.match(num.strip()):
        num = float(num)
    if isinstance(num, bool) or not isinstance(num, int | float) or not math.isfinite(num):
        raise ConfigError(f"{path}: must be {what}, got {value!r}")
    if kind is int:
        if isinstance(num, float):
            if not num.is_integer():
                raise ConfigError(f"{path}: must be {what}, got {value!r}")
            num = int(num)
        return num
    return float(num)


def validate_fields(instance: Any, section: str) -> None:
    """Coerce and check every spec'd field of a (frozen) dataclass instance in place."""
    for f in fields(instance):
        meta = f.metadata
        if "kind" not in meta:
            continue
        path = f"{section}.{f.name}"
        raw = getattr(instance, f.name)
        value = coerce(path, raw, meta["kind"], meta["allowed"], meta["choices"])
        if meta["check"] is not None and not meta["check"](value):
            raise ConfigError(f"{path}: must be {meta['allowed']}, got {raw!r}")
        object.__setattr__(instance, f.name, value)


def unknown_key(path: str, key: Any, allowed: Iterable[str]) -> ConfigError:
    """The error for an unknown key: names the field, suggests the closest allowed key."""
    allowed = list(allowed)
    hint = difflib.get_close_matches(str(key), allowed, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    where = f"{path}: unknown key" if path else "unknown top-level key"
    return ConfigError(f"{where} {key!r}{did_you_mean}; allowed: {', '.join(allowed)}")


def require_mapping(path: str, value: Any) -> Mapping[str, Any]:
    """`value` if it is a mapping, else an error naming the field."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: must be a mapping of keys to values, got {value!r}")
    return value


def parse_section(cls: type, path: str, raw: Any) -> Any:
    """A spec'd dataclass from a mapping (None: all defaults); unknown keys are named."""
    raw = {} if raw is None else require_mapping(path, raw)
    names = field_names(cls)
    for key in raw:
        if key not in names:
            raise unknown_key(path, key, names)
    return cls(**raw)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class FieldDoc:
    """One row of `knife config`: the dotted key, its default, what is allowed, its doc."""

    key: str
    default: Any
    allowed: str
    doc: str


def describe(cls: type, section: str) -> list[FieldDoc]:
    """The rows of a spec'd dataclass, in declaration order."""
    rows = []
    for f in fields(cls):
        meta = f.metadata
        if "kind" not in meta:
            continue
        default = f.default if f.default is not MISSING else None
        allowed = meta["allowed"] or kind_name(meta["kind"], meta["choices"])
        rows.append(FieldDoc(f"{section}.{f.name}", default, allowed, meta["doc"]))
    return rows
