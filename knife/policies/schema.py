"""The hyperparameters of a trial: every default, range and doc written once (docs/design.md 5).

`TrainingConfig` and `EvaluationConfig` are the `training:` and `evaluation:` sections of a
trial YAML and, under the same names, the keyword arguments of `QMixConfig.training()`.
The YAML parser (knife.platform.config), `QMixConfig` (its defaults and `validate()`), the
RLModule (`model_config()`, no fallback defaults) and the sweep grid (it parses each trial)
all read these declarations, and `knife config` prints them.

Imports nothing heavy: validating a config must not import Ray or torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from knife.fields import (
    ConfigError,
    describe,
    field_names,
    ge0,
    ge1,
    gt0,
    spec,
    unit_closed,
    unit_half_open,
    validate_fields,
)


@dataclass(frozen=True)
class TrainingConfig:
    """QMIX/VDN hyperparameters (pymarl2/SMACv2 practice; docs/design.md 5)."""

    SECTION: ClassVar[str] = "training"

    lr: float = spec(1e-3, float, "optimizer learning rate", check=gt0, allowed="a number > 0")
    optimizer: str = spec(
        "adam", str, "adam, or rmsprop with pymarl's settings", choices=("adam", "rmsprop")
    )
    gamma: float = spec(
        0.99, float, "discount factor", check=unit_half_open, allowed="a number in (0, 1]"
    )
    td_lambda: float = spec(
        0.6,
        float,
        "lambda of the TD(lambda) targets",
        check=unit_closed,
        allowed="a number in [0, 1]",
    )
    double_q: bool = spec(True, bool, "double Q: online argmax, target evaluation")
    grad_clip: float = spec(
        10.0, float, "global gradient-norm clip", check=gt0, allowed="a number > 0"
    )
    batch_size: int = spec(
        32, int, "episodes per learner update", check=ge1, allowed="an integer >= 1 (episodes)"
    )
    buffer_size: int = spec(
        5000, int, "replay buffer capacity", check=ge1, allowed="an integer >= 1 (episodes)"
    )
    target_update_interval: int = spec(
        200,
        int,
        "learner updates between hard target syncs",
        check=ge1,
        allowed="an integer >= 1 (learner updates)",
    )
    epsilon_start: float = spec(
        1.0,
        float,
        "exploration rate at env step 0",
        check=unit_closed,
        allowed="a number in [0, 1]",
    )
    epsilon_finish: float = spec(
        0.05,
        float,
        "exploration rate after the anneal",
        check=unit_closed,
        allowed="a number in [0, 1]",
    )
    epsilon_anneal_steps: int = spec(
        100_000,
        int,
        "env steps of the linear epsilon anneal",
        check=ge1,
        allowed="an integer >= 1 (env steps)",
    )
    agent_hidden_dim: int = spec(
        64, int, "GRU agent hidden units", check=ge1, allowed="an integer >= 1"
    )
    mixer_embed_dim: int = spec(
        32, int, "QMIX mixing-network embedding width", check=ge1, allowed="an integer >= 1"
    )
    hypernet_dim: int = spec(
        64, int, "QMIX hypernetwork hidden units", check=ge1, allowed="an integer >= 1"
    )
    learning_starts: int = spec(
        32,
        int,
        "episodes in the buffer before the first update",
        check=ge1,
        allowed="an integer >= 1 (episodes in the buffer)",
    )
    updates_per_episode: float = spec(
        1.0, float, "learner updates per collected episode", check=gt0, allowed="a number > 0"
    )
    standardise_rewards: bool = spec(False, bool, "standardize rewards by running statistics")
    obs_last_action: bool = spec(
        True,
        bool,
        "agent input includes its last action (pymarl's default; EPyMARL's QMIX turns it off)",
    )
    episodes_per_runner: int = spec(
        1, int, "episodes each EnvRunner plays per iteration", check=ge1, allowed="an integer >= 1"
    )
    num_env_runners: int = spec(
        0,
        int,
        "remote EnvRunner actors (0: sample in the driver)",
        check=ge0,
        allowed="an integer >= 0",
    )
    num_envs_per_env_runner: int = spec(
        1,
        int,
        "training envs each EnvRunner steps in lockstep with one batched forward pass "
        "(EPyMARL's batch_size_run); an iteration collects N x episodes_per_runner whole "
        "episodes, those still in flight carry over (docs/design.md 4)",
        check=ge1,
        allowed="an integer >= 1",
    )
    sample_while_learning: bool = spec(
        True, bool, "with remote runners: play the next episodes while the learner updates"
    )
    torch_threads: int = spec(
        1,
        int,
        "torch intra-op threads per process (0: torch's default)",
        check=ge0,
        allowed="an integer >= 0 (0: torch's default)",
    )
    device: str = spec(
        "cpu",
        str,
        "where the learner runs (auto: cuda when torch sees a GPU)",
        choices=("cpu", "cuda", "auto"),
    )
    system_metrics_interval_s: float = spec(
        10.0,
        float,
        "seconds between MLflow system-metrics samples of the trial's machine (CPU, memory, "
        "disk, network; GPU when present), logged as system/...; 0: off",
        check=ge0,
        allowed="a number >= 0 (0: off)",
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.SECTION)
        # Cross-field rules: a batch must fit in the buffer, and so must the warm-up.
        if self.buffer_size < self.batch_size:
            raise ConfigError(
                f"training.buffer_size: must be >= training.batch_size ({self.batch_size}), "
                f"got {self.buffer_size}"
            )
        if not self.batch_size <= self.learning_starts <= self.buffer_size:
            raise ConfigError(
                "training.learning_starts: must be in [training.batch_size, "
                f"training.buffer_size] = [{self.batch_size}, {self.buffer_size}] (episodes), "
                f"got {self.learning_starts}"
            )


@dataclass(frozen=True)
class EvaluationConfig:
    """Greedy test episodes and how often they run."""

    SECTION: ClassVar[str] = "evaluation"

    episodes: int = spec(
        16,
        int,
        "greedy test episodes per test",
        check=ge1,
        allowed="an integer >= 1 (greedy test episodes)",
    )
    interval: int = spec(
        5000,
        int,
        "env steps between tests",
        check=ge1,
        allowed="an integer >= 1 (env steps between tests)",
    )
    random_episodes: int = spec(
        32,
        int,
        "episodes of a uniformly random policy at each task's start (a sequence's "
        "task/<i>/random_return: knife report's 0 of a normalized score; 0: none)",
        check=ge0,
        allowed="an integer >= 0 (0: no random-policy episodes)",
    )

    def __post_init__(self) -> None:
        validate_fields(self, self.SECTION)


# Keys of TrainingConfig that are RLlib's own AlgorithmConfig settings, or the platform's:
# QMixConfig.training() takes the rest; RLlib's training() takes lr, gamma, grad_clip;
# num_env_runners and num_envs_per_env_runner are .env_runners()'s; device is resolved by
# the platform into .learners(num_gpus_per_learner=...); system_metrics_interval_s is the
# trial logger's.
RLLIB_KEYS = ("lr", "gamma", "grad_clip", "num_env_runners", "num_envs_per_env_runner")
PLATFORM_KEYS = ("device", "system_metrics_interval_s")
# What the RLModule builds from (RLlib passes these through `model_config`).
MODEL_KEYS = (
    "algorithm",
    "agent_hidden_dim",
    "obs_last_action",
    "mixer_embed_dim",
    "hypernet_dim",
    "epsilon_start",
    "epsilon_finish",
    "epsilon_anneal_steps",
)
# `evaluation.<key>` is `QMixConfig.test_<key>` (RLlib's own `evaluation_*` settings are a
# different mechanism, which this algorithm does not use).
EVALUATION_ATTRS = {
    "episodes": "test_episodes",
    "interval": "test_interval",
    "random_episodes": "test_random_episodes",
}
SECTIONS = (TrainingConfig, EvaluationConfig)
DEFAULT_ALGORITHM = "qmix"


# The QMixConfig attributes the schema owns (everything but the platform's keys).
ALGORITHM_KEYS: tuple[str, ...] = (
    "algorithm",
    *(k for k in field_names(TrainingConfig) if k not in PLATFORM_KEYS),
    *EVALUATION_ATTRS.values(),
)


def defaults() -> dict[str, Any]:
    """QMixConfig attribute -> default, for every key the schema owns."""
    out = asdict(TrainingConfig())
    out.update({EVALUATION_ATTRS[k]: v for k, v in asdict(EvaluationConfig()).items()})
    return out


def check_values(values: dict[str, Any]) -> tuple[TrainingConfig, EvaluationConfig]:
    """Both sections built (and so validated) from QMixConfig attribute values; missing keys
    take their defaults."""
    names = field_names(TrainingConfig)
    training = TrainingConfig(**{k: v for k, v in values.items() if k in names})
    evaluation = EvaluationConfig(
        **{k: values[attr] for k, attr in EVALUATION_ATTRS.items() if attr in values}
    )
    return training, evaluation


def model_config(**overrides: Any) -> dict[str, Any]:
    """A complete `model_config` for QMixRLModule: schema defaults, then `overrides`."""
    values = {"algorithm": DEFAULT_ALGORITHM, **defaults(), **overrides}
    unknown = set(overrides) - set(MODEL_KEYS)
    if unknown:
        raise ConfigError(f"model_config: unknown {sorted(unknown)}; allowed: {MODEL_KEYS}")
    check_values(values)
    return {k: values[k] for k in MODEL_KEYS}


def schema_rows() -> list:
    """The `knife config` rows of these sections."""
    return [row for cls in SECTIONS for row in describe(cls, cls.SECTION)]
