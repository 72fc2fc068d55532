"""TeamEnvRunner: an RLlib EnvRunner that plays whole team episodes.

RLlib's SingleAgentEnvRunner wraps envs in gymnasium's vector API and runs generic
connector pipelines on every step; for a team env with a stateful module that picks the
joint action itself, that machinery costs about as much as the env and the network
together (DESIGN 11). This runner steps one team env directly with the RLModule and hands
back `Episode`s (numpy arrays), ready for the episode replay buffer. It is still a real
EnvRunner: EnvRunnerGroup creates it locally or as Ray actors, syncs the Learner's weights
into it through `set_state`, and health-checks it.

Seeding: the training env is seeded once, at its first reset, with seed + worker index;
later resets continue that env's random stream, so consecutive episodes start differently.
The greedy test env is a separate instance with its own seed, so testing never perturbs
the training stream or the step counters that drive epsilon.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import numpy as np
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env import INPUT_ENV_SPACES
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME, WEIGHTS_SEQ_NO

from knife import envs
from knife.policies.episode import Episode

TEST_SEED_OFFSET = 1_000_000


class TeamEnvRunner(EnvRunner, Checkpointable):
    """Collects complete episodes of a team env with the (inference-only) QMIX module."""

    def __init__(self, *, config, **kwargs) -> None:
        super().__init__(config=config, **kwargs)
        self.env = None
        self.test_env = None
        self.module = None
        self._weights_seq_no = 0
        self.make_env()
        self.make_module()

    # --- construction ----------------------------------------------------------------

    def make_env(self) -> None:
        for env in (self.env, self.test_env):
            if env is not None:
                env.close()
        name, env_config = self.config.env, dict(self.config.env_config or {})
        self.env = envs.make(name, **env_config)
        self.test_env = envs.make(name, **env_config)
        base = 0 if self.config.seed is None else int(self.config.seed)
        self._train_seed: int | None = base + 1000 * (self.worker_index or 0)
        self._test_seed: int | None = base + TEST_SEED_OFFSET + 1000 * (self.worker_index or 0)

    def make_module(self) -> None:
        spec = self.config.get_rl_module_spec(spaces=self.get_spaces(), inference_only=True)
        self.module = spec.build()
        self.module.eval()

    def get_spaces(self) -> dict[str, tuple]:
        spaces = (self.env.observation_space, self.env.action_space)
        return {INPUT_ENV_SPACES: spaces, DEFAULT_MODULE_ID: spaces}

    def assert_healthy(self) -> None:
        assert self.env is not None and self.module is not None

    # --- sampling --------------------------------------------------------------------

    def sample(
        self,
        *,
        num_episodes: int = 1,
        explore: bool = True,
        global_env_steps: int = 0,
        **kwargs,
    ) -> dict[str, Any]:
        """Play `num_episodes` complete episodes.

        explore=True uses the training env and epsilon-greedy actions (epsilon from
        `global_env_steps` plus the steps taken in this call); explore=False plays greedy
        test episodes on the separate test env. Returns {"episodes", "env_steps", "seconds"}.
        """
        start = time.perf_counter()
        episodes = []
        steps = 0
        for _ in range(num_episodes):
            ep = self._play_episode(explore, global_env_steps + steps)
            episodes.append(ep)
            steps += ep.length
        if explore:
            self.num_env_steps_sampled_lifetime += steps
        return {"episodes": episodes, "env_steps": steps, "seconds": time.perf_counter() - start}

    def _reset(self, explore: bool) -> dict[str, np.ndarray]:
        env = self.env if explore else self.test_env
        if explore:
            obs, _ = env.reset(seed=self._train_seed)
            self._train_seed = None
        else:
            obs, _ = env.reset(seed=self._test_seed)
            self._test_seed = None
        return obs

    @torch.no_grad()
    def _play_episode(self, explore: bool, t0: int) -> Episode:
        env = self.env if explore else self.test_env
        obs = self._reset(explore)
        limit = env.team.episode_limit
        n, a = env.team.n_agents, env.team.n_actions
        obs_buf = np.zeros((limit + 1, n, env.team.obs_dim), np.float32)
        state_buf = np.zeros((limit + 1, env.team.state_dim), np.float32)
        avail_buf = np.zeros((limit + 1, n, a), np.float32)
        actions_buf = np.zeros((limit, n), np.int64)
        rewards_buf = np.zeros(limit, np.float32)
        state = {k: v.unsqueeze(0) for k, v in self.module.get_initial_state().items()}
        terminated = truncated = False
        info: dict = {}
        t = 0
        while True:
            obs_buf[t], state_buf[t], avail_buf[t] = obs["obs"], obs["state"], obs["avail_actions"]
            if terminated or truncated:
                break
            batch = {
                Columns.OBS: {
                    "obs": torch.from_numpy(obs_buf[t]).unsqueeze(0),
                    "avail_actions": torch.from_numpy(avail_buf[t]).unsqueeze(0),
                },
                Columns.STATE_IN: state,
            }
            if explore:
                out = self.module.forward_exploration(batch, t=t0 + t)
            else:
                out = self.module.forward_inference(batch)
            state = out[Columns.STATE_OUT]
            actions = out[Columns.ACTIONS][0].numpy()
            obs, reward, terminated, truncated, info = env.step(actions)
            actions_buf[t] = actions
            rewards_buf[t] = reward
            t += 1
            if t >= limit and not terminated:
                truncated = True
        return Episode(
            obs=obs_buf[: t + 1].copy(),
            state=state_buf[: t + 1].copy(),
            avail_actions=avail_buf[: t + 1].copy(),
            actions=actions_buf[:t].copy(),
            rewards=rewards_buf[:t].copy(),
            terminated=bool(terminated),
            info=dict(info),
        )

    def get_metrics(self) -> dict:
        return {}

    # --- state (weights from the Learner) --------------------------------------------

    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        **kwargs,
    ) -> dict[str, Any]:
        state: dict[str, Any] = {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: self.num_env_steps_sampled_lifetime
        }
        if self._check_component(COMPONENT_RL_MODULE, components, not_components):
            state[COMPONENT_RL_MODULE] = self.module.get_state(**kwargs)
            state[WEIGHTS_SEQ_NO] = self._weights_seq_no
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        if COMPONENT_RL_MODULE in state:
            seq = state.get(WEIGHTS_SEQ_NO, 0)
            if seq == 0 or self._weights_seq_no < seq:
                module_state = state[COMPONENT_RL_MODULE]
                if isinstance(module_state, dict) and DEFAULT_MODULE_ID in module_state:
                    module_state = module_state[DEFAULT_MODULE_ID]
                self.module.set_state(module_state)
            if seq > 0:
                self._weights_seq_no = seq
        if NUM_ENV_STEPS_SAMPLED_LIFETIME in state:
            self.num_env_steps_sampled_lifetime = state[NUM_ENV_STEPS_SAMPLED_LIFETIME]

    def get_ctor_args_and_kwargs(self):
        return ((), {"config": self.config})

    def get_checkpointable_components(self):
        return [(COMPONENT_RL_MODULE, self.module)]

    def stop(self) -> None:
        for env in (self.env, self.test_env):
            if env is not None:
                env.close()
