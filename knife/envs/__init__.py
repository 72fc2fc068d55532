"""Team envs (DESIGN 4): matrix games, stag hunt, PettingZoo, padding and task sequences,
and the registry adapters plug into."""

from knife.envs import pettingzoo_adapter  # noqa: F401  (registers the pettingzoo: family)
from knife.envs.base import TeamEnv, TeamSpec, team_spaces
from knife.envs.matrix import MatrixGame, TwoStepGame
from knife.envs.padding import PaddedTeamEnv, agent_mask, padded_spec
from knife.envs.pettingzoo_adapter import PettingZooTeamEnv
from knife.envs.registry import make, make_vector, names, register, unregister, validate
from knife.envs.smacv2 import register_smacv2
from knife.envs.smax import register_smax
from knife.envs.stag_hunt import StagHuntConfig, StagHuntEnv
from knife.envs.tasks import Task, TaskSequence, env_family, preset, presets
from knife.envs.vector import PaddedVectorEnv, SerialVectorEnv, VectorTeamEnv

# Adapters whose heavy dependencies (jax, StarCraft II) load only when an env is built.
register_smax()
register_smacv2()

__all__ = [
    "MatrixGame",
    "PaddedTeamEnv",
    "PaddedVectorEnv",
    "PettingZooTeamEnv",
    "SerialVectorEnv",
    "StagHuntConfig",
    "StagHuntEnv",
    "Task",
    "TaskSequence",
    "TeamEnv",
    "TeamSpec",
    "TwoStepGame",
    "VectorTeamEnv",
    "agent_mask",
    "env_family",
    "make",
    "make_vector",
    "names",
    "padded_spec",
    "preset",
    "presets",
    "register",
    "team_spaces",
    "unregister",
    "validate",
]
