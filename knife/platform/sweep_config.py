"""Sweep files (DESIGN 10, issue 5): YAML -> a validated `SweepConfig` -> expanded trials.

A sweep file holds the base trial config (the `knife train` format), the grid, the Tune
options and the MLflow experiment. The grid axes are

* `methods`   -> `plasticity.method`
* `seeds`     -> `seed`
* `sequences` -> `tasks` (a name -> a list of tasks, or a `tasks:` mapping with options)
* `params`    -> any other config key by dotted path, as `{grid: [...]}` or `{choice: [...]}`
* `exclude`   -> grid points to leave out: a list of {axis or dotted key: value} mappings, e.g.
                 `- {algorithm: vdn, methods: reborn}` (ReBorn acts on the QMIX mixer only)

and a `{grid: [...]}` / `{choice: [...]}` mapping written anywhere inside `base` is an axis
too. `grid` values are crossed (every combination is a trial); `choice` values are drawn by
Tune, once per trial and per `tune.num_samples` repeat.

Everything here runs before Ray starts and imports neither ray nor mlflow: a typo in a sweep
file costs a second. Errors are `ConfigError`s whose message starts with the dotted path of
the offending field in the sweep file (`grid.methods[2]: ...`, `base.training.lr: ...`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knife.platform.config import (
    ConfigError,
    load_yaml,
    parse_override,
    parse_trial_config,
    require_mapping,
    unknown_key,
)
from knife.policies import metric_keys as mk

SWEEP_KEYS = ("name", "description", "base", "grid", "tune", "mlflow", "plugins")
GRID_KEYS = ("methods", "seeds", "sequences", "params", "exclude", "scratch", "branch")
# grid.branch: `none` trains every trial from scratch; `prefix` trains each seed's task 0
# once and branches every method from its end; `every_switch` branches every method from
# `none`'s checkpoint at each switch, for that one task (docs/design.md 9, paired branches).
BRANCH_MODES = ("none", "prefix", "every_switch")
# The stages a sweep runs, in order: one Tune run each (knife.platform.sweep). Under
# every_switch the branches of switch k are stage `switch<k>`, after `none`'s branch of k-1.
MAIN, PREFIX, BRANCH, SWITCH = "main", "prefix", "branch", "switch"
# every_switch: the task k a branch trains (it restores `none` at the end of task k-1 and
# stops at the end of task k); the report takes task k of each method from that run.
BRANCH_TASK_TAG = "knife.branch_task"
# Run tags that mark a trial as the scratch reference of one task (issue 16): the first
# task index k >= 1 it serves, and every index it serves (comma-separated, ascending; more
# than one where the sequence visits the same task again, e.g. `tasks.repeat`).
ROLE_TAG, SCRATCH_TASK_TAG = "knife.role", "knife.scratch_task"
SCRATCH_TASKS_TAG = "knife.scratch_tasks"
# The grid point of a trial but its method, seed, sequence and algorithm (e.g. the labels of
# its params axes): runs that differ only in method and seed are compared with each other.
POINT_TAG = "knife.point"
UNPAIRED_AXES = ("plasticity.method", "seed", "tasks", "algorithm")
# The switch protocol under which a fresh network on task k alone has task k's schedule.
SCRATCH_PROTOCOL = {"reanneal_epsilon": True, "buffer_on_switch": "flush"}
TUNE_KEYS = (
    "metric",
    "mode",
    "scheduler",
    "max_concurrent_trials",
    "resources_per_trial",
    "num_samples",
    "max_failures",
    "checkpoint_every",
    "keep_checkpoints",
    "reuse_actors",
    "stop",
    "preempt_grace_s",
)
MLFLOW_KEYS = ("experiment",)
RESOURCE_KEYS = ("cpu", "gpu")
SCHEDULERS = ("fifo", "asha")
MODES = ("max", "min")
AXIS_KINDS = ("grid", "choice")
# Axis -> the trial-config key it sets.
AXIS_TARGET = {"methods": "plasticity.method", "seeds": "seed", "sequences": "tasks"}
METHOD_KEY = AXIS_TARGET["methods"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


@dataclass(frozen=True)
class TuneOptions:
    """How Tune runs the grid."""

    metric: str = mk.TEST_RETURN
    mode: str = "max"
    scheduler: str = "fifo"
    # None: as many trials at once as the cluster's resources allow.
    max_concurrent_trials: int | None = None
    # None: what the trial's algorithm asks for (1 CPU without remote EnvRunners/Learners).
    resources_per_trial: dict[str, float] | None = None
    num_samples: int = 1
    max_failures: int = 2
    checkpoint_every: int = 10  # training iterations; also at task switches and the end
    keep_checkpoints: int = 2
    # Run the next trial in the finished trial's worker process: saves process start-up and
    # the imports of torch and RLlib (seconds per trial) when trials are short.
    reuse_actors: bool = True
    # Stop a trial early when a reported value reaches a threshold (Tune's `stop` semantics),
    # checked inside the trial so its MLflow run still ends FINISHED.
    stop: dict[str, float] = field(default_factory=dict)
    # Seconds the driver waits, after SIGTERM, for its running trials to stop after their
    # iteration with a checkpoint before it stops Tune: 20 leaves 10 s of a cloud provider's
    # 30 s preemption notice for Tune's own state save and the exit.
    preempt_grace_s: float = 20.0


@dataclass(frozen=True)
class Axis:
    """One grid axis: the trial-config key it sets, its values, and their labels."""

    name: str  # where it came from in the sweep file, e.g. "grid.methods"
    target: str  # dotted trial-config key
    kind: str  # grid | choice
    values: tuple[Any, ...]
    labels: tuple[str, ...]

    def source(self, i: int) -> str:
        """The sweep-file field of value i (sequences by name, others by index)."""
        if self.target == "tasks" and self.name == "grid.sequences":
            return f"grid.sequences.{self.labels[i]}"
        return f"{self.name}[{i}]"


@dataclass(frozen=True)
class TrialSpec:
    """One expanded grid point: a label and the trial config before `choice` sampling."""

    index: int
    label: str
    overrides: dict[str, Any]  # dotted key -> value (grid axes only)
    sources: dict[str, str]  # dotted key -> sweep-file field it came from
    config: dict[str, Any]  # full trial config (choice keys hold their first option)
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags (a scratch role)
    stage: str = MAIN  # PREFIX trials run before the BRANCH trials that continue them
    branch_of: str | None = None  # a branch: the label of the prefix trial it continues
    # A later stage branches from this trial's end state (a prefix; under every_switch,
    # none's branch of every switch but the last): it tags that state's digests.
    branch_source: bool = False


@dataclass(frozen=True)
class SweepConfig:
    name: str
    base: dict[str, Any]
    axes: tuple[Axis, ...]
    tune: TuneOptions
    experiment: str
    plugins: tuple[str, ...] = ()
    description: str = ""
    source: str | None = None  # the file it was read from
    # Grid points left out: each a {dotted target: value label} mapping; a point matching
    # every entry of one of them is not a trial.
    exclude: tuple[dict[str, str], ...] = ()
    # grid.scratch: one scratch reference per seed (and other grid point) and task k >= 1.
    scratch: bool = False
    branch: str = "none"  # grid.branch: one of BRANCH_MODES

    def stages(self) -> tuple[str, ...]:
        if self.branch == "prefix":
            return (PREFIX, BRANCH)
        if self.branch == "every_switch":
            last = max(int(t.stage[len(SWITCH) :]) for t in self.trials() if t.stage != PREFIX)
            return (PREFIX, *(f"{SWITCH}{k}" for k in range(1, last + 1)))
        return (MAIN,)

    @property
    def grid_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.kind == "grid")

    @property
    def choice_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.kind == "choice")

    def trials(self) -> list[TrialSpec]:
        """Every grid point, in a stable order (methods vary slowest, then seeds, ...)."""
        grid = self.grid_axes
        out = []
        # The first trial of each grid point but the method, with that point's labels.
        points: dict[tuple[str, ...], tuple[TrialSpec, list[str]]] = {}
        combos = itertools.product(*(range(len(a.values)) for a in grid)) if grid else [()]
        for combo in combos:
            chosen = {a.target: a.labels[i] for a, i in zip(grid, combo, strict=True)}
            if any(all(chosen[k] == v for k, v in ex.items()) for ex in self.exclude):
                continue
            overrides: dict[str, Any] = {}
            sources: dict[str, str] = {}
            parts = []
            for axis, i in zip(grid, combo, strict=True):
                overrides[axis.target] = copy.deepcopy(axis.values[i])
                sources[axis.target] = axis.source(i)
                parts.append(axis.labels[i])
            for axis in self.choice_axes:
                overrides.setdefault(axis.target, copy.deepcopy(axis.values[0]))
                sources.setdefault(axis.target, axis.source(0))
            config = build_trial_config(self.base, overrides)
            label = "-".join(parts) or self.name
            point = ",".join(  # e.g. "updates_per_episode=4": the report's group names
                f"{axis.target.rsplit('.', 1)[-1]}={axis.labels[i]}"
                for axis, i in zip(grid, combo, strict=True)
                if axis.target not in UNPAIRED_AXES
            )
            tags = {POINT_TAG: point} if point else {}
            out.append(TrialSpec(len(out), label, overrides, sources, config, tags))
            rest = [
                part for axis, part in zip(grid, parts, strict=True) if axis.target != METHOD_KEY
            ]
            points.setdefault(tuple(rest), (out[-1], rest))
        if self.branch != "none":
            out = self._branched(out, points.values())
        if self.scratch:
            stage = MAIN if self.branch == "none" else PREFIX
            out += self._scratch_trials(points.values(), first_index=len(out), stage=stage)
        return out

    def _branched(
        self, trials: list[TrialSpec], points: Iterable[tuple[TrialSpec, list[str]]]
    ) -> list[TrialSpec]:
        """grid.branch: per grid point but the method, one prefix trial (method none, task
        0 of the sequence alone, to its end); then under `prefix` every method's trial as a
        branch that continues from the prefix's final checkpoint to the sequence's end, and
        under `every_switch` one branch per method and task k >= 1 that continues from
        `none`'s state at the end of task k-1 (the prefix, or none's branch of k-1) and
        trains task k alone (the sequence cut after task k)."""
        from knife.envs.tasks import TaskSequence

        prefixes: dict[tuple[tuple[str, Any], ...], TrialSpec] = {}
        out: list[TrialSpec] = []
        for spec, parts in points:
            rest = _without_method(spec.overrides)
            sources = {k: v for k, v in spec.sources.items() if k != METHOD_KEY}
            sequence = TaskSequence.from_config(spec.config["tasks"]).to_config()
            if len(sequence["tasks"]) < 2:
                raise ConfigError(
                    f"grid.branch: {self.branch} needs sequences of 2 tasks or more; "
                    f"{spec.sources.get('tasks', 'base.tasks')} has 1"
                )
            first = {**sequence, "tasks": [sequence["tasks"][0]]}
            overrides = {**rest, METHOD_KEY: "none", "tasks": first}
            config = build_trial_config(self.base, overrides)
            label = "-".join(["prefix", *parts])
            tags = {**spec.tags, ROLE_TAG: PREFIX, "method": PREFIX}
            prefix = TrialSpec(
                len(out),
                label,
                overrides,
                {**sources, "tasks": "grid.branch"},
                config,
                tags,
                PREFIX,
                branch_source=True,
            )
            prefixes[_point_key(rest)] = prefix
            out.append(prefix)
        if self.branch == "every_switch":
            return out + self._switch_branches(trials, prefixes, first_index=len(out))
        for spec in trials:
            rest = _without_method(spec.overrides)
            prefix = prefixes[_point_key(rest)]
            out.append(
                dataclasses.replace(spec, index=len(out), stage=BRANCH, branch_of=prefix.label)
            )
        return out

    def _switch_branches(
        self, trials: list[TrialSpec], prefixes: Mapping[Any, TrialSpec], first_index: int
    ) -> list[TrialSpec]:
        """grid.branch every_switch: for each method's trial and task k >= 1, a branch of
        `none`'s state at the end of task k-1 that trains task k and stops (its label ends
        in `-sw<k>`); `none`'s own branch of k is what the branches of k+1 continue."""
        from knife.envs.tasks import TaskSequence

        nones = {
            _point_key(_without_method(s.overrides)): s.label
            for s in trials
            if s.overrides.get(METHOD_KEY) == "none"
        }
        out: list[TrialSpec] = []
        for spec in trials:
            key = _point_key(_without_method(spec.overrides))
            if key not in nones:
                raise ConfigError(
                    "grid.branch: every_switch branches every method from none's checkpoint "
                    "at each switch; add none to grid.methods"
                )
            sequence = TaskSequence.from_config(spec.config["tasks"]).to_config()
            for k in range(1, len(sequence["tasks"])):
                cut = {**sequence, "tasks": sequence["tasks"][: k + 1]}
                overrides = {**spec.overrides, "tasks": cut}
                source = prefixes[key].label if k == 1 else f"{nones[key]}-sw{k - 1}"
                out.append(
                    TrialSpec(
                        first_index + len(out),
                        f"{spec.label}-sw{k}",
                        overrides,
                        spec.sources,
                        build_trial_config(self.base, overrides),
                        {**spec.tags, BRANCH_TASK_TAG: str(k)},
                        f"{SWITCH}{k}",
                        source,
                        branch_source=spec.label == nones[key] and k < len(sequence["tasks"]) - 1,
                    )
                )
        return out

    def _scratch_trials(
        self, points: Iterable[tuple[TrialSpec, list[str]]], first_index: int, stage: str = MAIN
    ) -> list[TrialSpec]:
        """For each grid point but the method, and each task k >= 1 of its sequence: a
        fresh network (method none) trained on task k alone, with the sequence's budget,
        seed, training and test settings for that task (docs/design.md 9). Shared by every
        method of the point: made once per point. A task k >= 1 that the sequence plays
        again (same env, env_config and steps) shares its first reference, whose tags list
        every index it serves, instead of training the same run twice."""
        from knife.envs.tasks import TaskSequence

        out: list[TrialSpec] = []
        for spec, parts in points:
            rest = _without_method(spec.overrides)
            sources = {k: v for k, v in spec.sources.items() if k != METHOD_KEY}
            sequence = TaskSequence.from_config(spec.config["tasks"]).to_config()
            for k, served in _distinct_tasks(sequence["tasks"]):
                alone = {**sequence, "tasks": [sequence["tasks"][k]]}
                overrides = {**rest, METHOD_KEY: "none", "tasks": alone}
                config = build_trial_config(self.base, overrides)
                label = "-".join(["scratch", *parts, f"t{k}"])
                # MLflow's `method` tag reads "scratch", so the UI's grouping by method and
                # the saved views keep the references apart from `none` (they train `none`).
                tags = {
                    **spec.tags,
                    ROLE_TAG: "scratch",
                    SCRATCH_TASK_TAG: str(k),
                    SCRATCH_TASKS_TAG: ",".join(str(i) for i in served),
                    "method": "scratch",
                }
                index = first_index + len(out)
                out.append(
                    TrialSpec(
                        index,
                        label,
                        overrides,
                        {**sources, "tasks": "grid.scratch"},
                        config,
                        tags,
                        stage,
                    )
                )
        return out

    def num_trials(self) -> int:
        return len(self.trials()) * self.tune.num_samples


# ---------------------------------------------------------------------------------------
# Small checks


def _check_keys(path: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            raise unknown_key(path, key, allowed)


def _int(path: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: must be an integer >= {minimum}, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{path}: must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{path}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(path: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads 1e5 as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{path}: must be a number >= {minimum:g}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{path}: must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _choice(path: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: unknown {value!r}; allowed: {', '.join(choices)}")
    return value


def _list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: must be a non-empty list, got {value!r}")
    return value


def _label(value: Any) -> str:
    """A short, folder-safe text for a value (trial names)."""
    text = value if isinstance(value, str) else repr(value)
    return _LABEL_UNSAFE.sub("_", text).strip("_")[:40] or "x"


# ---------------------------------------------------------------------------------------
# Dotted keys


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """config[a][b][c] = value for 'a.b.c', creating mappings on the way."""
    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {part!r} is not a mapping in the base config")
        node = nxt
    node[parts[-1]] = value


def build_trial_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of base with each dotted override applied."""
    out = copy.deepcopy(dict(base))
    for dotted, value in overrides.items():
        set_dotted(out, dotted, copy.deepcopy(value))
    return out


def _is_axis(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and next(iter(value)) in AXIS_KINDS
        and isinstance(next(iter(value.values())), list)
    )


def _inline_axes(node: Any, prefix: str, out: list[tuple[str, Mapping[str, Any]]]) -> Any:
    """Collect `{grid: [...]}` / `{choice: [...]}` values inside base; return base without."""
    if not isinstance(node, Mapping):
        return node
    clean = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if _is_axis(value):
            out.append((dotted, value))
        else:
            clean[key] = _inline_axes(value, dotted, out)
    return clean


def _distinct_tasks(tasks: list[dict[str, Any]]) -> list[tuple[int, list[int]]]:
    """[(k, every index k' >= 1 playing the same task as k), ...] for the tasks k >= 1 of a
    normalized sequence, k the first of its group. Tasks are the same when env, env_config
    and steps are (the name is only a label, e.g. a later visit's `#2`)."""

    def trained_on(i: int) -> tuple[Any, ...]:
        return tasks[i]["env"], tasks[i]["env_config"], tasks[i]["steps"]

    groups: list[tuple[int, list[int]]] = []
    for i in range(1, len(tasks)):
        group = next((g for g in groups if trained_on(g[0]) == trained_on(i)), None)
        if group is None:
            groups.append((i, [i]))
        else:
            group[1].append(i)
    return groups


# ---------------------------------------------------------------------------------------
# Parsing


def _parse_axis(path: str, target: str, raw: Any) -> Axis:
    """`{grid: [...]}` or `{choice: [...]}` (a bare list is a grid)."""
    if isinstance(raw, list):
        raw = {"grid": raw}
    raw = require_mapping(path, raw)
    if len(raw) != 1 or next(iter(raw)) not in AXIS_KINDS:
        raise ConfigError(
            f"{path}: must be {{grid: [values]}} or {{choice: [values]}}, got {dict(raw)!r}"
        )
    kind, values = next(iter(raw.items()))
    values = _list(f"{path}.{kind}", values)
    return Axis(path, target, kind, tuple(values), tuple(_label(v) for v in values))


def _parse_sequences(raw: Any) -> Axis:
    raw = require_mapping("grid.sequences", raw)
    if not raw:
        raise ConfigError("grid.sequences: must name at least one sequence")
    values = []
    for name, seq in raw.items():
        path = f"grid.sequences.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{path}: a sequence name must be folder-safe, got {name!r}")
        if isinstance(seq, list):
            values.append({"name": name, "tasks": copy.deepcopy(seq)})
        elif isinstance(seq, Mapping):
            value = copy.deepcopy(dict(seq))
            value.setdefault("name", name)
            values.append(value)
        else:
            raise ConfigError(
                f"{path}: must be a list of tasks ({{env, env_config, steps}}) or a `tasks:` "
                f"mapping (tasks and sequence options, or a preset), got {seq!r}"
            )
    return Axis("grid.sequences", "tasks", "grid", tuple(values), tuple(raw))


def _parse_grid(raw: Any) -> list[Axis]:
    raw = {} if raw is None else require_mapping("grid", raw)
    _check_keys("grid", raw, GRID_KEYS)
    axes = []
    if raw.get("methods") is not None:
        methods = _list("grid.methods", raw["methods"])
        for i, m in enumerate(methods):
            if not isinstance(m, str):
                raise ConfigError(f"grid.methods[{i}]: must be a method name, got {m!r}")
        axes.append(
            Axis("grid.methods", "plasticity.method", "grid", tuple(methods), tuple(methods))
        )
    if raw.get("seeds") is not None:
        seeds = _list("grid.seeds", raw["seeds"])
        for i, s in enumerate(seeds):
            _int(f"grid.seeds[{i}]", s, 0)
        values = tuple(int(s) for s in seeds)
        axes.append(Axis("grid.seeds", "seed", "grid", values, tuple(f"s{s}" for s in values)))
    if raw.get("sequences") is not None:
        axes.append(_parse_sequences(raw["sequences"]))
    params = {} if raw.get("params") is None else require_mapping("grid.params", raw["params"])
    for key, value in params.items():
        if not isinstance(key, str) or not all(key.split(".")):
            raise ConfigError(f"grid.params: keys are dotted config keys, got {key!r}")
        if key in AXIS_TARGET.values():
            axis = next(a for a, t in AXIS_TARGET.items() if t == key)
            raise ConfigError(f"grid.params.{key}: use grid.{axis} for this key")
        axes.append(_parse_axis(f"grid.params.{key}", key, value))
    return axes


def _parse_exclude(raw: Any, axes: list[Axis]) -> tuple[dict[str, str], ...]:
    """`grid.exclude` -> {dotted target: value label} mappings, checked against the axes."""
    by_name = {a.name.removeprefix("grid.").removeprefix("params."): a for a in axes}
    by_name.update({a.target: a for a in axes if a.kind == "grid"})
    out = []
    for i, item in enumerate(_list("grid.exclude", raw)):
        where = f"grid.exclude[{i}]"
        item = require_mapping(where, item)
        if not item:
            raise ConfigError(f"{where}: empty; name at least one axis and its value")
        entry = {}
        for key, value in item.items():
            axis = by_name.get(key)
            if axis is None or axis.kind != "grid":
                allowed = sorted(k for k, a in by_name.items() if a.kind == "grid")
                raise unknown_key(where, key, allowed)
            pairs = zip(axis.values, axis.labels, strict=True)
            label = next((lab for v, lab in pairs if value in (v, lab)), None)
            if label is None:
                raise ConfigError(
                    f"{where}.{key}: {value!r} is not on that axis; allowed: "
                    f"{', '.join(axis.labels)}"
                )
            entry[axis.target] = label
        out.append(entry)
    return tuple(out)


def _parse_tune(raw: Any) -> TuneOptions:
    raw = {} if raw is None else require_mapping("tune", raw)
    _check_keys("tune", raw, TUNE_KEYS)
    values: dict[str, Any] = {}
    if "metric" in raw:
        if not isinstance(raw["metric"], str) or not raw["metric"]:
            raise ConfigError(f"tune.metric: must be a reported metric name, got {raw['metric']!r}")
        renamed = mk.RENAMED.get(raw["metric"])
        if renamed is not None:  # a sweep file written before the metric sections
            raise ConfigError(f"tune.metric: {raw['metric']!r} is now {renamed!r}")
        values["metric"] = raw["metric"]
    if "mode" in raw:
        values["mode"] = _choice("tune.mode", raw["mode"], MODES)
    if "scheduler" in raw:
        values["scheduler"] = _choice("tune.scheduler", raw["scheduler"], SCHEDULERS)
    if raw.get("max_concurrent_trials") is not None:
        values["max_concurrent_trials"] = _int(
            "tune.max_concurrent_trials", raw["max_concurrent_trials"], 1
        )
    if raw.get("resources_per_trial") is not None:
        res = require_mapping("tune.resources_per_trial", raw["resources_per_trial"])
        _check_keys("tune.resources_per_trial", res, RESOURCE_KEYS)
        parsed = {k: _number(f"tune.resources_per_trial.{k}", v) for k, v in res.items()}
        if parsed.get("cpu", 1.0) <= 0:
            raise ConfigError("tune.resources_per_trial.cpu: must be a number > 0")
        values["resources_per_trial"] = parsed
    for key, minimum in (
        ("num_samples", 1),
        ("max_failures", 0),
        ("checkpoint_every", 1),
        ("keep_checkpoints", 1),
    ):
        if key in raw:
            values[key] = _int(f"tune.{key}", raw[key], minimum)
    if "reuse_actors" in raw:
        if not isinstance(raw["reuse_actors"], bool):
            raise ConfigError(
                f"tune.reuse_actors: must be true or false, got {raw['reuse_actors']!r}"
            )
        values["reuse_actors"] = raw["reuse_actors"]
    if "preempt_grace_s" in raw:
        values["preempt_grace_s"] = _number("tune.preempt_grace_s", raw["preempt_grace_s"], 1.0)
    if raw.get("stop") is not None:
        stop = require_mapping("tune.stop", raw["stop"])
        values["stop"] = {str(k): _number(f"tune.stop.{k}", v, -math.inf) for k, v in stop.items()}
    return TuneOptions(**values)


def _parse_plugins(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"plugins: must be a list of module names, got {raw!r}")
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][\w.]*$", name):
            raise ConfigError(f"plugins[{i}]: must be a module name, got {name!r}")
    return tuple(raw)


def import_plugins(plugins: Iterable[str]) -> None:
    """Import each plugin module (e.g. one that registers envs with knife.envs.register)."""
    for i, name in enumerate(plugins):
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure: say which plugin and why
            raise ConfigError(
                f"plugins[{i}]: cannot import {name!r}: {type(exc).__name__}: {exc} "
                "(is its folder on PYTHONPATH?)"
            ) from None


def parse_sweep_config(raw: Mapping[str, Any], source: str | None = None) -> SweepConfig:
    """Validate a parsed sweep file, including every trial config it expands to."""
    raw = require_mapping("sweep", raw)
    _check_keys("", raw, SWEEP_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"name: required; a folder-safe sweep name (letters, digits, '.', '_', '-'), "
            f"got {name!r}"
        )
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"description: must be a string, got {description!r}")
    plugins = _parse_plugins(raw.get("plugins"))
    import_plugins(plugins)  # custom envs must be registered before trials are validated

    base_raw = dict(require_mapping("base", raw.get("base") or {}))
    inline: list[tuple[str, Mapping[str, Any]]] = []
    base = _inline_axes(base_raw, "", inline)
    axes = _parse_grid(raw.get("grid"))
    targets = {a.target: a.name for a in axes}
    for dotted, spec in inline:
        if dotted in targets:
            raise ConfigError(f"base.{dotted}: also set by {targets[dotted]}; keep one")
        axes.append(_parse_axis(f"base.{dotted}", dotted, spec))
        targets[dotted] = f"base.{dotted}"
    for axis in axes:
        if axis.target == "tasks" and ("env" in base or "steps" in base or "tasks" in base):
            raise ConfigError(
                "base: grid.sequences sets `tasks`; leave env, env_config, steps and tasks "
                "out of base"
            )

    grid_raw = raw.get("grid") or {}
    exclude = () if grid_raw.get("exclude") is None else _parse_exclude(grid_raw["exclude"], axes)
    scratch = _parse_scratch(grid_raw.get("scratch"), axes, base)
    branch = _parse_branch(grid_raw.get("branch"), axes, base)

    mlflow_raw = {} if raw.get("mlflow") is None else require_mapping("mlflow", raw["mlflow"])
    _check_keys("mlflow", mlflow_raw, MLFLOW_KEYS)
    experiment = mlflow_raw.get("experiment", name)
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"mlflow.experiment: must be a non-empty string, got {experiment!r}")

    sweep = SweepConfig(
        name=name,
        base=base,
        axes=tuple(axes),
        tune=_parse_tune(raw.get("tune")),
        experiment=experiment,
        plugins=plugins,
        description=description,
        source=source,
        exclude=exclude,
        scratch=scratch,
        branch=branch,
    )
    if not sweep.trials():
        raise ConfigError("grid.exclude: leaves no trial to run")
    if branch != "none":
        _check_branch_is_paired(sweep)
    validate_trials(sweep)
    return sweep


def _check_branch_is_paired(sweep: SweepConfig) -> None:
    """A branch continues one parent trial found by its label, with the parent's config:
    a value Tune draws per trial (a `choice` axis) or a repeat of the grid
    (tune.num_samples) would give a branch another config than its parent's, or several
    parents of one label."""
    for axis in sweep.choice_axes:
        raise ConfigError(
            f"{axis.name}: a {{choice: ...}} axis with grid.branch {sweep.branch}; a branch "
            "must have its parent's values: make it a {grid: ...} axis"
        )
    if sweep.tune.num_samples != 1:
        raise ConfigError(
            f"tune.num_samples: {sweep.tune.num_samples} with grid.branch {sweep.branch}; "
            "must be 1 (list more seeds in grid.seeds instead)"
        )


def _parse_scratch(raw: Any, axes: list[Axis], base: dict[str, Any]) -> bool:
    """`grid.scratch`: with it, every sequence runs the study's switch protocol (re-annealed
    epsilon, flushed buffer: SCRATCH_PROTOCOL) unless it says otherwise, which is an error:
    only under that protocol does a fresh network on task k alone see task k's schedule."""
    if raw is None or raw is False:
        return False
    if raw is not True:
        raise ConfigError(f"grid.scratch: must be true or false, got {raw!r}")
    sequences = [a for a in axes if a.target == "tasks"]
    named: list[tuple[str, Any]] = []
    for axis in sequences:
        pairs = zip(axis.labels, axis.values, strict=True)
        named += [(f"grid.sequences.{label}", value) for label, value in pairs]
    if not sequences and isinstance(base.get("tasks"), Mapping):
        named.append(("base.tasks", base["tasks"]))
    if not named:
        raise ConfigError(
            "grid.scratch: needs a task sequence (grid.sequences or a base.tasks mapping); "
            "a scratch reference is a fresh network on one later task"
        )
    for path, sequence in named:
        for key, wanted in SCRATCH_PROTOCOL.items():
            value = sequence.setdefault(key, wanted)
            if value != wanted:
                raise ConfigError(
                    f"{path}.{key}: {value!r} with grid.scratch; a scratch reference has the "
                    f"sequence's schedule on task k only when {key} is {wanted!r} (or drop "
                    "grid.scratch)"
                )
    return True


def _parse_branch(raw: Any, axes: list[Axis], base: dict[str, Any]) -> str:
    """`grid.branch`: one of BRANCH_MODES; `prefix` and `every_switch` need task sequences
    of 2 tasks or more (the prefix is task 0, the branches continue with task 1)."""
    if raw is None:
        return "none"
    if raw not in BRANCH_MODES:
        allowed = ", ".join(BRANCH_MODES)
        raise ConfigError(f"grid.branch: must be one of {allowed}, got {raw!r}")
    if raw == "none":
        return raw
    sequences = [a for a in axes if a.target == "tasks"]
    if not sequences and not isinstance(base.get("tasks"), Mapping):
        raise ConfigError(
            f"grid.branch: {raw} needs a task sequence (grid.sequences or a base.tasks "
            "mapping); its methods branch at the first switch"
        )
    return raw


def _without_method(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if k != METHOD_KEY}


def _point_key(overrides: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A grid point's overrides as a hashable key (values by their repr)."""
    return tuple(sorted((k, repr(v)) for k, v in overrides.items()))


def _attribute(msg: str, sources: Mapping[str, str]) -> str:
    """Prefix a trial-config error with the sweep-file field it came from."""
    for dotted in sorted(sources, key=len, reverse=True):
        if msg == dotted or msg.startswith((dotted + ":", dotted + ".", dotted + "[")):
            return f"{sources[dotted]} ({msg.split(':', 1)[0]}):{msg.split(':', 1)[1]}"
    return f"base.{msg}" if re.match(r"^[A-Za-z_][\w.\[\]]*:", msg) else f"base: {msg}"


def validate_trials(sweep: SweepConfig) -> None:
    """Parse every expanded trial config (and every `choice` option) like `knife train`."""
    for spec in sweep.trials():
        sources = dict(spec.sources)
        _validate_one(spec.config, sources)
    # Each choice option once, with the other keys at the first grid point.
    first = sweep.trials()[0]
    for axis in sweep.choice_axes:
        for i, value in enumerate(axis.values):
            config = build_trial_config(first.config, {axis.target: value})
            _validate_one(config, {**first.sources, axis.target: axis.source(i)})


def _validate_one(config: dict[str, Any], sources: dict[str, str]) -> None:
    try:
        parse_trial_config(config)
    except ConfigError as err:
        raise ConfigError(_attribute(str(err), sources)) from None


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    return parse_sweep_config(load_yaml(path), source=str(Path(path).resolve()))


def describe(sweep: SweepConfig) -> str:
    """The expanded trial list, for `knife sweep --dry-run`."""
    specs = sweep.trials()
    lines = [
        f"sweep {sweep.name!r}: {len(specs)} grid point(s) x {sweep.tune.num_samples} "
        f"sample(s) = {sweep.num_trials()} trial(s); MLflow experiment {sweep.experiment!r}",
    ]
    for axis in sweep.axes:
        shown = ", ".join(axis.labels)
        lines.append(f"  {axis.kind:6} {axis.target:24} <- {axis.name}: {shown}")
    for ex in sweep.exclude:
        lines.append("  left out: " + ", ".join(f"{k}={v}" for k, v in ex.items()))
    lines.append("")
    width = max(len(s.label) for s in specs)
    for spec in specs:
        cfg = spec.config
        tasks = cfg.get("tasks")
        if tasks is not None:
            where = f"tasks={tasks.get('name', 'custom')}" if isinstance(tasks, dict) else "tasks"
        else:
            where = f"env={cfg.get('env')} steps={cfg.get('steps')}"
        method = (cfg.get("plasticity") or {}).get("method", "none")
        lines.append(
            f"  [{spec.index:3d}] {spec.label:{width}}  algorithm={cfg.get('algorithm')} "
            f"method={method} seed={cfg.get('seed', 0)} {where}"
        )
    for axis in sweep.choice_axes:
        lines.append(f"  + {axis.target} drawn per trial from {list(axis.values)!r}")
    return "\n".join(lines)


def apply_sweep_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of a sweep file's mapping with each `a.b.c=value` (value parsed as YAML)."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        path, value = parse_override(item, "tune.num_samples=2")
        if path.split(".")[0] not in SWEEP_KEYS:
            raise unknown_key("--set", path.split(".")[0], SWEEP_KEYS)
        set_dotted(out, path, value)
    return out


def load_sweep_file(path: str | Path, overrides: Iterable[str] = ()) -> SweepConfig:
    """Read a sweep YAML file, apply `--set` overrides, validate."""
    raw = apply_sweep_overrides(load_yaml(path), overrides)
    return parse_sweep_config(raw, source=str(Path(path).resolve()))
