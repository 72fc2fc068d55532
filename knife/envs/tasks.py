"""Task sequences (DESIGN 9, issue 4): ordered tasks that one network trains through.

A trial config's `tasks:` section takes one of three forms:

    tasks:                          # 1. a list of tasks (sequence options at their defaults)
      - {env: matrix:climbing, steps: 2000}
      - {env: matrix:penalty, env_config: {k: -100}, steps: 2000, name: penalty}

    tasks:                          # 2. sequence options plus the list
      buffer_on_switch: keep        # flush (default) | keep: the replay buffer at a switch
      reanneal_epsilon: true        # restart the epsilon schedule at each switch
      eval_previous: true           # also test on every earlier task (forgetting)
      target_on_switch: sync        # sync (default) | keep: the target networks at a switch
      optimizer_on_switch: keep     # keep (default) | reset: the optimizer state at a switch
      name: my_sequence
      repeat: 2                     # play the list twice: A -> B -> A#2 -> B#2
      tasks: [...]

    tasks: {preset: matrix_payoffs, steps_per_task: 500, buffer_on_switch: keep}
                                    # 3. a preset (presets()), with options overridden

`repeat: N` (default 1) is expanded at parsing: the sequence holds N copies of the list, in
order, and each visit is an ordinary task index (task/<i>/... metrics, one switch between any
two). Visit v >= 2 of a task is named `<label>#<v>` (`visit_of` splits it back), so the
per-task `task/<i>/name` tags say which task and which visit an index is. `to_config` writes
the expanded list, which parses back to the same sequence.

Errors are ValueErrors naming the field (`tasks[1].steps: ...`); `from_config` also checks
every env name and config with the registry, so a bad sequence fails before Ray starts.

One network serves the whole sequence: `spec()` is the padded TeamSpec over the tasks and
`make_task_env(i)` builds task i padded to it (knife.envs.padding; `agent_mask(i)` says
which agents are real). Padded features only line up between envs of one kind, so all
tasks must come from one env *family* (`env_family`): the name's part
before ':' (matrix, smax, smacv2), the whole name for names without one (stag_hunt), and
the whole name for pettingzoo (each PettingZoo module is its own game). Within a family,
layouts can still shift (the stag hunt state grows with the grid, protoss obs carry shield
features the other races lack): padding appends zeros and the network has to adapt, which
is part of what a transfer sequence tests.
"""

from __future__ import annotations

import bisect
import copy
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from knife.envs.base import TeamEnv, TeamSpec
from knife.envs.matrix import PERMUTE, permutation_label
from knife.envs.padding import PaddedTeamEnv, agent_mask, padded_spec
from knife.envs.registry import make, make_vector
from knife.envs.registry import validate as validate_env
from knife.envs.vector import PaddedVectorEnv

BUFFER_ON_SWITCH = ("flush", "keep")
TARGET_ON_SWITCH = ("sync", "keep")
OPTIMIZER_ON_SWITCH = ("keep", "reset")
# More visits than this are taken for a typo (each visit costs a whole task budget).
MAX_REPEAT = 100
# The sequence's own options: name -> (default, allowed, doc); `knife config` prints them.
SEQUENCE_OPTIONS: dict[str, tuple[Any, str, str]] = {
    "buffer_on_switch": ("flush", "flush, keep", "the replay buffer at a switch"),
    "reanneal_epsilon": (False, "true or false", "restart the epsilon schedule at a switch"),
    "eval_previous": (False, "true or false", "also test every earlier task (forgetting)"),
    "target_on_switch": ("sync", "sync, keep", "targets copy the online networks at a switch"),
    "optimizer_on_switch": ("keep", "keep, reset", "the optimizer state at a switch"),
    "name": (None, "a string", "the sequence's name (the `sequence` tag)"),
    "repeat": (
        1,
        f"an integer in [1, {MAX_REPEAT}]",
        "play the task list this many times (A -> B -> A#2 -> B#2); visit v >= 2 of task "
        "NAME is named NAME#v",
    ),
}
# The switch protocol's defaults (TaskSequence docstring), also used by a trial without a
# sequence when a switch is triggered by hand.
SWITCH_DEFAULTS: dict[str, Any] = {
    key: SEQUENCE_OPTIONS[key][0]
    for key in ("buffer_on_switch", "reanneal_epsilon", "target_on_switch", "optimizer_on_switch")
}
# Budgets above this are refused as typos: 1e10 env steps is ~30 years at 10k steps/s.
MAX_STEPS = 10_000_000_000
# A later visit's name: `<label>#<visit>` (module docstring).
VISIT_SEPARATOR = "#"
TASK_KEYS = ("env", "env_config", "steps", "name")
# TaskSequence's own fields, as written in a `tasks:` mapping.
SEQUENCE_FIELDS = (
    "buffer_on_switch",
    "reanneal_epsilon",
    "eval_previous",
    "target_on_switch",
    "optimizer_on_switch",
    "name",
)
SEQUENCE_KEYS = ("tasks", *SEQUENCE_FIELDS, "repeat")
PRESET_KEYS = ("preset", "steps_per_task", *SEQUENCE_KEYS[1:])


def env_family(env: str) -> str:
    """Tasks may share one network only within a family (module docstring)."""
    if env.startswith("pettingzoo:"):
        return env
    return env.split(":", 1)[0] if ":" in env else env


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_steps(value: Any) -> Any:
    """An env-step count as int where the YAML spelling is integral: PyYAML reads `2e6` as
    the string '2e6' and `2.0e+6` as a float. Anything else is returned unchanged (and then
    refused by the checks)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _unknown_key(path: str, key: Any, allowed: tuple[str, ...]) -> ValueError:
    return ValueError(f"{path}: unknown key {key!r}; allowed: {', '.join(allowed)}")


@dataclass
class Task:
    """One task: an env, its config, and a budget of env steps."""

    env: str
    env_config: dict[str, Any]
    steps: int
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.env

    def check(self, path: str) -> None:
        """Structural checks (no env is built); `path` is e.g. 'tasks[1]'."""
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"{path}.env: required, a registered env name; got {self.env!r}")
        if not isinstance(self.env_config, Mapping):
            raise ValueError(
                f"{path}.env_config: must be a mapping of keys to values, got {self.env_config!r}"
            )
        if not _is_int(self.steps) or self.steps <= 0:
            raise ValueError(
                f"{path}.steps: required, a positive int (env steps); got {self.steps!r}"
            )
        if self.steps > MAX_STEPS:
            raise ValueError(
                f"{path}.steps: at most {MAX_STEPS:.0e} env steps (a larger budget is taken "
                f"for a typo), got {self.steps!r}"
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"{path}.name: must be a non-empty string, got {self.name!r}")

    @classmethod
    def from_config(cls, raw: Any, path: str) -> Task:
        if not isinstance(raw, Mapping):
            raise ValueError(
                f"{path}: must be a mapping with env, steps (and optionally env_config, "
                f"name), got {raw!r}"
            )
        for key in raw:
            if key not in TASK_KEYS:
                raise _unknown_key(path, key, TASK_KEYS)
        for key in ("env", "steps"):
            if raw.get(key) is None:
                what = "a registered env name" if key == "env" else "a positive int (env steps)"
                raise ValueError(f"{path}.{key}: required, {what}")
        env_config = raw.get("env_config")
        task = cls(
            env=raw["env"],
            env_config={} if env_config is None else env_config,
            steps=_as_steps(raw["steps"]),
            name=raw.get("name"),
        )
        task.check(path)
        task.env_config = dict(task.env_config)
        task.steps = int(task.steps)
        return task

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"env": self.env, "env_config": dict(self.env_config)}
        out["steps"] = self.steps
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass
class TaskSequence:
    """Ordered tasks plus what happens at a switch. Construction builds no env.

    The switch protocol (docs/design.md section 9) is the same for every plasticity
    method, `none` included; the method only changes the networks it names:
    - buffer_on_switch: "flush" empties the replay buffer, "keep" keeps it;
    - reanneal_epsilon: restart the epsilon schedule at the switch;
    - target_on_switch: "sync" hard-copies every online network into its target after the
      method has acted (each method enters the next task with target = online), "keep"
      leaves the targets' values alone until the next regular target update (they only
      mirror the structure an intervention added, with their own function kept);
    - optimizer_on_switch: "reset" zeroes the whole optimizer state (moments and step
      counts) of every method, "keep" keeps it (methods still reset what they re-initialize).
    """

    tasks: list[Task]
    buffer_on_switch: Literal["flush", "keep"] = SWITCH_DEFAULTS["buffer_on_switch"]
    reanneal_epsilon: bool = SWITCH_DEFAULTS["reanneal_epsilon"]
    eval_previous: bool = SEQUENCE_OPTIONS["eval_previous"][0]
    target_on_switch: Literal["sync", "keep"] = SWITCH_DEFAULTS["target_on_switch"]
    optimizer_on_switch: Literal["keep", "reset"] = SWITCH_DEFAULTS["optimizer_on_switch"]
    name: str | None = None
    _specs: list[TeamSpec] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        if not self.tasks:
            raise ValueError("tasks: must list at least one task")
        for i, task in enumerate(self.tasks):
            if not isinstance(task, Task):
                raise ValueError(f"tasks[{i}]: must be a Task, got {task!r}")
            task.check(f"tasks[{i}]")
        for key, allowed in (
            ("buffer_on_switch", BUFFER_ON_SWITCH),
            ("target_on_switch", TARGET_ON_SWITCH),
            ("optimizer_on_switch", OPTIMIZER_ON_SWITCH),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"tasks.{key}: unknown {getattr(self, key)!r}; allowed: {', '.join(allowed)}"
                )
        for key in ("reanneal_epsilon", "eval_previous"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"tasks.{key}: must be true or false, got {getattr(self, key)!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"tasks.name: must be a non-empty string, got {self.name!r}")
        self._check_family()

    def _check_family(self) -> None:
        families = list(dict.fromkeys(env_family(t.env) for t in self.tasks))
        if len(families) > 1:
            first = {
                f: next(i for i, t in enumerate(self.tasks) if env_family(t.env) == f)
                for f in families
            }
            where = ", ".join(f"{f} (tasks[{i}])" for f, i in first.items())
            raise ValueError(
                f"tasks: cannot share one network across env families "
                f"{' and '.join(families)}; padded observation, state and action features "
                f"would mean different things in different tasks. Use tasks of one family "
                f"only; first task of each family: {where}"
            )

    # ---------------------------------------------------------------- parsing

    @classmethod
    def from_config(cls, raw: Any) -> TaskSequence:
        """Parse and fully validate a `tasks:` section (module docstring), building no env
        beyond what the registry's validators need."""
        if isinstance(raw, Mapping) and "preset" in raw:
            seq = cls._from_preset(raw)
            seq.validate()
        elif isinstance(raw, Mapping):
            for key in raw:
                if key not in SEQUENCE_KEYS:
                    raise _unknown_key("tasks", key, (*SEQUENCE_KEYS, "preset"))
            if raw.get("tasks") is None:
                raise ValueError("tasks.tasks: required, a list of tasks (or use preset)")
            options = {k: raw[k] for k in SEQUENCE_FIELDS if k in raw}
            tasks = repeat_tasks(cls._parse_tasks(raw["tasks"]), _parse_repeat(raw))
            seq = cls(tasks=tasks, **options)
        elif isinstance(raw, list | tuple):
            seq = cls(tasks=cls._parse_tasks(raw))
        else:
            raise ValueError(
                f"tasks: must be a list of tasks, or a mapping with tasks (or preset) and "
                f"sequence options; got {raw!r}"
            )
        return seq

    @staticmethod
    def _parse_tasks(raw: Any) -> list[Task]:
        if not isinstance(raw, list | tuple):
            raise ValueError(f"tasks: the tasks must be a list, got {raw!r}")
        if not raw:
            raise ValueError("tasks: must list at least one task")
        tasks = [Task.from_config(item, f"tasks[{i}]") for i, item in enumerate(raw)]
        # Env names and configs first: a typo should not surface as a family mismatch.
        _validate_envs(tasks)
        return tasks

    @classmethod
    def _from_preset(cls, raw: Mapping[str, Any]) -> TaskSequence:
        for key in raw:
            if key == "tasks":
                raise ValueError("tasks.preset: give either preset or tasks, not both")
            if key not in PRESET_KEYS:
                raise _unknown_key("tasks", key, PRESET_KEYS)
        preset = raw["preset"]
        if preset not in PRESETS:
            raise ValueError(f"tasks.preset: unknown {preset!r}; allowed: {', '.join(PRESETS)}")
        steps = _as_steps(raw.get("steps_per_task"))
        if steps is not None and (not _is_int(steps) or steps <= 0):
            raise ValueError(f"tasks.steps_per_task: must be a positive int, got {steps!r}")
        seq = PRESETS[preset](steps=steps)
        options = {k: raw[k] for k in SEQUENCE_FIELDS if k in raw}
        tasks = repeat_tasks(seq.tasks, _parse_repeat(raw))
        # Re-run the checks on the overridden options.
        return cls(tasks=tasks, **{**seq.options(), "name": seq.name, **options})

    def validate(self) -> None:
        """Check every task's env name and config with the registry (field-named errors)."""
        _validate_envs(self.tasks)

    def options(self) -> dict[str, Any]:
        """The sequence-level switch options."""
        return {
            "buffer_on_switch": self.buffer_on_switch,
            "reanneal_epsilon": self.reanneal_epsilon,
            "eval_previous": self.eval_previous,
            "target_on_switch": self.target_on_switch,
            "optimizer_on_switch": self.optimizer_on_switch,
        }

    def to_config(self) -> dict[str, Any]:
        """A plain mapping (YAML/JSON-ready) that from_config accepts back."""
        out: dict[str, Any] = {**self.options(), "tasks": [t.to_config() for t in self.tasks]}
        if self.name is not None:
            out["name"] = self.name
        return out

    # ---------------------------------------------------------------- sizes and envs

    def __len__(self) -> int:
        return len(self.tasks)

    def specs(self) -> list[TeamSpec]:
        """Each task's own TeamSpec; builds each env once (then closes it) and caches."""
        if self._specs is None:
            specs = []
            for i in range(len(self.tasks)):
                env = self._make_raw(i)
                try:
                    specs.append(env.team)
                finally:
                    env.close()
            self._specs = specs
        return list(self._specs)

    def spec(self) -> TeamSpec:
        """The sequence's padded spec: what the network is built for."""
        return padded_spec(self.specs())

    def agent_mask(self, i: int) -> np.ndarray:
        """bool [spec().n_agents]: task i's real agents (False = padded, no part in Q_tot)."""
        return agent_mask(self.specs()[self._index(i)], self.spec())

    def make_task_env(self, i: int, spec: TeamSpec | None = None) -> PaddedTeamEnv:
        """Task i's env, padded to `spec` (default spec(); pass it where it is already known,
        e.g. in an EnvRunner, to skip building every task's env once to compute it)."""
        return PaddedTeamEnv(self._make_raw(self._index(i)), spec or self.spec())

    def make_task_vector_env(
        self, i: int, num_envs: int, spec: TeamSpec | None = None
    ) -> PaddedVectorEnv:
        """`num_envs` envs of task i stepped as one (knife/envs/vector.py), padded to
        `spec` as make_task_env pads one."""
        task = self.tasks[self._index(i)]
        try:
            raw = make_vector(task.env, num_envs, **task.env_config)
        except ValueError as err:
            raise ValueError(_task_path(i, str(err))) from err
        return PaddedVectorEnv(raw, spec or self.spec())

    def _make_raw(self, i: int) -> TeamEnv:
        task = self.tasks[i]
        try:
            return make(task.env, **task.env_config)
        except ValueError as err:
            raise ValueError(_task_path(i, str(err))) from err

    def _index(self, i: int) -> int:
        if not _is_int(i) or not 0 <= i < len(self.tasks):
            raise IndexError(f"task index {i!r} out of range for {len(self.tasks)} tasks")
        return int(i)

    # ---------------------------------------------------------------- budgets

    @property
    def total_steps(self) -> int:
        return sum(t.steps for t in self.tasks)

    def boundaries(self) -> list[int]:
        """Cumulative env-step ends: task i runs while boundaries()[i-1] <= steps <
        boundaries()[i] (0 before task 0); the last entry is total_steps."""
        return list(itertools.accumulate(t.steps for t in self.tasks))

    def task_at(self, env_steps: int) -> int:
        """The task index for a global env-step count (the last task past the end)."""
        return min(bisect.bisect_right(self.boundaries(), env_steps), len(self.tasks) - 1)


def _parse_repeat(raw: Mapping[str, Any]) -> int:
    repeat = raw.get("repeat", SEQUENCE_OPTIONS["repeat"][0])
    if not _is_int(repeat) or not 1 <= repeat <= MAX_REPEAT:
        raise ValueError(
            f"tasks.repeat: must be an integer in [1, {MAX_REPEAT}] (how many times the task "
            f"list is played), got {repeat!r}"
        )
    return int(repeat)


def repeat_tasks(tasks: list[Task], repeat: int) -> list[Task]:
    """The list played `repeat` times in order; visit v >= 2 of a task is named
    `<label>#<v>` (the first visit keeps its own name)."""
    out = list(tasks)
    for visit in range(2, repeat + 1):
        out += [
            Task(t.env, copy.deepcopy(t.env_config), t.steps, f"{t.label}{VISIT_SEPARATOR}{visit}")
            for t in tasks
        ]
    return out


def visit_of(label: str) -> tuple[str, int]:
    """(the task's label, which visit) of a task label: 'climbing#2' -> ('climbing', 2),
    'climbing' -> ('climbing', 1)."""
    base, sep, visit = label.rpartition(VISIT_SEPARATOR)
    if sep and base and visit.isdigit() and int(visit) >= 2:
        return base, int(visit)
    return label, 1


def _validate_envs(tasks: list[Task]) -> None:
    for i, task in enumerate(tasks):
        try:
            validate_env(task.env, task.env_config)
        except ValueError as err:
            raise ValueError(_task_path(i, str(err))) from err


def _task_path(i: int, msg: str) -> str:
    """Registry messages start with `env:` / `env_config...:`; put them under tasks[i]."""
    if msg.startswith(("env:", "env_config")):
        return f"tasks[{i}].{msg}"
    return f"tasks[{i}]: {msg}"


# -------------------------------------------------------------------- presets

MATRIX_STEPS = 2000
STAG_HUNT_STEPS = 500_000
SMAX_STEPS = 2_000_000
SMACV2_STEPS = 2_000_000


# (game, permute) per task. Every game's unique optimum is (0, 0) before relabelling, so it
# lands on (permute[0][0], permute[1][0]): (0, 0) -> (1, 2) -> (2, 1) -> (1, 0). Each agent's
# optimal action changes at every switch, so a network that keeps the previous task's greedy
# joint action is wrong on the next one.
MATRIX_PAYOFFS_GAMES: tuple[tuple[str, tuple[tuple[int, ...], ...] | None], ...] = (
    ("climbing", None),
    ("nonmonotonic", ((1, 2, 0), (2, 0, 1))),
    ("qplex_3", ((2, 0, 1), (1, 2, 0))),
    ("climbing", ((1, 2, 0), (0, 2, 1))),
)


def _matrix_task(game: str, permute: tuple[tuple[int, ...], ...] | None, steps: int) -> Task:
    """A one-step game, its actions relabelled by `permute`; the name spells the relabelling."""
    if permute is None:
        return Task(f"matrix:{game}", {}, steps, game)
    env_config = {PERMUTE: [list(p) for p in permute]}
    return Task(f"matrix:{game}", env_config, steps, f"{game}_{permutation_label(permute)}")


def matrix_payoffs(steps: int | None = None) -> TaskSequence:
    """Four 2-agent 3-action one-step games whose unique optimal joint action moves at every
    switch: climbing (0, 0) -> nonmonotonic (1, 2) -> qplex_3 (2, 1) -> climbing (1, 0)."""
    s = steps or MATRIX_STEPS
    return TaskSequence(
        [_matrix_task(game, permute, s) for game, permute in MATRIX_PAYOFFS_GAMES],
        name="matrix_payoffs",
    )


def stag_hunt_punishment(steps: int | None = None) -> TaskSequence:
    """The default stag hunt with the mis-capture punishment 0 -> -0.5 -> -1 -> -2."""
    s = steps or STAG_HUNT_STEPS
    return TaskSequence(
        [
            Task("stag_hunt", {"punishment": p}, s, f"punishment_{p:g}")
            for p in (0.0, -0.5, -1.0, -2.0)
        ],
        name="stag_hunt_punishment",
    )


def _races(family: str, steps: int) -> list[Task]:
    return [
        Task(f"{family}:{race}_5_vs_5", {}, steps, race) for race in ("protoss", "terran", "zerg")
    ]


def smax_race(steps: int | None = None) -> TaskSequence:
    """SMAX (offline SMACv2-like) race transfer, 5 vs 5."""
    return TaskSequence(_races("smax", steps or SMAX_STEPS), name="smax_race")


def smacv2_race(steps: int | None = None) -> TaskSequence:
    """Real SMACv2 race transfer, 5 vs 5 (GPU image with StarCraft II)."""
    return TaskSequence(_races("smacv2", steps or SMACV2_STEPS), name="smacv2_race")


def smacv2_5v5_to_5v6(steps: int | None = None) -> TaskSequence:
    """protoss 5 vs 5 -> 5 vs 6. SMACv2 publishes no 5_vs_6 scenario (the reference table has
    none); `smacv2:protoss_5_vs_6` is the official protoss capability config with n_units 5
    and n_enemies 6, which the smacv2 adapter builds from the name (knife/envs/smacv2.py)."""
    s = steps or SMACV2_STEPS
    return TaskSequence(
        [
            Task("smacv2:protoss_5_vs_5", {}, s, "protoss_5_vs_5"),
            Task("smacv2:protoss_5_vs_6", {}, s, "protoss_5_vs_6"),
        ],
        name="smacv2_5v5_to_5v6",
    )


PRESETS: dict[str, Callable[..., TaskSequence]] = {
    "matrix_payoffs": matrix_payoffs,
    "stag_hunt_punishment": stag_hunt_punishment,
    "smax_race": smax_race,
    "smacv2_race": smacv2_race,
    "smacv2_5v5_to_5v6": smacv2_5v5_to_5v6,
}


def presets() -> list[str]:
    """Names `tasks: {preset: NAME}` accepts."""
    return list(PRESETS)


def preset(name: str, steps: int | None = None) -> TaskSequence:
    """The preset sequence `name` (no env is built)."""
    if name not in PRESETS:
        raise ValueError(f"tasks.preset: unknown {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name](steps=steps)
