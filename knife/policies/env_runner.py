"""TeamEnvRunner: an RLlib EnvRunner that plays whole team episodes.

RLlib's SingleAgentEnvRunner wraps envs in gymnasium's vector API and runs generic
connector pipelines on every step; for a team env with a stateful module that picks the
joint action itself, that machinery costs about as much as the env and the network
together (DESIGN 11). This runner steps one team env directly with the RLModule and hands
back `Episode`s (numpy arrays), ready for the episode replay buffer. It is still a real
EnvRunner: EnvRunnerGroup creates it locally or as Ray actors, syncs the Learner's weights
into it through `set_state`, and health-checks it.

Vectorized sampling (`num_envs_per_env_runner` = N > 1, EPyMARL's `batch_size_run`): the N
training envs are one vector env (knife/envs/vector.py: the stag hunt and the matrix games
in NumPy, SMAX in one vmapped JAX call, any other env in a loop) stepped in lockstep with one
batched forward pass over N x n_agents (knife/policies/lockstep.py). An env whose episode
ended starts its next one at once; each call returns N x `episodes_per_runner` whole
episodes and carries those still in flight into the next call.

Seeding: the training env is seeded once, at its first reset, with seed + 1000 x worker
index (+ 100000 x task index, + ENV_SEED_STRIDE x k for the k-th of N envs); later resets
continue that env's random stream, so consecutive episodes start differently. The greedy
test env of each task is a separate instance with its own seed, so testing never perturbs
the training stream or the step counters that drive epsilon. With N > 1 the greedy tests and
the random-policy baseline play N envs in lockstep as well (their own seeds, k-th env at
+ ENV_SEED_STRIDE x k), in rounds of one episode per env from fresh resets, so a test never
continues an episode begun with earlier weights.
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
from knife.envs.tasks import TaskSequence
from knife.envs.vector import VectorTeamEnv
from knife.policies.episode import Episode
from knife.policies.lockstep import LockstepSampler, lockstep_rounds
from knife.policies.torch_threads import set_torch_threads

TEST_SEED_OFFSET = 1_000_000
# Env k of a runner's N: far from the worker, task and test offsets, and from run seed + k
# (so that one run's env k never replays another run's env 0).
ENV_SEED_STRIDE = 10_000_000
RANDOM_SEED_OFFSET = 2_000_000  # the random-policy episodes' env (TeamEnvRunner._sample_random)


class TeamEnvRunner(EnvRunner, Checkpointable):
    """Collects complete episodes of a team env with the (inference-only) QMIX module."""

    def __init__(self, *, config, **kwargs) -> None:
        super().__init__(config=config, **kwargs)
        set_torch_threads(config.torch_threads)
        self.env = None  # the training env, or the N training envs as one vector env
        self._test_envs: dict[int, Any] = {}
        self.module = None
        self._weights_seq_no = 0
        self.make_env()
        self.make_module()

    # --- construction ----------------------------------------------------------------

    def make_env(self) -> None:
        raw = self.config.task_sequence
        self.sequence = None if raw is None else TaskSequence.from_config(raw)
        self.set_task(0)  # closes any envs this runner had

    def _build_env(self, task_index: int):
        if self.sequence is None:
            return envs.make(self.config.env, **dict(self.config.env_config or {}))
        return self.sequence.make_task_env(task_index)  # specs are cached by the sequence

    def set_task(self, task_index: int) -> None:
        """Switch to task `task_index` of the sequence: fresh, freshly seeded envs."""
        self._close_envs()
        self._test_envs = {}
        self._test_seeded: set[int] = set()
        self.task_index = task_index
        n = max(1, int(getattr(self.config, "num_envs_per_env_runner", 1) or 1))
        # N > 1: the N training envs as one vector env (natively vectorized where the env
        # has it, knife/envs/vector.py); self.env is then that vector env.
        self.vector_env = None if n == 1 else self._build_vector_env(task_index, n)
        self.env = self._build_env(task_index) if n == 1 else self.vector_env
        base = 0 if self.config.seed is None else int(self.config.seed)
        self._seed_base = base + 1000 * (self.worker_index or 0)
        first = self._seed_base + 100_000 * task_index
        # Each env is seeded once, at its first reset (None afterwards: its stream goes on).
        self._train_seeds: list[int | None] = self._env_seeds(first, n)
        self.sampler = None
        self._test_samplers: dict[int, LockstepSampler] = {}
        if self.vector_env is not None:  # episodes in flight carry across sample() calls
            self.sampler = LockstepSampler(self.vector_env, self._train_seeds)

    @staticmethod
    def _env_seeds(first: int, n: int) -> list[int | None]:
        return [first + ENV_SEED_STRIDE * k for k in range(n)]

    def _test_sampler(self, task_index: int) -> LockstepSampler:
        """With N > 1 the greedy tests of a task play N test envs in lockstep too, on their
        own seeds, each env's stream going on from one test to the next."""
        if task_index not in self._test_samplers:
            n = self.vector_env.num_envs
            first = self._seed_base + TEST_SEED_OFFSET + 100_000 * task_index
            venv = self._build_vector_env(task_index, n)
            self._test_samplers[task_index] = LockstepSampler(venv, self._env_seeds(first, n))
        return self._test_samplers[task_index]

    def _build_vector_env(self, task_index: int, n: int) -> VectorTeamEnv:
        if self.sequence is None:
            return envs.make_vector(self.config.env, n, **dict(self.config.env_config or {}))
        return self.sequence.make_task_vector_env(task_index, n)

    def _close_envs(self) -> None:
        tests = [s.venv for s in getattr(self, "_test_samplers", {}).values()]
        for env in (getattr(self, "env", None), *getattr(self, "_test_envs", {}).values(), *tests):
            if env is not None:
                env.close()

    def _test_env(self, task_index: int):
        """The greedy-test env of a task (earlier tasks too, for forgetting)."""
        if task_index not in self._test_envs:
            self._test_envs[task_index] = self._build_env(task_index)
        return self._test_envs[task_index]

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
        task_index: int | None = None,
        random_policy: bool = False,
        **kwargs,
    ) -> dict[str, Any]:
        """Play `num_episodes` complete episodes.

        explore=True uses the training env and epsilon-greedy actions (epsilon from
        `global_env_steps` plus the steps taken in this call); explore=False plays greedy
        test episodes on the separate test env of `task_index` (default: the current task).
        Returns {"episodes", "env_steps", "seconds"}.
        """
        start = time.perf_counter()
        episodes = []
        steps = 0
        test_task = self.task_index if task_index is None else task_index
        if random_policy:
            return self._sample_random(num_episodes, test_task, start)
        if not explore and self.sampler is not None:
            episodes = lockstep_rounds(self._test_sampler(test_task), self.module, num_episodes)
            for ep in episodes:
                ep.task_index = test_task
            steps = sum(ep.length for ep in episodes)
            return {
                "episodes": episodes,
                "env_steps": steps,
                "seconds": time.perf_counter() - start,
            }
        if explore and self.sampler is not None:
            # num_episodes per env: N x num_episodes episodes, the N envs in lockstep.
            played = self.sampler.sample(
                self.module,
                num_episodes=num_episodes * self.vector_env.num_envs,
                explore=True,
                t0=global_env_steps,
            )
            for _, ep in played:
                ep.task_index = self.task_index
                steps += ep.length
                episodes.append(ep)
            num_episodes = 0
        for _ in range(num_episodes):
            ep = self._play_episode(explore, global_env_steps + steps, test_task)
            episodes.append(ep)
            steps += ep.length
        if explore:
            self.num_env_steps_sampled_lifetime += steps
        return {"episodes": episodes, "env_steps": steps, "seconds": time.perf_counter() - start}

    def _sample_random(self, num_episodes: int, task: int, start: float) -> dict[str, Any]:
        """Episodes of a uniformly random policy (over the available actions) on a fresh,
        separately seeded instance of the task: the training and test streams go on as if
        they had not been played."""
        seed = self._seed_base + RANDOM_SEED_OFFSET + 100_000 * task
        if self.sampler is not None:  # N envs in lockstep, as the test episodes
            venv = self._build_vector_env(task, self.vector_env.num_envs)
            sampler = LockstepSampler(venv, self._env_seeds(seed, venv.num_envs))
            try:
                episodes = lockstep_rounds(sampler, RandomPolicy(venv.team, seed), num_episodes)
            finally:
                venv.close()
            steps = sum(ep.length for ep in episodes)
            return {
                "episodes": episodes,
                "env_steps": steps,
                "seconds": time.perf_counter() - start,
            }
        env = self._build_env(task)
        policy = RandomPolicy(env.team, seed)
        try:
            episodes = [
                play_episode(env, policy, explore=False, seed=seed if k == 0 else None)
                for k in range(num_episodes)
            ]
        finally:
            env.close()
        return _result(episodes, start)

    def _play_episode(self, explore: bool, t0: int, test_task: int = 0) -> Episode:
        if explore:
            env, seed = self.env, self._train_seeds[0]
            self._train_seeds[0] = None  # seeded once: later resets continue the stream
        else:
            env, seed = self._test_env(test_task), None
            if test_task not in self._test_seeded:  # each test env is seeded once, too
                seed = self._seed_base + TEST_SEED_OFFSET + 100_000 * test_task
                self._test_seeded.add(test_task)
        episode = play_episode(env, self.module, explore=explore, t0=t0, seed=seed)
        episode.task_index = self.task_index if explore else test_task
        return episode

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
        self._close_envs()


def _result(episodes: list[Episode], start: float) -> dict[str, Any]:
    steps = sum(ep.length for ep in episodes)
    return {"episodes": episodes, "env_steps": steps, "seconds": time.perf_counter() - start}


class RandomPolicy:
    """A uniformly random choice among each agent's available actions, in the module's
    interface as `play_episode` calls it (the random-policy baseline of a task)."""

    def __init__(self, team: Any, seed: int) -> None:
        self.n_agents, self.n_actions = team.n_agents, team.n_actions
        self.generator = torch.Generator().manual_seed(seed)

    def get_initial_state(self) -> dict[str, torch.Tensor]:
        return {}

    def forward_inference(self, batch: dict[str, Any]) -> dict[str, Any]:
        avail = batch[Columns.OBS]["avail_actions"]
        flat = avail.reshape(-1, self.n_actions)
        actions = torch.multinomial(flat, 1, generator=self.generator).reshape(avail.shape[:-1])
        return {Columns.ACTIONS: actions, Columns.STATE_OUT: {}}


@torch.no_grad()
def play_episode(
    env: Any, module: Any, *, explore: bool, t0: int = 0, seed: int | None = None
) -> Episode:
    """One complete episode of a team env with a QMixRLModule (epsilon-greedy at env step
    t0 + t when `explore`, else greedy), recorded into preallocated arrays."""
    obs, _ = env.reset(seed=seed)
    team = env.team
    limit, n = team.episode_limit, team.n_agents
    obs_buf = np.zeros((limit + 1, n, team.obs_dim), np.float32)
    state_buf = np.zeros((limit + 1, team.state_dim), np.float32)
    avail_buf = np.zeros((limit + 1, n, team.n_actions), np.float32)
    actions_buf = np.zeros((limit, n), np.int64)
    rewards_buf = np.zeros(limit, np.float32)
    state = {k: v.unsqueeze(0) for k, v in module.get_initial_state().items()}
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
            out = module.forward_exploration(batch, t=t0 + t)
        else:
            out = module.forward_inference(batch)
        state = out[Columns.STATE_OUT]
        actions = out[Columns.ACTIONS][0].numpy()
        obs, reward, terminated, truncated, info = env.step(actions)
        actions_buf[t] = actions
        rewards_buf[t] = reward
        t += 1
        if t >= limit and not terminated:
            truncated = True
    mask = getattr(env, "agent_mask", None)
    # Views, not copies: the buffers are this episode's own (the replay buffer copies once).
    return Episode(
        obs=obs_buf[: t + 1],
        state=state_buf[: t + 1],
        avail_actions=avail_buf[: t + 1],
        actions=actions_buf[:t],
        rewards=rewards_buf[:t],
        terminated=bool(terminated),
        info=dict(info),
        agent_mask=None if mask is None else np.asarray(mask, np.float32),
    )
