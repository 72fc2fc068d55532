"""Env names -> team env factories.

`make("matrix:penalty", k=-50)` builds an env, `validate(name, config)` checks a name and its
config without building anything heavy (config loaders call it up front so a typo fails
before a Tune sweep starts), `names()` lists what can be built.

Two kinds of entries:
* exact names, e.g. "stag_hunt": factory(**config) -> TeamEnv;
* families, e.g. "smax:" (any name ending in ":" is a family unless family=False is passed):
  factory(suffix, /, **config) -> TeamEnv, so "smax:protoss_5_vs_5" calls the "smax:" factory
  with suffix "protoss_5_vs_5" (make the suffix positional-only so no config key can clash
  with it). Exact names win over families, longer prefixes over shorter.

Optional per entry: `keys` (allowed config keys, checked here with the standard message),
`validator` (config -> None, or (suffix, config) -> None for families, raising ValueError;
without one, validate() builds the env and closes it) and, for families, `members`
(a callable returning the suffixes to list in names()) and `vector` (num_envs, **config) ->
VectorTeamEnv, the env's natively vectorized form that `make_vector` builds; entries without
one get N single envs in a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from knife.envs import matrix, matrix_vector, stag_hunt, stag_hunt_vector
from knife.envs.base import TeamEnv
from knife.envs.validation import check_keys
from knife.envs.vector import SerialVectorEnv, VectorTeamEnv

Factory = Callable[..., TeamEnv]


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    family: bool
    keys: tuple[str, ...] | None
    validator: Callable[..., None] | None
    members: Callable[[], Iterable[str]] | None
    # (num_envs, **config) -> VectorTeamEnv ((suffix, num_envs, **config) for a family);
    # None: make_vector loops over num_envs single envs (SerialVectorEnv).
    vector: Callable[..., VectorTeamEnv] | None = None


_ENTRIES: dict[str, _Entry] = {}


def register(
    name: str,
    factory: Factory,
    *,
    family: bool | None = None,
    keys: Iterable[str] | None = None,
    validator: Callable[..., None] | None = None,
    members: Callable[[], Iterable[str]] | None = None,
    vector: Callable[..., VectorTeamEnv] | None = None,
    replace: bool = False,
) -> None:
    """Add an env (or a family of envs sharing a name prefix) to the registry."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"env: a registered name must be a non-empty string, got {name!r}")
    if name in _ENTRIES and not replace:
        raise ValueError(f"env: {name!r} is already registered (pass replace=True to override)")
    is_family = name.endswith(":") if family is None else family
    _ENTRIES[name] = _Entry(
        factory=factory,
        family=is_family,
        keys=tuple(keys) if keys is not None else None,
        validator=validator,
        members=members,
        vector=vector,
    )


def unregister(name: str) -> None:
    """Remove an entry (tests and plugins that re-register use this)."""
    _ENTRIES.pop(name, None)


def names() -> list[str]:
    """Every buildable name; a family without a member list shows as 'prefix*'."""
    out: list[str] = []
    for name, entry in _ENTRIES.items():
        if not entry.family:
            out.append(name)
        elif entry.members is not None:
            out.extend(name + suffix for suffix in entry.members())
        else:
            out.append(name + "*")
    return sorted(out)


def _lookup(name: Any) -> tuple[_Entry, str | None]:
    """The entry for `name` and, for a family, the suffix."""
    if isinstance(name, str):
        if name in _ENTRIES and not _ENTRIES[name].family:
            return _ENTRIES[name], None
        prefixes = [p for p, e in _ENTRIES.items() if e.family and name.startswith(p)]
        if prefixes:
            prefix = max(prefixes, key=len)
            suffix = name[len(prefix) :]
            if suffix:
                return _ENTRIES[prefix], suffix
    raise ValueError(f"env: unknown env {name!r}; registered: {', '.join(names())}")


def _check(entry: _Entry, name: str, config: Mapping[str, Any]) -> None:
    if not isinstance(config, Mapping):
        raise ValueError(f"env_config: must be a mapping of keys to values, got {config!r}")
    for key in config:
        if not isinstance(key, str):
            raise ValueError(f"env_config: keys must be strings, got {key!r} for {name}")
    if entry.keys is not None:
        check_keys(name, config, entry.keys)


def make(name: str, **config: Any) -> TeamEnv:
    """Build the team env `name` with `config`."""
    entry, suffix = _lookup(name)
    _check(entry, name, config)
    if entry.family:
        return entry.factory(suffix, **config)
    return entry.factory(**config)


def make_vector(name: str, num_envs: int, **config: Any) -> VectorTeamEnv:
    """`num_envs` envs `name` with `config`, stepped as one (knife/envs/vector.py): the
    env's own vectorized form where it has one, else a loop over single envs."""
    entry, suffix = _lookup(name)
    _check(entry, name, config)
    if entry.vector is None:
        return SerialVectorEnv([make(name, **config) for _ in range(num_envs)])
    if entry.family:
        return entry.vector(suffix, num_envs, **config)
    return entry.vector(num_envs, **config)


def validate(name: str, config: Mapping[str, Any] | None = None) -> None:
    """Raise the ValueError make() would raise for this name and config, keeping nothing."""
    config = {} if config is None else config
    entry, suffix = _lookup(name)
    _check(entry, name, config)
    if entry.validator is None:
        make(name, **config).close()
    elif entry.family:
        entry.validator(suffix, config)
    else:
        entry.validator(config)


def _register_builtins() -> None:
    def one_step(game: str) -> tuple[Factory, Callable[..., None], Callable[..., VectorTeamEnv]]:
        # A closure, not a default argument, so a config key can never shadow the game name.
        def factory(**cfg: Any) -> TeamEnv:
            return matrix.make_one_step(game, cfg)

        def validator(cfg: Mapping[str, Any]) -> None:
            matrix.validate_one_step(game, cfg)

        def vector(num_envs: int, **cfg: Any) -> VectorTeamEnv:
            return matrix_vector.make_one_step_vector(game, num_envs, cfg)

        return factory, validator, vector

    for game in matrix.ONE_STEP_GAMES:
        factory, validator, vector = one_step(game)
        register(game, factory, validator=validator, vector=vector)
    register(
        "matrix:two_step",
        lambda **cfg: matrix.make_two_step(cfg),
        validator=matrix.validate_two_step,
        vector=lambda num_envs, **cfg: matrix_vector.make_two_step_vector(num_envs, cfg),
    )
    register(
        "stag_hunt",
        lambda **cfg: stag_hunt.make_stag_hunt(cfg),
        validator=stag_hunt.validate_config,
        vector=lambda num_envs, **cfg: stag_hunt_vector.make_stag_hunt_vector(num_envs, cfg),
    )


_register_builtins()
