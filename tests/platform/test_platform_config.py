"""Trial config parsing, validation messages, overrides and flattening (no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # a plain `pytest` run does not put the checkout on sys.path
    sys.path.insert(0, str(ROOT))

from knife.platform.config import (  # noqa: E402
    ConfigError,
    EvaluationConfig,
    TrainingConfig,
    TrialConfig,
    apply_overrides,
    flatten,
    load_trial_config,
    parse_trial_config,
)

MINIMAL = {"algorithm": "qmix", "env": "matrix:two_step", "steps": 1000}


def with_(base=None, **changes):
    out = dict(MINIMAL if base is None else base)
    out.update(changes)
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    return path


def test_training_defaults_match_design_5():
    t = TrainingConfig()
    assert (t.lr, t.optimizer, t.gamma, t.td_lambda, t.double_q, t.grad_clip) == (
        1e-3,
        "adam",
        0.99,
        0.6,
        True,
        10.0,
    )
    assert (t.batch_size, t.buffer_size, t.target_update_interval) == (32, 5000, 200)
    assert (t.epsilon_start, t.epsilon_finish, t.epsilon_anneal_steps) == (1.0, 0.05, 100_000)
    assert (t.agent_hidden_dim, t.mixer_embed_dim, t.hypernet_dim) == (64, 32, 64)
    assert (t.learning_starts, t.updates_per_episode, t.standardise_rewards) == (32, 1.0, False)
    assert (t.num_env_runners, t.device) == (0, "cpu")
    assert EvaluationConfig() == EvaluationConfig(episodes=16, interval=5000)


def test_minimal_config_gets_defaults():
    cfg = parse_trial_config(MINIMAL)
    assert cfg == TrialConfig(algorithm="qmix", env="matrix:two_step", steps=1000)
    assert cfg.seed == 0 and cfg.env_config == {} and cfg.plasticity == {"method": "none"}
    assert cfg.training == TrainingConfig() and cfg.evaluation == EvaluationConfig()
    assert cfg.name is None


def test_full_config_round_trips_through_to_dict():
    cfg = parse_trial_config(
        with_(
            algorithm="vdn",
            env="matrix:custom",
            env_config={"payoff": [[1, 0], [0, 1]]},
            seed=3,
            name="my-run_1",
            training={"lr": 5e-4, "optimizer": "rmsprop"},
            evaluation={"episodes": 4, "interval": 100},
            plasticity={"method": "none"},
        )
    )
    assert cfg.training.lr == 5e-4 and cfg.training.optimizer == "rmsprop"
    assert cfg.evaluation == EvaluationConfig(episodes=4, interval=100)
    d = cfg.to_dict()
    assert d["name"] == "my-run_1" and d["training"]["optimizer"] == "rmsprop"
    assert parse_trial_config(d) == cfg
    d["env_config"]["payoff"][0][0] = 99  # to_dict hands out a copy
    assert cfg.env_config["payoff"][0][0] == 1


def test_config_is_frozen():
    cfg = parse_trial_config(MINIMAL)
    with pytest.raises(AttributeError):
        cfg.steps = 5  # type: ignore[misc]


def test_yaml_1_1_exponent_strings_and_integral_floats_are_numbers(tmp_path):
    # PyYAML reads `5e-4` and `1e5` as strings; users write them anyway.
    path = write(
        tmp_path,
        "algorithm: qmix\nenv: matrix:two_step\nsteps: 1e5\n"
        "training: {lr: 5e-4, epsilon_anneal_steps: 2.0e3}\n",
    )
    cfg = load_trial_config(path)
    assert cfg.steps == 100_000 and isinstance(cfg.steps, int)
    assert cfg.training.lr == 5e-4 and isinstance(cfg.training.lr, float)
    assert cfg.training.epsilon_anneal_steps == 2000
    assert isinstance(cfg.training.epsilon_anneal_steps, int)


def test_shipped_two_step_config_loads():
    cfg = load_trial_config(ROOT / "tune_configs" / "train_two_step.yaml")
    assert cfg.algorithm == "qmix" and cfg.env == "matrix:two_step" and cfg.steps > 0
    assert cfg.training.td_lambda == 0.0


# Each bad input -> substrings its message must hold (field path and what is allowed).
BAD = [
    (with_(algorithm="qtran"), ["algorithm: unknown 'qtran'", "allowed: qmix, vdn"]),
    ({"env": "matrix:two_step", "steps": 10}, ["algorithm: required", "qmix, vdn"]),
    ({"algorithm": "qmix", "steps": 10}, ["env: required"]),
    ({"algorithm": "qmix", "env": "matrix:two_step"}, ["steps: required", "> 0"]),
    (with_(env="foo:bar"), ["env:", "'foo:bar'", "matrix:two_step"]),
    (with_(env=3), ["env: must be"]),
    (with_(env="matrix:custom", env_config={"payoff": [[1, 2], [3]]}), ["env_config.payoff"]),
    (with_(env_config={"bogus": 1}), ["env_config", "'bogus'"]),
    (with_(env_config=[1, 2]), ["env_config: must be a mapping"]),
    (with_(steps=-5), ["steps: must be an integer > 0", "-5"]),
    (with_(steps=0), ["steps: must be an integer > 0"]),
    (with_(steps=True), ["steps: must be an integer > 0", "True"]),
    (with_(steps=10.5), ["steps: must be an integer > 0"]),
    (with_(steps="lots"), ["steps: must be an integer > 0"]),
    (with_(seed=-1), ["seed: must be an integer >= 0"]),
    (with_(seed=1.5), ["seed: must be an integer >= 0"]),
    (with_(name="a/b"), ["name: must be a folder-safe string"]),
    (with_(stepz=10), ["unknown top-level key 'stepz'", "did you mean 'steps'", "algorithm"]),
    (
        with_(tasks=[{"env": "matrix:penalty"}]),
        ["tasks[0].steps", "required"],
    ),
    (with_(plasticity={"method": "knifee"}), ["plasticity.method: unknown 'knifee'", "knife"]),
    (with_(plasticity={"monitor": {"tau": 1.5}}), ["plasticity.monitor.tau", "(0, 1]"]),
    (with_(plasticity={"monitor": {"tau": 0.0}}), ["plasticity.monitor.tau", "(0, 1]"]),
    (
        with_(plasticity={"options": {"knife": {"scope": "critic"}}}),
        ["plasticity.options.knife.scope", "agent"],
    ),
    (
        with_(plasticity={"method": "redo", "tau": 0.1}),
        ["plasticity.tau: ambiguous", "plasticity.monitor.tau", "plasticity.options.redo.tau"],
    ),
    (
        with_(plasticity={"on_task_switch": True}),
        ["plasticity.on_task_switch", "plasticity.options.", "method, monitor, options"],
    ),
    (with_(plasticity={"monitor": {"taux": 0.1}}), ["plasticity.monitor.taux", "tau, beta"]),
    (with_(plasticity={"options": {"knifee": {}}}), ["plasticity.options.knifee", "knife"]),
    (
        with_(plasticity={"options": {"redo": {"units": "random"}}}),
        ["plasticity.options.redo.units", "every_n_updates"],
    ),
    (
        with_(plasticity={"method": "redo", "bogus": 1}),
        ["plasticity.bogus: unknown key", "method, monitor, options"],
    ),
    (
        with_(algorithm="vdn", plasticity={"method": "reborn"}),
        ["plasticity.method", "vdn does not have"],
    ),
    (
        with_(training={"lrr": 1e-3}),
        ["training: unknown key 'lrr'", "did you mean 'lr'", "allowed: lr, optimizer"],
    ),
    (with_(training={"mixer": "qmix"}), ["training.mixer", "algorithm", "qmix, vdn"]),
    (with_(training=[1]), ["training: must be a mapping"]),
    (with_(training={"lr": 0}), ["training.lr: must be a number > 0"]),
    (with_(training={"lr": -1e-3}), ["training.lr: must be a number > 0"]),
    (with_(training={"lr": "fast"}), ["training.lr: must be a number > 0", "'fast'"]),
    (with_(training={"lr": float("nan")}), ["training.lr: must be a number > 0"]),
    (
        with_(training={"optimizer": "sgd"}),
        ["training.optimizer: unknown 'sgd'", "allowed: adam, rmsprop"],
    ),
    (with_(training={"gamma": 0}), ["training.gamma: must be a number in (0, 1]"]),
    (with_(training={"gamma": 1.5}), ["training.gamma: must be a number in (0, 1]"]),
    (with_(training={"td_lambda": -0.1}), ["training.td_lambda: must be a number in [0, 1]"]),
    (with_(training={"double_q": 1}), ["training.double_q: must be true or false"]),
    (with_(training={"double_q": "yes please"}), ["training.double_q: must be true or false"]),
    (with_(training={"grad_clip": 0}), ["training.grad_clip: must be a number > 0"]),
    (with_(training={"batch_size": 0}), ["training.batch_size: must be an integer >= 1"]),
    (with_(training={"batch_size": True}), ["training.batch_size: must be an integer >= 1"]),
    (
        with_(training={"batch_size": 64, "buffer_size": 32, "learning_starts": 32}),
        ["training.buffer_size: must be >= training.batch_size (64)"],
    ),
    (
        with_(training={"learning_starts": 8}),
        ["training.learning_starts: must be in [training.batch_size, training.buffer_size]"],
    ),
    (
        with_(training={"target_update_interval": 0}),
        ["training.target_update_interval: must be an integer >= 1"],
    ),
    (
        with_(training={"epsilon_start": 1.5}),
        ["training.epsilon_start: must be a number in [0, 1]"],
    ),
    (
        with_(training={"epsilon_finish": -0.1}),
        ["training.epsilon_finish: must be a number in [0, 1]"],
    ),
    (
        with_(training={"epsilon_anneal_steps": 0}),
        ["training.epsilon_anneal_steps: must be an integer >= 1"],
    ),
    (
        with_(training={"agent_hidden_dim": 0}),
        ["training.agent_hidden_dim: must be an integer >= 1"],
    ),
    (
        with_(training={"mixer_embed_dim": 2.5}),
        ["training.mixer_embed_dim: must be an integer >= 1"],
    ),
    (with_(training={"hypernet_dim": -1}), ["training.hypernet_dim: must be an integer >= 1"]),
    (
        with_(training={"updates_per_episode": 0}),
        ["training.updates_per_episode: must be a number > 0"],
    ),
    (
        with_(training={"standardise_rewards": "no"}),
        ["training.standardise_rewards: must be true or false"],
    ),
    (
        with_(training={"num_env_runners": -1}),
        ["training.num_env_runners: must be an integer >= 0"],
    ),
    (
        with_(training={"torch_threads": -1}),
        ["training.torch_threads: must be an integer >= 0 (0: torch's default)"],
    ),
    (
        with_(training={"obs_last_action": "sometimes"}),
        ["training.obs_last_action: must be true or false"],
    ),
    (
        with_(training={"device": "tpu"}),
        ["training.device: unknown 'tpu'", "allowed: cpu, cuda, auto"],
    ),
    (with_(evaluation={"episodes": 0}), ["evaluation.episodes: must be an integer >= 1"]),
    (with_(evaluation={"interval": -10}), ["evaluation.interval: must be an integer >= 1"]),
    (with_(evaluation={"every": 10}), ["evaluation: unknown key 'every'", "episodes, interval"]),
    ("not a mapping", ["config: must be a mapping"]),
]


@pytest.mark.parametrize("mapping, expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config_message_names_field_and_allowed(mapping, expected):
    with pytest.raises(ConfigError) as info:
        parse_trial_config(mapping)
    for part in expected:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- files -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_trial_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_trial_config(write(tmp_path, "algorithm: [qmix\n"))


def test_yaml_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_trial_config(write(tmp_path, "- qmix\n- vdn\n"))


def test_empty_yaml_reports_the_first_required_key(tmp_path):
    with pytest.raises(ConfigError, match="algorithm: required"):
        load_trial_config(write(tmp_path, ""))


# --- overrides ---------------------------------------------------------------------------

YAML = """\
algorithm: qmix
env: matrix:two_step
steps: 1000
training:
  lr: 0.001
"""


def test_overrides_parse_values_as_yaml(tmp_path):
    cfg = load_trial_config(
        write(tmp_path, YAML),
        [
            "training.lr=0.0005",
            "steps=2000",
            "algorithm=vdn",
            "training.double_q=false",
            "evaluation.interval=250",
            "seed=7",
        ],
    )
    assert cfg.training.lr == 0.0005 and cfg.steps == 2000 and cfg.algorithm == "vdn"
    assert cfg.training.double_q is False and cfg.evaluation.interval == 250 and cfg.seed == 7


def test_overrides_reach_free_form_env_config(tmp_path):
    cfg = load_trial_config(
        write(tmp_path, YAML),
        ["env=matrix:custom", "env_config.payoff=[[1, 0], [0, 1]]"],
    )
    assert cfg.env_config == {"payoff": [[1, 0], [0, 1]]}


def test_override_value_may_contain_equals():
    out = apply_overrides({"name": "x"}, ["name=a=b"])
    assert out["name"] == "a=b"


def test_overrides_do_not_mutate_input():
    raw = {"training": {"lr": 0.1}}
    apply_overrides(raw, ["training.lr=0.2"])
    assert raw == {"training": {"lr": 0.1}}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.lrr=1", ["--set training.lrr", "no such key 'lrr' in training", "lr,"]),
        ("trainin.lr=1", ["--set trainin.lr", "no such key 'trainin'", "training"]),
        ("evaluation.every=3", ["--set evaluation.every", "'every'", "episodes, interval"]),
        ("steps.max=3", ["--set steps.max", "'steps' is not a mapping"]),
        ("training.lr.x=3", ["--set training.lr.x", "'training.lr' is not a mapping"]),
        ("training.lr", ["expected KEY=VALUE"]),
        ("training..lr=1", ["empty key"]),
        ("training.lr=[1", ["not valid YAML"]),
    ],
)
def test_bad_override_is_named(tmp_path, override, expected):
    with pytest.raises(ConfigError) as info:
        load_trial_config(write(tmp_path, YAML), [override])
    for part in expected:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


def test_override_result_is_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.lr: must be a number > 0"):
        load_trial_config(write(tmp_path, YAML), ["training.lr=-1"])


# --- flatten -----------------------------------------------------------------------------


def test_flatten_dotted_string_values():
    flat = flatten(
        {"a": 1, "b": {"c": True, "d": {"e": 0.5}}, "f": [[1, 2], [3, 4]], "g": {}, "h": None}
    )
    assert flat == {
        "a": "1",
        "b.c": "True",
        "b.d.e": "0.5",
        "f": "[[1, 2], [3, 4]]",
        "g": "{}",
        "h": "None",
    }


def test_flatten_trial_config_has_every_hyperparameter():
    flat = flatten(parse_trial_config(MINIMAL).to_dict())
    assert flat["algorithm"] == "qmix" and flat["training.lr"] == "0.001"
    assert flat["evaluation.interval"] == "5000" and flat["plasticity.method"] == "none"
    assert all(isinstance(v, str) for v in flat.values())
    from knife.fields import field_names
    from knife.policies.schema import TrainingConfig

    # one param per declared training key, none left out
    training = {k.removeprefix("training.") for k in flat if k.startswith("training.")}
    assert training == set(field_names(TrainingConfig)) and len(training) >= 25


def test_tasks_fill_env_and_steps_and_round_trip():
    cfg = parse_trial_config(
        {
            "algorithm": "qmix",
            "tasks": {
                "name": "two",
                "buffer_on_switch": "keep",
                "tasks": [
                    {"env": "matrix:climbing", "steps": 300},
                    {"env": "matrix:penalty", "env_config": {"k": -10}, "steps": 200},
                ],
            },
        }
    )
    assert cfg.env == "matrix:climbing" and cfg.steps == 500 and cfg.sequence_name == "two"
    assert cfg.tasks["buffer_on_switch"] == "keep"
    assert parse_trial_config(cfg.to_dict()) == cfg


def test_tasks_with_a_conflicting_budget_names_the_field():
    with pytest.raises(ConfigError, match="steps: with tasks"):
        parse_trial_config(
            {"algorithm": "qmix", "steps": 7, "tasks": [{"env": "matrix:climbing", "steps": 3}]}
        )
