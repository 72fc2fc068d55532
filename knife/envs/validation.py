"""Config and action checks shared by the built-in envs.

Every error is a ValueError whose message starts with the offending field
(`env_config.<key>`, `actions`) and says what is allowed, so a user editing a YAML sweep
can fix it without reading code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def check_keys(env_name: str, config: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject keys the env does not know; typos would otherwise be silently ignored."""
    allowed = list(allowed)
    for key in config:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "(none)"
            raise ValueError(f"env_config: unknown key {key!r} for {env_name}; allowed: {listed}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass; `n_agents: true` in a YAML file is a mistake, not 1.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (
        isinstance(value, float | np.floating) and not isinstance(value, bool)
    )


def get_int(
    config: Mapping[str, Any],
    key: str,
    default: int,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
) -> int:
    """An integer config value within [min_value, max_value]."""
    value = config.get(key, default)
    if (
        not _is_int(value)
        or (min_value is not None and value < min_value)
        or (max_value is not None and value > max_value)
    ):
        raise ValueError(
            f"env_config.{key}: must be {_int_range(min_value, max_value)}, got {value!r}"
        )
    return int(value)


def _int_range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer in [{lo}, {hi}]"
    if lo is not None:
        return f"an integer >= {lo}"
    if hi is not None:
        return f"an integer <= {hi}"
    return "an integer"


def get_float(
    config: Mapping[str, Any],
    key: str,
    default: float,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
) -> float:
    """A finite real config value within [min_value, max_value]."""
    value = config.get(key, default)
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and min_value is not None and value < min_value:
        ok = False
    if ok and max_value is not None and value > max_value:
        ok = False
    if not ok:
        bounds = []
        if min_value is not None:
            bounds.append(f">= {min_value}")
        if max_value is not None:
            bounds.append(f"<= {max_value}")
        what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"env_config.{key}: must be {what}, got {value!r}")
    return float(value)


def get_bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"env_config.{key}: must be true or false, got {value!r}")
    return bool(value)


def check_actions(actions: Any, n_agents: int, n_actions: int) -> np.ndarray:
    """The joint action as an int64 array [n_agents], or a ValueError naming `actions`."""
    try:
        arr = np.asarray(actions)
    except (TypeError, ValueError) as err:  # ragged input
        raise ValueError(f"actions: expected {n_agents} integers, got {actions!r}") from err
    if arr.shape != (n_agents,) or arr.dtype.kind not in "iu":
        # Accept integral floats (some samplers emit them) but nothing fractional.
        if arr.shape == (n_agents,) and arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"actions: expected an integer array of shape ({n_agents},), "
                f"got shape {arr.shape} dtype {arr.dtype}"
            )
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0 or arr.max() >= n_actions:
        raise ValueError(
            f"actions: each action must be in [0, {n_actions - 1}], got {arr.tolist()}"
        )
    return arr
