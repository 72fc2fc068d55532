import importlib.util
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from knife.envs import (
    PaddedTeamEnv,
    Task,
    TaskSequence,
    TeamEnv,
    TeamSpec,
    env_family,
    preset,
    presets,
    register,
    unregister,
)
from knife.envs.matrix import CLIMBING, NONMONOTONIC, ONE_STEP_GAMES, QPLEX_3
from knife.envs.tasks import visit_of
from knife.platform.config import TOP_LEVEL_KEYS

ROOT = Path(__file__).resolve().parents[2]
TWO = [
    {"env": "matrix:climbing", "steps": 100},
    {"env": "matrix:penalty", "env_config": {"k": -50}, "steps": 200, "name": "pen"},
]


def test_list_form_defaults():
    seq = TaskSequence.from_config(TWO)
    assert [t.env for t in seq.tasks] == ["matrix:climbing", "matrix:penalty"]
    assert seq.tasks[1] == Task("matrix:penalty", {"k": -50}, 200, "pen")
    assert [t.label for t in seq.tasks] == ["matrix:climbing", "pen"]
    assert seq.options() == {
        "buffer_on_switch": "flush",
        "reanneal_epsilon": False,
        "eval_previous": False,
        "target_on_switch": "sync",
        "optimizer_on_switch": "keep",
    }
    assert seq.name is None and len(seq) == 2


def test_mapping_form_and_round_trip():
    raw = {
        "buffer_on_switch": "keep",
        "reanneal_epsilon": True,
        "eval_previous": True,
        "target_on_switch": "keep",
        "optimizer_on_switch": "reset",
        "name": "two",
        "tasks": TWO,
    }
    seq = TaskSequence.from_config(raw)
    assert seq.options() == {
        "buffer_on_switch": "keep",
        "reanneal_epsilon": True,
        "eval_previous": True,
        "target_on_switch": "keep",
        "optimizer_on_switch": "reset",
    }
    assert seq.name == "two"
    again = TaskSequence.from_config(seq.to_config())
    assert again == seq
    assert yaml.safe_load(yaml.safe_dump(seq.to_config())) == seq.to_config()


def test_preset_form_with_overrides():
    seq = TaskSequence.from_config(
        {"preset": "matrix_payoffs", "steps_per_task": 50, "buffer_on_switch": "keep"}
    )
    assert seq.name == "matrix_payoffs" and seq.buffer_on_switch == "keep"
    assert [t.steps for t in seq.tasks] == [50] * 4
    named = TaskSequence.from_config({"preset": "matrix_payoffs", "name": "mine"})
    assert named.name == "mine" and named.tasks[0].steps == 2000


def test_yaml_spellings_of_steps():
    raw = yaml.safe_load(
        "[{env: matrix:climbing, steps: 2e3}, {env: matrix:qplex_3, steps: 1.5e+3}]"
    )
    assert [t.steps for t in TaskSequence.from_config(raw).tasks] == [2000, 1500]
    seq = TaskSequence.from_config({"preset": "matrix_payoffs", "steps_per_task": "1e2"})
    assert seq.boundaries() == [100, 200, 300, 400]
    for bad in ("1e2.5", "lots", 2.5, "nan", "inf"):
        with pytest.raises(ValueError, match=re.escape("tasks[0].steps: required, a positive")):
            TaskSequence.from_config([{"env": "matrix:climbing", "steps": bad}])


def test_boundaries_and_task_at():
    seq = TaskSequence.from_config(TWO + [{"env": "matrix:qplex_3", "steps": 300}])
    assert seq.boundaries() == [100, 300, 600] and seq.total_steps == 600
    at = {s: seq.task_at(s) for s in (0, 99, 100, 299, 300, 599, 600, 10**6)}
    assert at == {0: 0, 99: 0, 100: 1, 299: 1, 300: 2, 599: 2, 600: 2, 10**6: 2}


BAD = [
    ([], "tasks: must list at least one task"),
    ({"tasks": []}, "tasks: must list at least one task"),
    (5, "tasks: must be a list of tasks, or a mapping with tasks (or preset)"),
    ([5], "tasks[0]: must be a mapping with env, steps"),
    ([{"env": "matrix:climbing"}], "tasks[0].steps: required, a positive int"),
    ([TWO[0], {"env": "matrix:penalty", "steps": 0}], "tasks[1].steps: required, a positive int"),
    ([{"env": "matrix:climbing", "steps": -3}], "tasks[0].steps: required, a positive int"),
    ([{"env": "matrix:climbing", "steps": 1.5}], "tasks[0].steps: required, a positive int"),
    ([{"env": "matrix:climbing", "steps": True}], "tasks[0].steps: required, a positive int"),
    ([{"steps": 10}], "tasks[0].env: required, a registered env name"),
    ([{"env": "", "steps": 10}], "tasks[0].env: required, a registered env name"),
    ([{"env": 3, "steps": 10}], "tasks[0].env: required, a registered env name"),
    ([TWO[0], {"env": "foo", "steps": 10}], "tasks[1].env: unknown env 'foo'; registered: "),
    (
        [{"env": "matrix:climbing", "env_config": {"x": 1}, "steps": 10}],
        "tasks[0].env_config: unknown key 'x' for matrix:climbing; allowed: noise_features",
    ),
    (
        [{"env": "stag_hunt", "env_config": {"view": 2}, "steps": 10}],
        "tasks[0].env_config.view: must be an odd integer",
    ),
    (
        [{"env": "matrix:penalty", "env_config": {"k": 5}, "steps": 10}],
        "tasks[0].env_config.k: must be a finite number <= 0",
    ),
    (
        [{"env": "matrix:climbing", "env_config": [1], "steps": 10}],
        "tasks[0].env_config: must be a mapping",
    ),
    (
        [TWO[0], {"env": "matrix:qplex_3", "env_config": {"permute": [[0, 2, 2]]}, "steps": 9}],
        "tasks[1].env_config.permute: must be a list with one permutation per agent",
    ),
    (
        [{"env": "matrix:climbing", "stepz": 10}],
        "tasks[0]: unknown key 'stepz'; allowed: env, env_config, steps, name",
    ),
    (
        [{"env": "matrix:climbing", "steps": 10, "name": ""}],
        "tasks[0].name: must be a non-empty string",
    ),
    (
        [{"env": "matrix:climbing", "steps": 10**15}],
        "tasks[0].steps: at most 1e+10 env steps",
    ),
    (
        {"tasks": TWO, "buffer_on_switch": "x"},
        "tasks.buffer_on_switch: unknown 'x'; allowed: flush, keep",
    ),
    ({"tasks": TWO, "reanneal_epsilon": "yes"}, "tasks.reanneal_epsilon: must be true or false"),
    ({"tasks": TWO, "eval_previous": 1}, "tasks.eval_previous: must be true or false"),
    ({"tasks": TWO, "name": 3}, "tasks.name: must be a non-empty string"),
    (
        {"tasks": TWO, "buffer": "keep"},
        "tasks: unknown key 'buffer'; allowed: tasks, buffer_on_switch, reanneal_epsilon, "
        "eval_previous, target_on_switch, optimizer_on_switch, name, repeat, preset",
    ),
    (
        {"tasks": TWO, "target_on_switch": "copy"},
        "tasks.target_on_switch: unknown 'copy'; allowed: sync, keep",
    ),
    (
        {"tasks": TWO, "optimizer_on_switch": "zero"},
        "tasks.optimizer_on_switch: unknown 'zero'; allowed: keep, reset",
    ),
    ({"buffer_on_switch": "keep"}, "tasks.tasks: required, a list of tasks (or use preset)"),
    ({"tasks": {"env": "matrix:climbing"}}, "tasks: the tasks must be a list"),
    ({"preset": "nope"}, "tasks.preset: unknown 'nope'; allowed: matrix_payoffs, "),
    (
        {"preset": "matrix_payoffs", "tasks": TWO},
        "tasks.preset: give either preset or tasks, not both",
    ),
    (
        {"preset": "matrix_payoffs", "steps": 5},
        "tasks: unknown key 'steps'; allowed: preset, steps_per_task, buffer_on_switch",
    ),
    (
        {"preset": "matrix_payoffs", "steps_per_task": 0},
        "tasks.steps_per_task: must be a positive int",
    ),
    (
        {"preset": "matrix_payoffs", "buffer_on_switch": "drop"},
        "tasks.buffer_on_switch: unknown 'drop'; allowed: flush, keep",
    ),
    *(
        (
            raw,
            "tasks.repeat: must be an integer in [1, 100] (how many times the task list is "
            f"played), got {bad!r}",
        )
        for bad in (0, -1, "x", "2", 1.5, 2.0, True, None, 101)
        for raw in ({"tasks": TWO, "repeat": bad}, {"preset": "matrix_payoffs", "repeat": bad})
    ),
    (
        [TWO[0], {"env": "stag_hunt", "steps": 10}],
        "tasks: cannot share one network across env families matrix and stag_hunt; ",
    ),
    (
        [
            {"env": "pettingzoo:mpe2.simple_spread_v3", "steps": 10},
            {"env": "pettingzoo:mpe2.simple_tag_v3", "steps": 10},
        ],
        "tasks: cannot share one network across env families pettingzoo:mpe2.simple_spread_v3 "
        "and pettingzoo:mpe2.simple_tag_v3",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_validation_errors_name_the_field(raw, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        TaskSequence.from_config(raw)


def test_family_error_says_where_each_family_starts():
    with pytest.raises(ValueError) as err:
        TaskSequence.from_config(TWO + [{"env": "stag_hunt", "steps": 10}])
    assert "matrix (tasks[0]), stag_hunt (tasks[2])" in str(err.value)


def test_env_family():
    assert env_family("matrix:penalty") == "matrix"
    assert env_family("smax:protoss_5_vs_5") == env_family("smax:zerg_5_vs_5") == "smax"
    assert env_family("stag_hunt") == "stag_hunt"
    assert env_family("pettingzoo:mpe2.simple_tag_v3") == "pettingzoo:mpe2.simple_tag_v3"


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match=re.escape("tasks[0].steps: required, a positive int")):
        TaskSequence([Task("matrix:climbing", {}, 0)])
    with pytest.raises(ValueError, match="tasks: must list at least one task"):
        TaskSequence([])


def test_presets_build_no_env_until_spec(monkeypatch):
    assert presets() == [
        "matrix_payoffs",
        "stag_hunt_punishment",
        "smax_race",
        "smacv2_race",
        "smacv2_5v5_to_5v6",
    ]

    def no_build(*args, **kwargs):
        raise AssertionError("a preset built an env at construction")

    monkeypatch.setattr("knife.envs.tasks.make", no_build)
    seqs = {name: preset(name) for name in presets()}
    assert [t.env for t in seqs["smax_race"].tasks] == [
        "smax:protoss_5_vs_5",
        "smax:terran_5_vs_5",
        "smax:zerg_5_vs_5",
    ]
    assert [t.env for t in seqs["smacv2_race"].tasks] == [
        "smacv2:protoss_5_vs_5",
        "smacv2:terran_5_vs_5",
        "smacv2:zerg_5_vs_5",
    ]
    five_six = seqs["smacv2_5v5_to_5v6"].tasks
    assert [t.env for t in five_six] == ["smacv2:protoss_5_vs_5", "smacv2:protoss_5_vs_6"]
    assert [t.env_config["punishment"] for t in seqs["stag_hunt_punishment"].tasks] == [
        0.0,
        -0.5,
        -1.0,
        -2.0,
    ]
    assert all(len({env_family(t.env) for t in s.tasks}) == 1 for s in seqs.values())
    assert preset("smax_race", steps=7).boundaries() == [7, 14, 21]
    with pytest.raises(ValueError, match="tasks.preset: unknown 'x'"):
        preset("x")


@pytest.mark.parametrize("name", ["matrix_payoffs", "stag_hunt_punishment"])
def test_offline_presets_validate(name):
    seq = TaskSequence.from_config({"preset": name})
    assert seq.name == name and len(seq) == 4
    assert len({t.name for t in seq.tasks}) == 4  # distinct labels for per-task metrics


def test_matrix_payoffs_preset_pays_each_game():
    seq = preset("matrix_payoffs")
    assert seq.spec() == TeamSpec(2, 3, 1, 1, 1)
    # permute[i][a] = agent i's new label for action a: payoff'[p0[a0], p1[a1]] = payoff[a0, a1]
    games = [
        (CLIMBING, ((0, 1, 2), (0, 1, 2))),
        (NONMONOTONIC, ((1, 2, 0), (2, 0, 1))),
        (QPLEX_3, ((2, 0, 1), (1, 2, 0))),
        (CLIMBING, ((1, 2, 0), (0, 2, 1))),
    ]
    assert [t.name for t in seq.tasks] == [
        "climbing",
        "nonmonotonic_perm120_201",
        "qplex_3_perm201_120",
        "climbing_perm120_021",
    ]
    for i, (payoff, (p0, p1)) in enumerate(games):
        env = seq.make_task_env(i)
        for a0 in range(3):
            for a1 in range(3):
                env.reset()
                assert env.step(np.array([p0[a0], p1[a1]]))[1] == payoff[a0][a1]


def _one_step_matrix_sequences() -> dict[str, TaskSequence]:
    """Every matrix_* preset and every one-step matrix-game sequence in tune_configs/
    (a trial config's `tasks`, a sweep's grid.sequences)."""
    found = {f"preset {name}": preset(name) for name in presets() if name.startswith("matrix")}
    for path in sorted((ROOT / "tune_configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        candidates = {"tasks": raw["tasks"]} if "tasks" in raw else {}
        candidates.update((raw.get("grid") or {}).get("sequences") or {})
        for key, tasks in candidates.items():
            if all(env in ONE_STEP_GAMES for env in _env_names(tasks)):
                found[f"{path.name}: {key}"] = TaskSequence.from_config(tasks)
    return found


def _env_names(tasks) -> list[str]:
    """The env names a raw `tasks:` section lists, without validating it (SMACv2 may be
    missing here)."""
    if isinstance(tasks, dict) and "preset" in tasks:
        return [t.env for t in preset(tasks["preset"]).tasks]
    return [item["env"] for item in (tasks["tasks"] if isinstance(tasks, dict) else tasks)]


def _optimal_joint_actions(env) -> set[tuple[int, ...]]:
    """The joint actions the env pays most for, found by playing every one of them."""
    avail = env.reset(seed=0)[0]["avail_actions"]
    rewards = {}
    for joint in itertools.product(*(np.flatnonzero(row).tolist() for row in avail)):
        env.reset(seed=0)
        rewards[joint] = env.step(np.array(joint))[1]
    best = max(rewards.values())
    return {joint for joint, reward in rewards.items() if reward == best}


MATRIX_SEQUENCES = _one_step_matrix_sequences()


def test_the_shipped_matrix_sequences_are_all_checked():
    assert {
        "preset matrix_payoffs",
        "quickstart.yaml: climbing_relabelled",
        "seq_matrix_payoffs.yaml: tasks",
        "study_matrix.yaml: matrix_payoffs",
    } <= set(MATRIX_SEQUENCES)


@pytest.mark.parametrize("where", sorted(MATRIX_SEQUENCES))
def test_matrix_sequences_move_the_unique_optimum_at_every_switch(where):
    seq = MATRIX_SEQUENCES[where]
    optima = []
    for i in range(len(seq)):
        best = _optimal_joint_actions(seq.make_task_env(i))
        assert len(best) == 1, f"{where} task {i} ({seq.tasks[i].label}): optima {best}"
        optima.append(best.pop())
    for i in range(1, len(seq)):
        assert optima[i] != optima[i - 1], f"{where}: task {i} keeps the optimum {optima[i]}"


def test_matrix_payoffs_optima_and_the_study_files_are_the_preset():
    optima = [
        _optimal_joint_actions(MATRIX_SEQUENCES["preset matrix_payoffs"].make_task_env(i))
        for i in range(4)
    ]
    assert optima == [{(0, 0)}, {(1, 2)}, {(2, 1)}, {(1, 0)}]  # each agent's part moves too
    tasks = MATRIX_SEQUENCES["preset matrix_payoffs"].tasks
    assert MATRIX_SEQUENCES["study_matrix.yaml: matrix_payoffs"].tasks == tasks
    assert MATRIX_SEQUENCES["seq_matrix_payoffs.yaml: tasks"].tasks == tasks


def test_mixed_sizes_pad_to_one_spec():
    three = [[[float(i + j + k) for k in range(4)] for j in range(2)] for i in range(2)]
    seq = TaskSequence.from_config(
        [
            {"env": "matrix:climbing", "steps": 10},
            {"env": "matrix:custom", "env_config": {"payoff": three}, "steps": 10},
            {"env": "matrix:two_step", "steps": 10},
        ]
    )
    assert seq.specs() == [
        TeamSpec(2, 3, 1, 1, 1),
        TeamSpec(3, 4, 1, 1, 1),
        TeamSpec(2, 2, 3, 3, 2),
    ]
    assert seq.spec() == TeamSpec(3, 4, 3, 3, 2)
    assert seq.agent_mask(0).tolist() == [True, True, False]
    assert seq.agent_mask(1).tolist() == [True, True, True]
    env = seq.make_task_env(0)
    assert isinstance(env, PaddedTeamEnv) and env.team == seq.spec()
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    assert obs["avail_actions"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    assert env.step(np.array([0, 1, 3]))[1] == CLIMBING[0][1]
    two_step = seq.make_task_env(2, spec=seq.spec())
    two_step.reset()
    assert two_step.step(np.array([1, 0, 0]))[1] == 0.0
    assert two_step.step(np.array([1, 1, 0]))[1] == 8.0
    with pytest.raises(IndexError, match="task index 3 out of range for 3 tasks"):
        seq.make_task_env(3)


class _Counted(TeamEnv):
    built = 0
    closed = 0

    def __init__(self, n: int = 1) -> None:
        type(self).built += 1
        self._set_team(TeamSpec(n, 2, 1, 1, 1))

    def close(self) -> None:
        type(self).closed += 1


def test_spec_builds_each_env_once_and_closes_it():
    register("zz_count:", lambda suffix, /, **cfg: _Counted(**cfg), keys=["n"])
    try:
        seq = TaskSequence([Task("zz_count:a", {"n": 1}, 5), Task("zz_count:b", {"n": 3}, 5)])
        assert _Counted.built == 0
        assert seq.spec().n_agents == 3 and seq.spec().n_agents == 3
        seq.agent_mask(0)
        assert (_Counted.built, _Counted.closed) == (2, 2)
    finally:
        unregister("zz_count:")


def test_stag_hunt_punishment_changes_at_the_switch():
    seq = TaskSequence.from_config({"preset": "stag_hunt_punishment", "steps_per_task": 100})
    # Agent 0 next to a stag that needs two catchers: a failed catch, punished per task.
    agents = [[0, 0]] + [[9, c] for c in range(7)]
    positions = {"agents": agents, "stags": [[0, 1]]}
    catch_alone = np.array([5] + [4] * 7)
    rewards = []
    for i in range(len(seq)):
        env = seq.make_task_env(i)
        env.reset(seed=0, options={"positions": positions})
        rewards.append(env.step(catch_alone)[1])
    assert rewards == [0.0, -0.5, -1.0, -2.0]


@pytest.mark.parametrize("path", sorted((ROOT / "tune_configs").glob("seq_*.yaml")))
def test_sequence_yaml_files_parse(path):
    config = yaml.safe_load(path.read_text())
    assert {"algorithm", "tasks"} <= set(config)
    assert set(config) <= set(TOP_LEVEL_KEYS)
    if "smacv2:" in path.read_text() and importlib.util.find_spec("smacv2") is None:
        # Real StarCraft II sequences validate only where SMACv2 is installed (the GPU
        # image); here they must refuse with the install instructions.
        with pytest.raises(ValueError, match="pip install git\\+"):
            TaskSequence.from_config(config["tasks"])
        return
    seq = TaskSequence.from_config(config["tasks"])
    assert len(seq) >= 2


def test_yaml_files_exist():
    found = {p.name for p in (ROOT / "tune_configs").glob("seq_*.yaml")}
    assert {"seq_matrix_payoffs.yaml", "seq_stag_hunt_punishment.yaml"} <= found


def test_repeat_plays_the_list_again_and_names_each_visit():
    seq = TaskSequence.from_config({"tasks": TWO, "repeat": 3, "reanneal_epsilon": True})
    assert [t.label for t in seq.tasks] == [
        "matrix:climbing",
        "pen",
        "matrix:climbing#2",
        "pen#2",
        "matrix:climbing#3",
        "pen#3",
    ]
    assert [t.env for t in seq.tasks] == ["matrix:climbing", "matrix:penalty"] * 3
    assert [t.env_config for t in seq.tasks] == [{}, {"k": -50}] * 3
    assert seq.tasks[0].name is None  # the first visit keeps what was written
    assert seq.boundaries() == [100, 300, 400, 600, 700, 900] and seq.task_at(350) == 2
    assert seq.reanneal_epsilon is True and len(seq) == 6
    assert [visit_of(t.label) for t in seq.tasks] == [
        (label, visit) for visit in (1, 2, 3) for label in ("matrix:climbing", "pen")
    ]
    # The visits are copies: editing one leaves the others alone.
    seq.tasks[3].env_config["k"] = -1
    assert seq.tasks[1].env_config == {"k": -50}
    # The expanded list is what a normalized trial config holds; it parses back unchanged.
    again = TaskSequence.from_config(
        TaskSequence.from_config({"tasks": TWO, "repeat": 2}).to_config()
    )
    assert [t.label for t in again.tasks] == [
        "matrix:climbing",
        "pen",
        "matrix:climbing#2",
        "pen#2",
    ]
    assert "repeat" not in again.to_config()


def test_repeat_defaults_to_one_visit_and_works_on_presets():
    assert TaskSequence.from_config({"tasks": TWO, "repeat": 1}) == TaskSequence.from_config(TWO)
    seq = TaskSequence.from_config({"preset": "matrix_payoffs", "repeat": 2, "steps_per_task": 9})
    first = [t.name for t in preset("matrix_payoffs").tasks]
    assert [t.name for t in seq.tasks] == first + [f"{name}#2" for name in first]
    assert seq.name == "matrix_payoffs" and seq.total_steps == 8 * 9


def test_visit_of_reads_only_a_visit_suffix():
    assert visit_of("climbing#2") == ("climbing", 2)
    assert visit_of("matrix:climbing#12") == ("matrix:climbing", 12)
    assert visit_of("climbing") == ("climbing", 1)
    for label in ("a#1", "a#x", "#2", "a#"):
        assert visit_of(label) == (label, 1)
