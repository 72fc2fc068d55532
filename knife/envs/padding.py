"""Padding a team env up to a larger TeamSpec, so one network serves a whole task sequence.

`PaddedTeamEnv(env, spec)` exposes `env` (a team env, DESIGN 4) with the sizes of `spec`,
each of which must be >= the env's own:

* obs / state: the env's features first, then zeros up to `spec.obs_dim` / `spec.state_dim`.
* actions: the env's actions keep their indices; padded actions (index >= the env's
  n_actions) are never available (avail 0) for real agents.
* agents: the env's agents are agents 0 .. n_real-1, in the env's order; the *trailing*
  agents n_real .. spec.n_agents-1 are padded. A padded agent observes zeros and has only
  action 0 available (so an argmax or a sampler over available actions always has exactly
  one legal choice); its actions are ignored: the wrapped env never sees them.
* episode_limit: the env ends its episodes by itself (terminated or truncated at its own
  limit, info['episode_limit'] as it reports); the larger limit only sizes buffers.

Stepping a real agent with a padded or currently unavailable action raises ValueError:
a learner that masks correctly never does it, so it is a bug worth failing loudly on.

Padded agents and Q_tot (decision)
----------------------------------
The observation Dict stays exactly the contract's (obs, state, avail_actions) and `info`
passes through unchanged: nothing in them marks padded agents, and "zero obs and only
action 0 available" cannot identify them, since a real agent (a dead SMAC unit, say) can
look the same. Which agents are padded is a fact of the (real spec, padded spec) pair,
fixed for a whole task: `agent_mask(real, padded)` (also `PaddedTeamEnv.agent_mask` and
`TaskSequence.agent_mask(i)`) is a bool array [n_agents], True for real agents. The learner
must zero padded agents' chosen Q-values before the mixer (QMIX and VDN alike), and their
target values likewise, using the mask of the task each episode came from (with
`buffer_on_switch: keep` one batch mixes tasks, so the mask or task index travels with each
episode); then padded agents never contribute to Q_tot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import numpy as np

from knife.envs.base import TeamEnv, TeamSpec

# TeamSpec fields that padding may only grow (has_win is a flag, combined with `any`).
_SIZES = ("n_agents", "n_actions", "obs_dim", "state_dim", "episode_limit")


def padded_spec(specs: Iterable[TeamSpec]) -> TeamSpec:
    """The smallest spec every given spec fits into: elementwise max, has_win = any."""
    specs = list(specs)
    if not specs:
        raise ValueError("padded_spec: needs at least one TeamSpec")
    sizes = {name: max(getattr(s, name) for s in specs) for name in _SIZES}
    return TeamSpec(**sizes, has_win=any(s.has_win for s in specs))


def check_fits(real: TeamSpec, padded: TeamSpec) -> None:
    """ValueError naming the first size of `real` that `padded` cannot hold."""
    for f in fields(TeamSpec):
        if f.name in _SIZES and getattr(real, f.name) > getattr(padded, f.name):
            raise ValueError(
                f"padding: {f.name} {getattr(real, f.name)} of the env exceeds "
                f"{getattr(padded, f.name)} of the padded spec; pad to padded_spec([...]) "
                f"over every task"
            )


def agent_mask(real: TeamSpec, padded: TeamSpec) -> np.ndarray:
    """bool [padded.n_agents]: True for the env's own agents, False for padded ones."""
    check_fits(real, padded)
    mask = np.zeros(padded.n_agents, bool)
    mask[: real.n_agents] = True
    return mask


class PaddedTeamEnv(TeamEnv):
    """`env` seen through the larger `spec`; see the module docstring for the rules."""

    def __init__(self, env: TeamEnv, spec: TeamSpec) -> None:
        check_fits(env.team, spec)
        self.env = env
        self.real = env.team
        self.name = f"padded({getattr(env, 'name', type(env).__name__)})"
        self._set_team(spec)
        self.agent_mask = agent_mask(self.real, spec)
        self._n, self._a = self.real.n_agents, self.real.n_actions
        # Avail rows of padded agents never change: only action 0.
        self._avail_template = np.zeros((spec.n_agents, spec.n_actions), np.float32)
        self._avail_template[self._n :, 0] = 1.0
        self._real_avail = np.zeros((self._n, self._a), np.float32)
        self._done = True

    def _pad(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec, n = self.team, self._n
        out_obs = np.zeros((spec.n_agents, spec.obs_dim), np.float32)
        out_obs[:n, : self.real.obs_dim] = obs["obs"]
        out_state = np.zeros(spec.state_dim, np.float32)
        out_state[: self.real.state_dim] = obs["state"]
        avail = self._avail_template.copy()
        avail[:n, : self._a] = obs["avail_actions"]
        # Kept to refuse unavailable actions in step(); a copy, the env may reuse its array.
        self._real_avail[:] = obs["avail_actions"]
        return {"obs": out_obs, "state": out_state, "avail_actions": avail}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._done = False
        return self._pad(obs), info

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(f"{self.name}: step() after the episode ended; call reset()")
        joint = np.asarray(actions)
        if joint.shape != (self.team.n_agents,) or joint.dtype.kind not in "iu":
            raise ValueError(
                f"actions: expected an integer array of shape ({self.team.n_agents},), "
                f"got shape {joint.shape} dtype {joint.dtype}"
            )
        if joint.min() < 0 or joint.max() >= self.team.n_actions:
            raise ValueError(
                f"actions: each action must be in [0, {self.team.n_actions - 1}], "
                f"got {joint.tolist()}"
            )
        # Padded agents' entries are dropped here: the wrapped env never sees them.
        real = joint[: self._n].astype(np.int64)
        padded = real >= self._a
        bad = padded.copy()
        bad[~padded] = self._real_avail[np.flatnonzero(~padded), real[~padded]] == 0.0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = "a padded action" if padded[i] else "unavailable"
            raise ValueError(
                f"actions: agent {i} chose action {int(real[i])}, which is {kind} "
                f"(the env has {self._a} actions; available now: "
                f"{np.flatnonzero(self._real_avail[i]).tolist()}); padded and unavailable "
                f"actions must be masked"
            )
        obs, reward, terminated, truncated, info = self.env.step(real)
        self._done = bool(terminated or truncated)
        return self._pad(obs), reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()
