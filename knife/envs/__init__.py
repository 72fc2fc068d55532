"""Team envs (DESIGN 4): matrix games, stag hunt, and the registry adapters plug into."""

from knife.envs.base import TeamEnv, TeamSpec, team_spaces
from knife.envs.matrix import MatrixGame, TwoStepGame
from knife.envs.registry import make, names, register, unregister, validate
from knife.envs.stag_hunt import StagHuntConfig, StagHuntEnv

__all__ = [
    "MatrixGame",
    "StagHuntConfig",
    "StagHuntEnv",
    "TeamEnv",
    "TeamSpec",
    "TwoStepGame",
    "make",
    "names",
    "register",
    "team_spaces",
    "unregister",
    "validate",
]
