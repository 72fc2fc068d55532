"""Trial configs: YAML -> validated, typed objects (DESIGN 3, 5, 10).

Everything here runs before Ray starts, so a typo in a YAML file costs a second, not a
cluster start-up. Every error is a `ConfigError` whose message starts with the dotted path of
the offending field and says what is allowed.

This module imports no ray and no torch: `knife train bad.yaml` must fail fast.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

ALGORITHMS = ("qmix", "vdn")
# YAML 1.1 (PyYAML) reads `5e-4` and `1e5` as strings; numeric fields accept them.
_FLOAT_LITERAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


# ---------------------------------------------------------------------------------------
# Field specs: a field's metadata says its kind and allowed values; one checker serves all.


def _spec(
    default: Any,
    kind: type,
    *,
    check: Callable[[Any], bool] | None = None,
    allowed: str = "",
    choices: tuple[str, ...] = (),
    doc: str = "",
) -> Any:
    return field(
        default=default,
        metadata={"kind": kind, "check": check, "allowed": allowed, "choices": choices, "doc": doc},
    )


def _gt0(v: float) -> bool:
    return v > 0


def _ge0(v: float) -> bool:
    return v >= 0


def _ge1(v: float) -> bool:
    return v >= 1


def _unit_closed(v: float) -> bool:
    return 0 <= v <= 1


def _unit_half_open(v: float) -> bool:
    return 0 < v <= 1


@dataclass(frozen=True)
class TrainingConfig:
    """QMIX/VDN hyperparameters (DESIGN 5); names match QMixConfig.training()."""

    lr: float = _spec(1e-3, float, check=_gt0, allowed="a number > 0")
    optimizer: str = _spec("adam", str, choices=("adam", "rmsprop"))
    gamma: float = _spec(0.99, float, check=_unit_half_open, allowed="a number in (0, 1]")
    td_lambda: float = _spec(0.6, float, check=_unit_closed, allowed="a number in [0, 1]")
    double_q: bool = _spec(True, bool)
    grad_clip: float = _spec(10.0, float, check=_gt0, allowed="a number > 0")
    batch_size: int = _spec(32, int, check=_ge1, allowed="an integer >= 1 (episodes)")
    buffer_size: int = _spec(5000, int, check=_ge1, allowed="an integer >= 1 (episodes)")
    target_update_interval: int = _spec(
        200, int, check=_ge1, allowed="an integer >= 1 (learner updates)"
    )
    epsilon_start: float = _spec(1.0, float, check=_unit_closed, allowed="a number in [0, 1]")
    epsilon_finish: float = _spec(0.05, float, check=_unit_closed, allowed="a number in [0, 1]")
    epsilon_anneal_steps: int = _spec(
        100_000, int, check=_ge1, allowed="an integer >= 1 (env steps)"
    )
    agent_hidden_dim: int = _spec(64, int, check=_ge1, allowed="an integer >= 1")
    mixer_embed_dim: int = _spec(32, int, check=_ge1, allowed="an integer >= 1")
    hypernet_dim: int = _spec(64, int, check=_ge1, allowed="an integer >= 1")
    # Episodes in the buffer before the first update; at least one batch (checked below).
    learning_starts: int = _spec(
        32, int, check=_ge1, allowed="an integer >= 1 (episodes in the buffer)"
    )
    updates_per_episode: float = _spec(1.0, float, check=_gt0, allowed="a number > 0")
    standardise_rewards: bool = _spec(False, bool)
    # Agent input = obs ++ one-hot id (++ one-hot last action: pymarl's default; EPyMARL's
    # QMIX turns it off).
    obs_last_action: bool = _spec(True, bool)
    num_env_runners: int = _spec(0, int, check=_ge0, allowed="an integer >= 0")
    # With num_env_runners >= 1: runners play the next episode while the learner updates.
    sample_while_learning: bool = _spec(True, bool)
    # torch intra-op threads per process (0: torch's default).
    torch_threads: int = _spec(1, int, check=_ge0, allowed="an integer >= 0 (0: torch's default)")
    device: str = _spec("cpu", str, choices=("cpu", "cuda", "auto"))


@dataclass(frozen=True)
class EvaluationConfig:
    """Greedy test episodes and how often they run."""

    episodes: int = _spec(16, int, check=_ge1, allowed="an integer >= 1 (greedy test episodes)")
    interval: int = _spec(
        5000, int, check=_ge1, allowed="an integer >= 1 (env steps between tests)"
    )


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
    "algorithm": "one of " + ", ".join(ALGORITHMS),
    "env": "a registered env name, e.g. matrix:two_step",
    "steps": "an integer > 0 (env steps)",
}
# Mappings whose keys the schema does not fix (checked by the env registry / plasticity).
_FREE_FORM = ("env_config", "plasticity")


# ---------------------------------------------------------------------------------------
# Value checks


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coerce(path: str, value: Any, kind: type, allowed: str, choices: tuple[str, ...]) -> Any:
    """The value as `kind`, or a ConfigError naming `path` and what is allowed."""
    what = allowed or _kind_name(kind, choices)
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
    if isinstance(num, bool) or not isinstance(num, int | float):
        raise ConfigError(f"{path}: must be {what}, got {value!r}")
    if not math.isfinite(num):
        raise ConfigError(f"{path}: must be {what}, got {value!r}")
    if kind is int:
        if isinstance(num, float):
            if not num.is_integer():
                raise ConfigError(f"{path}: must be {what}, got {value!r}")
            num = int(num)
        return num
    return float(num)


def _kind_name(kind: type, choices: tuple[str, ...]) -> str:
    if choices:
        return "one of " + ", ".join(choices)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


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


def _parse_section(cls: type, path: str, raw: Any) -> Any:
    """Build a spec'd dataclass (TrainingConfig, EvaluationConfig) from a mapping."""
    raw = {} if raw is None else require_mapping(path, raw)
    specs = {f.name: f for f in fields(cls)}
    for key in raw:
        if key == "mixer" and cls is TrainingConfig:
            # QMIX vs VDN is the mixer; keep one place to choose it.
            raise ConfigError(
                f"{path}.mixer: the mixer is chosen by the top-level `algorithm`; "
                f"allowed: {', '.join(ALGORITHMS)}"
            )
        if key not in specs:
            raise unknown_key(path, key, specs)
    values = {}
    for name, f in specs.items():
        if name not in raw:
            continue
        meta = f.metadata
        value = _coerce(f"{path}.{name}", raw[name], meta["kind"], meta["allowed"], meta["choices"])
        if meta["check"] is not None and not meta["check"](value):
            raise ConfigError(f"{path}.{name}: must be {meta['allowed']}, got {raw[name]!r}")
        values[name] = value
    return cls(**values)


def _check_training(t: TrainingConfig) -> None:
    # Cross-field rules: a batch must fit in the buffer, and so must the warm-up.
    if t.buffer_size < t.batch_size:
        raise ConfigError(
            f"training.buffer_size: must be >= training.batch_size ({t.batch_size}), "
            f"got {t.buffer_size}"
        )
    if not t.batch_size <= t.learning_starts <= t.buffer_size:
        raise ConfigError(
            f"training.learning_starts: must be in [training.batch_size, training.buffer_size]"
            f" = [{t.batch_size}, {t.buffer_size}] (episodes), got {t.learning_starts}"
        )


def _parse_plasticity(raw: Any, algorithm: str) -> dict[str, Any]:
    """The namespaced plasticity section (knife.plasticity.config), validated; the defaults
    stay in knife.plasticity.config (the one place they are written)."""
    raw = {} if raw is None else dict(require_mapping("plasticity", raw))
    # Imported here: validating a config with a bad algorithm need not import torch.
    from knife.plasticity.config import validate_plasticity

    try:
        method = validate_plasticity(raw, algorithm).method
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

    algorithm = _coerce("algorithm", raw["algorithm"], str, "", ALGORITHMS)
    env = raw["env"]
    if not isinstance(env, str) or not env:
        raise ConfigError(f"env: must be {_REQUIRED['env']}, got {env!r}")
    env_config = dict(require_mapping("env_config", raw.get("env_config") or {}))
    steps = _coerce("steps", raw["steps"], int, _REQUIRED["steps"], ())
    if steps <= 0:
        raise ConfigError(f"steps: must be {_REQUIRED['steps']}, got {raw['steps']!r}")
    from knife.envs.tasks import MAX_STEPS

    if steps > MAX_STEPS:
        raise ConfigError(
            f"steps: at most {MAX_STEPS:.0e} env steps (a larger budget is taken for a typo), "
            f"got {raw['steps']!r}"
        )
    seed = _coerce("seed", raw.get("seed", 0), int, "an integer >= 0", ())
    if seed < 0:
        raise ConfigError(f"seed: must be an integer >= 0, got {raw['seed']!r}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
        raise ConfigError(
            f"name: must be a folder-safe string (letters, digits, '.', '_', '-'), got {name!r}"
        )
    training = _parse_section(TrainingConfig, "training", raw.get("training"))
    _check_training(training)
    evaluation = _parse_section(EvaluationConfig, "evaluation", raw.get("evaluation"))
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
        return tuple(f.name for f in fields(TrainingConfig))
    if key == "evaluation":
        return tuple(f.name for f in fields(EvaluationConfig))
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
