"""Trial configs: YAML -> validated, typed objects (DESIGN 3, 5, 10).

Everything here runs before Ray starts, so a typo in a YAML file costs a second, not a
cluster start-up. Every error is a `ConfigError` whose message starts with the dotted path of
the offending field and says what is allowed.

This module imports no ray and no torch: `knife train bad.yaml` must fail fast.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from knife.fields import (
    ConfigError,
    coerce,
    field_names,
    parse_section,
    require_mapping,
    unknown_key,
)
from knife.policies.registry import ALGORITHMS
from knife.policies.schema import EvaluationConfig, TrainingConfig

__all__ = [
    "ConfigError",
    "EvaluationConfig",
    "TrainingConfig",
    "TrialConfig",
    "load_trial_config",
    "parse_trial_config",
    "require_mapping",
    "unknown_key",
]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TrialConfig:
    """One trial: an algorithm trained on one env for a budget of env steps."""

    algorithm: str
    env: str
    steps: int
    env_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    plasticity: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    name: str | None = None
    # A task sequence (knife.envs.tasks, normalized); env/env_config/steps then describe
    # its first task and its total budget.
    tasks: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready) that parse_trial_config accepts back."""
        out = asdict(self)  # deep-copies env_config and plasticity
        for key in ("name", "tasks"):
            if out[key] is None:
                del out[key]
        return out

    @property
    def sequence_name(self) -> str:
        """The `sequence` tag: the sequence's name, 'custom', or 'none' for one env."""
        if self.tasks is None:
            return "none"
        return self.tasks.get("name") or "custom"


TOP_LEVEL_KEYS = (
    "algorithm",
    "env",
    "env_config",
    "steps",
    "seed",
    "training",
    "evaluation",
    "plasticity",
    "tasks",
    "name",
)
_REQUIRED = {
    "algorithm": "one of " + ", ".join(ALGORITHMS),  # knife.policies.registry
    "env": "a registered env name, e.g. matrix:two_step",
    "steps": "an integer > 0 (env steps)",
}
# Mappings whose keys the schema does not fix (checked by the env registry / plasticity).
_FREE_FORM = ("env_config", "plasticity")


def _parse_training(raw: Any) -> TrainingConfig:
    if isinstance(raw, Mapping) and "mixer" in raw:
        # The algorithm (QMIX, VDN, ...) is chosen in one place.
        raise ConfigError(
            "training.mixer: the mixer is chosen by the top-level `algorithm`; "
            f"allowed: {', '.join(ALGORITHMS)}"
        )
    return parse_section(TrainingConfig, "training", raw)


def _parse_plasticity(raw: Any, algorithm: str) -> dict[str, Any]:
    """The namespaced plasticity section (knife.plasticity.config), validated; the defaults
    stay in knife.plasticity.config (the one place they are written)."""
    raw = {} if raw is None else dict(require_mapping("plasticity", raw))
    # Imported here: validating a config with a bad algorithm need not import torch.
    from knife.plasticity.config import validate_plasticity

    try:
        networks = ALGORITHMS[algorithm].networks
        method = validate_plasticity(raw, algorithm, networks).method
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return {**raw, "method": method}


def _check_env(name: str, env_config: Mapping[str, Any]) -> None:
    # The env registry owns env names and their configs; it raises ValueError messages that
    # already start with `env:` or `env_config...:`. Imported here, not at module level, so
    # that loading a config with a bad algorithm does not even import the envs.
    from knife.envs import validate

    try:
        validate(name, env_config)
    except (ValueError, TypeError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(str(msg)) from exc


def parse_trial_config(mapping: Mapping[str, Any]) -> TrialConfig:
    """Validate a plain mapping (a parsed YAML file) into a TrialConfig."""
    raw = require_mapping("config", mapping)
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise unknown_key("", key, TOP_LEVEL_KEYS)
    raw = dict(raw)
    tasks = None
    if raw.get("tasks") is not None:
        tasks, raw = _parse_tasks(raw)
    for key, what in _REQUIRED.items():
        if raw.get(key) is None:
            raise ConfigError(f"{key}: required; must be {what}")

    algorithm = coerce("algorithm", raw["algorithm"], str, "", tuple(ALGORITHMS))
    env = raw["env"]
    if not isinstance(env, str) or not env:
        raise ConfigError(f"env: must be {_REQUIRED['env']}, got {env!r}")
    env_config = dict(require_mapping("env_config", raw.get("env_config") or {}))
    steps = coerce("steps", raw["steps"], int, _REQUIRED["steps"], ())
    if steps <= 0:
        raise ConfigError(f"steps: must be {_REQUIRED['steps']}, got {raw['steps']!r}")
    from knife.envs.tasks import MAX_STEPS

    if steps > MAX_STEPS:
        raise ConfigError(
            f"steps: at most {MAX_STEPS:.0e} env steps (a larger budget is taken for a typo), "
            f"got {raw['steps']!r}"
        )
    seed = coerce("seed", raw.get("seed", 0), int, "an integer >= 0", ())
    if seed < 0:
        raise ConfigError(f"seed: must be an integer >= 0, got {raw['seed']!r}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
        raise ConfigError(
            f"name: must be a folder-safe string (letters, digits, '.', '_', '-'), got {name!r}"
        )
    training = _parse_training(raw.get("training"))
    evaluation = parse_section(EvaluationConfig, "evaluation", raw.get("evaluation"))
    plasticity = _parse_plasticity(raw.get("plasticity"), algorithm)
    if tasks is None:
        _check_env(env, env_config)  # last: the only check that reaches outside this module
    return TrialConfig(
        algorithm=algorithm,
        env=env,
        steps=steps,
        env_config=copy.deepcopy(env_config),
        seed=seed,
        training=training,
        evaluation=evaluation,
        plasticity=plasticity,
        name=name,
        tasks=tasks,
    )


def _parse_tasks(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate `tasks:` (knife.envs.tasks); fill env/env_config/steps from it."""
    from knife.envs.tasks import TaskSequence

    try:
        sequence = TaskSequence.from_config(raw["tasks"])
    except ValueError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("tasks") else f"tasks: {msg}") from None
    first = sequence.tasks[0]
    derived = {
        "env": first.env,
        "env_config": dict(first.env_config),
        "steps": sequence.total_steps,
    }
    for key, value in derived.items():
        if raw.get(key) is not None and raw[key] != value:
            raise ConfigError(
                f"{key}: with tasks, each task sets its own env, env_config and steps; "
                f"leave {key} out (it is derived: {value!r})"
            )
        raw[key] = value
    return sequence.to_config(), raw


# ---------------------------------------------------------------------------------------
# Files and overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, or a ConfigError saying what is wrong with it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {p}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x});"
            " a config must be a UTF-8 YAML file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: must hold a mapping of keys to values")
    return data


def _section_keys(key: str) -> tuple[str, ...] | None:
    """Allowed keys below a top-level key, or None when the schema does not fix them."""
    if key == "training":
        return field_names(TrainingConfig)
    if key == "evaluation":
        return field_names(EvaluationConfig)
    return None


def parse_override(item: str, example: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", value parsed as YAML); errors name the --set item."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. {example}")
    path, text = item.split("=", 1)
    path = path.strip()
    if not all(path.split(".")):
        raise ConfigError(f"--set {path!r}: empty key in dotted path")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {path}: value {text!r} is not valid YAML: {exc}") from None
    return path, value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `raw` with each `a.b.c=value` applied; values are parsed as YAML."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        path, value = parse_override(item, "training.lr=0.0005")
        _set_path(out, path, path.split("."), value)
    return out


def _set_path(out: dict[str, Any], path: str, parts: list[str], value: Any) -> None:
    top = parts[0]
    if top not in TOP_LEVEL_KEYS:
        raise ConfigError(
            f"--set {path}: no such key {top!r}; allowed: {', '.join(TOP_LEVEL_KEYS)}"
        )
    allowed_below = _section_keys(top)
    node: Any = out
    for depth, key in enumerate(parts[:-1]):
        if key not in node or node[key] is None:
            # Sections may be absent from the file, and so may the nested mappings of a
            # free-form section (its own parser names bad keys); anything else must exist.
            if (depth == 0 and allowed_below is not None) or top in _FREE_FORM:
                node[key] = {}
            else:
                raise ConfigError(f"--set {path}: no such key {'.'.join(parts[: depth + 1])!r}")
        node = node[key]
        if not isinstance(node, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {path}: {prefix!r} is not a mapping")
    last = parts[-1]
    if len(parts) == 2 and allowed_below is not None and last not in allowed_below:
        raise ConfigError(
            f"--set {path}: no such key {last!r} in {top}; allowed: {', '.join(allowed_below)}"
        )
    if len(parts) > 2 and top not in _FREE_FORM and last not in node:
        raise ConfigError(f"--set {path}: no such key {path!r}")
    node[last] = value


def load_trial_config(path: str | Path, overrides: Iterable[str] = ()) -> TrialConfig:
    """Read a trial YAML file, apply `--set` overrides, validate."""
    return parse_trial_config(apply_overrides(load_yaml(path), overrides))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values (MLflow params). Lists become JSON, empty mappings '{}'."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, Mapping):
            out[dotted] = "{}"
        elif isinstance(value, list | tuple):
            out[dotted] = json.dumps(value, default=str)
        else:
            out[dotted] = str(value)
    return out
