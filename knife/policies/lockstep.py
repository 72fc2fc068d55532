"""Lockstep sampling: N envs of a vector env, one batched forward pass per step.

`LockstepSampler` plays the N training envs of one EnvRunner (knife/envs/vector.py): at each
step one forward pass of the module over the N x n_agents observations picks every env's
joint action, and one vector-env step advances them. Two ways to treat an env whose
episode has ended:

* `carry=True` (the EnvRunner's): the env is reset at once, alone, and plays on; a call
  returns once `num_episodes` episodes have ended, and the episodes still being played are
  carried into the next call, as RLlib's own EnvRunners carry theirs. No env ever waits, so
  the cost per env step does not depend on how much episode lengths vary (SMAX battles last
  from about 20 to 200 steps), and no episode length is favoured: every episode an env
  starts is handed over whole once it ends (those in flight when the runner switches task
  are dropped with the old task's envs).
* `carry=False` (`play_episodes`, EPyMARL's parallel runner): one episode per env; an env
  whose episode has ended waits for the others.

Epsilon follows t0 (the env steps of the episodes already handed over) plus every step
taken since, in flight or in this call, all envs counted. Each env is seeded at its first
reset and continues its own random stream afterwards, so env k plays the episodes a single
env seeded like it plays (tests/policies/test_vectorized_sampling.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from knife.envs.vector import VectorTeamEnv, as_vector_env
from knife.policies.episode import Episode


class LockstepSampler:
    """The N envs of `venv` in lockstep; `seeds` seed each env's first reset."""

    def __init__(self, venv: VectorTeamEnv, seeds: list[int | None] | None = None) -> None:
        self.venv = venv
        n, team = venv.num_envs, venv.team
        self._seeds = [None] * n if seeds is None else list(seeds)
        limit, agents = team.episode_limit, team.n_agents
        self._obs = np.zeros((n, limit + 1, agents, team.obs_dim), np.float32)
        self._state = np.zeros((n, limit + 1, team.state_dim), np.float32)
        self._avail = np.zeros((n, limit + 1, agents, team.n_actions), np.float32)
        self._actions = np.zeros((n, limit, agents), np.int64)
        self._rewards = np.zeros((n, limit), np.float32)
        self._lengths = np.zeros(n, np.int64)
        self._joint = np.zeros((n, agents), np.int64)  # waiting envs' rows: ignored
        self._hidden: dict[str, torch.Tensor] | None = None  # None: no episode in flight
        self._mask = None if venv.agent_mask is None else np.asarray(venv.agent_mask, np.float32)

    def _record_start(self, obs: dict[str, np.ndarray], rows: np.ndarray, module: Any) -> None:
        self._obs[rows, 0] = obs["obs"][rows]
        self._state[rows, 0] = obs["state"][rows]
        self._avail[rows, 0] = obs["avail_actions"][rows]
        self._lengths[rows] = 0
        initial = module.get_initial_state()
        if self._hidden is None:
            n = self.venv.num_envs
            self._hidden = {
                k: v.unsqueeze(0).repeat(n, *([1] * v.dim())) for k, v in initial.items()
            }
        else:
            for key, v in initial.items():
                self._hidden[key][rows] = v

    def _episode(self, k: int, terminated: bool, info: dict[str, Any]) -> Episode:
        length = int(self._lengths[k])
        # Copies: the sampler's buffers are reused by env k's next episode.
        return Episode(
            obs=self._obs[k, : length + 1].copy(),
            state=self._state[k, : length + 1].copy(),
            avail_actions=self._avail[k, : length + 1].copy(),
            actions=self._actions[k, :length].copy(),
            rewards=self._rewards[k, :length].copy(),
            terminated=terminated,
            info=dict(info),
            agent_mask=self._mask,
        )

    @torch.no_grad()
    def sample(
        self, module: Any, *, num_episodes: int, explore: bool, t0: int = 0, carry: bool = True
    ) -> list[tuple[int, Episode]]:
        """Play until `num_episodes` episodes have ended (with carry=False: one per env,
        whatever `num_episodes` says); returns them whole, as (env index, episode) in the
        order they ended."""
        venv, n = self.venv, self.venv.num_envs
        all_rows = np.arange(n)
        if self._hidden is None or not carry:  # the first call, or a fresh round
            obs, _ = venv.reset(self._seeds)
            self._seeds = [None] * n  # seeded once: later resets continue each stream
            self._hidden = None
            self._record_start(obs, all_rows, module)
            if not carry:
                num_episodes = n
        active = np.ones(n, bool)
        done: list[tuple[int, Episode]] = []
        # Epsilon at every env step taken so far: t0 counts the steps of episodes already
        # handed over, the episodes in flight add theirs.
        taken = int(self._lengths.sum())
        while len(done) < num_episodes:
            playing = np.flatnonzero(active)
            t = self._lengths[playing]
            batch = {
                Columns.OBS: {
                    "obs": torch.from_numpy(self._obs[playing, t]),
                    "avail_actions": torch.from_numpy(self._avail[playing, t]),
                },
                Columns.STATE_IN: {key: v[playing] for key, v in self._hidden.items()},
            }
            if explore:
                out = module.forward_exploration(batch, t=t0 + taken)
            else:
                out = module.forward_inference(batch)
            for key, v in out[Columns.STATE_OUT].items():
                self._hidden[key][playing] = v
            self._joint[playing] = out[Columns.ACTIONS].numpy()
            obs, rewards, term, trunc, infos = venv.step(self._joint, active)
            self._actions[playing, t] = self._joint[playing]
            self._rewards[playing, t] = rewards[playing]
            self._lengths[playing] = t = t + 1
            self._obs[playing, t] = obs["obs"][playing]
            self._state[playing, t] = obs["state"][playing]
            self._avail[playing, t] = obs["avail_actions"][playing]
            taken += len(playing)
            ended = playing[(term | trunc)[playing] | (t >= venv.team.episode_limit)]
            done += [(int(k), self._episode(k, bool(term[k]), infos[k])) for k in ended]
            if not len(ended):
                continue
            if carry:  # start their next episodes (played on now, or in the next call)
                restart = np.zeros(n, bool)
                restart[ended] = True
                obs, _ = venv.reset([None] * n, restart)
                self._record_start(obs, ended, module)
            else:
                active[ended] = False
        return done


@torch.no_grad()
def play_episodes(
    envs: VectorTeamEnv | list[Any],
    module: Any,
    *,
    explore: bool,
    t0: int = 0,
    seeds: list[int | None] | None = None,
) -> list[Episode]:
    """One complete episode on each of N envs (a VectorTeamEnv, or a list of team envs) in
    lockstep; an env whose episode has ended waits. Episode k is env k's."""
    venv = as_vector_env(envs)
    sampler = LockstepSampler(venv, seeds)
    played = sampler.sample(module, num_episodes=venv.num_envs, explore=explore, t0=t0, carry=False)
    return [ep for _, ep in sorted(played, key=lambda pair: pair[0])]


def lockstep_rounds(sampler: LockstepSampler, module: Any, num_episodes: int) -> list[Episode]:
    """`num_episodes` greedy episodes (tests, random-policy baselines) in rounds of one
    episode per env, each round from fresh resets with the module as it is now (no episode
    carries over into a later test with other weights); the first `num_episodes`, in env
    order round by round."""
    episodes: list[Episode] = []
    while len(episodes) < num_episodes:
        played = sampler.sample(module, num_episodes=0, explore=False, carry=False)
        episodes += [ep for _, ep in sorted(played, key=lambda pair: pair[0])]
    return episodes[:num_episodes]
