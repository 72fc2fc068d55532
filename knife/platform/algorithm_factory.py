"""TrialConfig -> the QMix algorithm of knife.policies.

The only place that knows how the platform's config maps onto QMixConfig, so sweeps and
`knife train` build identical algorithms. knife.policies (and so ray) is imported lazily:
validating a config must not pay for importing Ray.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from knife.platform.config import ConfigError, TrialConfig
from knife.policies.schema import EVALUATION_ATTRS, PLATFORM_KEYS

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig


def resolve_device(device: str) -> str:
    """'cpu' | 'cuda' | 'auto' -> 'cpu' or 'cuda'; asking for a GPU that is not there fails."""
    if device == "cpu":
        return "cpu"
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "training.device: 'cuda' asked for, but torch sees no GPU; allowed here: cpu, auto"
        )
    return "cuda" if has_cuda else "cpu"


def training_kwargs(cfg: TrialConfig) -> dict[str, Any]:
    """The keyword arguments QMixConfig.training() gets for this trial: the schema's keys
    under their QMixConfig names (knife.policies.schema)."""
    kwargs = {k: v for k, v in asdict(cfg.training).items() if k not in PLATFORM_KEYS}
    kwargs.update({EVALUATION_ATTRS[k]: v for k, v in asdict(cfg.evaluation).items()})
    kwargs["algorithm"] = cfg.algorithm
    return kwargs


def algorithm_config(cfg: TrialConfig, device: str | None = None) -> AlgorithmConfig:
    """The QMixConfig of a trial (not built), e.g. for Tune. `device` ('cpu' | 'cuda'), if
    given, replaces resolving `training.device` against this process's own GPUs (a sweep
    driver on a cluster head without a GPU asks for the cluster's)."""
    from knife.policies import QMixConfig

    use_gpu = (device or resolve_device(cfg.training.device)) == "cuda"
    config = (
        QMixConfig()
        .environment(env=cfg.env, env_config=dict(cfg.env_config))
        .training(**training_kwargs(cfg))
        .learners(num_gpus_per_learner=1 if use_gpu else 0)
        .plasticity(**cfg.plasticity)
        .tasks(cfg.tasks)
        .debugging(seed=cfg.seed)
    )
    # One result per test at most, so every test reaches MLflow at the step it ran.
    config.min_sample_timesteps_per_iteration = min(1000, cfg.evaluation.interval)
    return config


def build_algorithm(cfg: TrialConfig) -> Algorithm:
    """Build the trial's algorithm (needs Ray running)."""
    return algorithm_config(cfg).build_algo()
