import re
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo.utils.env import ParallelEnv

from knife.envs import PettingZooTeamEnv, TaskSequence, TeamSpec, make, names, validate

SPREAD = "pettingzoo:mpe2.simple_spread_v3"
TAG = "pettingzoo:mpe2.simple_tag_v3"


def run_episode(env, rng, seed=None):
    """Random available actions until the episode ends; (steps, return, last step)."""
    obs, _ = env.reset(seed=seed)
    steps, ret = 0, 0.0
    while True:
        avail = obs["avail_actions"]
        assert env.observation_space.contains(obs)
        actions = (rng.random(avail.shape) * avail).argmax(axis=1)
        obs, reward, terminated, truncated, info = env.step(actions)
        steps, ret = steps + 1, ret + reward
        if terminated or truncated:
            return steps, ret, (terminated, truncated, info)


def test_family_is_registered():
    assert "pettingzoo:*" in names()


def test_simple_spread_full_episodes(strict_check_env):
    env = make(SPREAD)
    assert isinstance(env, PettingZooTeamEnv)
    assert env.team == TeamSpec(3, 5, 18, 54, 25)
    assert env.team_agents == ["agent_0", "agent_1", "agent_2"] and env.other_agents == []
    rng = np.random.default_rng(0)
    for seed in range(3):
        steps, ret, (terminated, truncated, info) = run_episode(env, rng, seed)
        assert steps == 25 and ret < 0
        assert (terminated, truncated, info) == (False, True, {"episode_limit": True})
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(np.zeros(3, np.int64))
    strict_check_env(make(SPREAD))


def test_simple_spread_config_passes_through_and_reward_mean():
    env = make(SPREAD, N=4, max_cycles=7)
    assert env.team == TeamSpec(4, 5, 24, 96, 7)
    assert run_episode(env, np.random.default_rng(0))[0] == 7
    # The adapter's own limit truncates before the env's max_cycles.
    short = make(SPREAD, episode_limit=3)
    steps, _, (_, truncated, info) = run_episode(short, np.random.default_rng(0))
    assert steps == 3 and truncated and info["episode_limit"]
    # mean = sum / n_agents on the same seeded rollout.
    total, mean = make(SPREAD), make(SPREAD, reward="mean")
    r_sum = run_episode(total, np.random.default_rng(1), seed=5)[1]
    r_mean = run_episode(mean, np.random.default_rng(1), seed=5)[1]
    assert r_mean == pytest.approx(r_sum / 3)


def test_simple_tag_all_agents_pads_obs(strict_check_env):
    env = make(TAG)
    assert env.team == TeamSpec(4, 5, 16, 62, 25)
    obs, _ = env.reset(seed=0)
    # agent_0 (the good agent) observes 14 features; the last 2 are padding.
    assert not obs["obs"][3, 14:].any() and obs["obs"][3, :14].any()
    assert run_episode(env, np.random.default_rng(0))[0] == 25
    strict_check_env(make(TAG))


@pytest.mark.parametrize("others", ["random", "scripted"])
@pytest.mark.parametrize(
    ("team", "agents"),
    [
        ("adversary", ["adversary_0", "adversary_1", "adversary_2"]),
        (["agent_0"], ["agent_0"]),
        (["adversary_1", "agent"], ["adversary_1", "agent_0"]),
    ],
)
def test_simple_tag_team_choice(strict_check_env, team, agents, others):
    env = make(TAG, team=team, others=others)
    assert env.team_agents == agents
    assert env.n_agents == len(agents) and env.team.state_dim == 62  # state: every agent
    assert env.team.obs_dim == (16 if any(a.startswith("adv") for a in agents) else 14)
    for seed in range(2):
        assert run_episode(env, np.random.default_rng(seed), seed)[0] == 25
    strict_check_env(make(TAG, team=team, others=others))


def average_return(team, others, episodes=10):
    env = make(TAG, team=team, others=others)
    total = 0.0
    for seed in range(episodes):
        env.reset(seed=seed)
        while True:  # the team stands still (action 0)
            _, r, terminated, truncated, _ = env.step(np.zeros(env.n_agents, np.int64))
            total += r
            if terminated or truncated:
                break
    return total / episodes


def test_scripted_others_chase_and_flee():
    # Scripted adversaries catch a standing good agent far more often than random ones.
    assert average_return("agent_0", "scripted") < average_return("agent_0", "random") - 20
    # A scripted good agent escapes standing adversaries: they catch it less than a random one.
    assert average_return("adversary", "scripted") < average_return("adversary", "random")


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        (
            "pettingzoo:nope.nothing_v1",
            {},
            "env: 'pettingzoo:nope.nothing_v1': cannot import module 'nope.nothing_v1'",
        ),
        ("pettingzoo:1bad", {}, "env: 'pettingzoo:1bad': '1bad' is not a module path"),
        ("pettingzoo:mpe2", {}, "env: 'pettingzoo:mpe2': module 'mpe2' has no parallel_env()"),
        (
            SPREAD,
            {"colour": 1},
            "env_config: pettingzoo:mpe2.simple_spread_v3 rejected the config {'colour': 1}",
        ),
        (
            SPREAD,
            {"continuous_actions": True},
            "env: pettingzoo:mpe2.simple_spread_v3: agent 'agent_0' has action space Box",
        ),
        (
            TAG,
            {"team": "foo"},
            "env_config.team: 'foo' matches no agent of pettingzoo:mpe2.simple_tag_v3; agents: "
            "adversary_0, adversary_1, adversary_2, agent_0",
        ),
        (TAG, {"team": []}, "env_config.team: must be an agent name or name prefix"),
        (TAG, {"team": 3}, "env_config.team: must be an agent name or name prefix"),
        (
            TAG,
            {"others": "greedy"},
            "env_config.others: unknown 'greedy'; allowed: random, scripted",
        ),
        (SPREAD, {"reward": "max"}, "env_config.reward: unknown 'max'; allowed: sum, mean"),
        (SPREAD, {"episode_limit": 0}, "env_config.episode_limit: must be an integer >= 1"),
        (
            SPREAD,
            {"team": "agent_0", "others": "scripted"},
            "env_config.others: 'scripted' is built in only for MPE envs whose agents are "
            "adversaries or good agents",
        ),
    ],
)
def test_bad_input(name, config, message):
    for call in (lambda: make(name, **config), lambda: validate(name, config)):
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            call()


def test_unknown_env_in_a_task_sequence():
    with pytest.raises(ValueError, match=re.escape("tasks[0].env: 'pettingzoo:nope.x'")):
        TaskSequence.from_config([{"env": "pettingzoo:nope.x", "steps": 10}])
    seq = TaskSequence.from_config(
        [{"env": SPREAD, "steps": 10}, {"env": SPREAD, "env_config": {"N": 4}, "steps": 10}]
    )
    assert seq.spec() == TeamSpec(4, 5, 24, 96, 25)
    assert seq.agent_mask(0).tolist() == [True, True, True, False]
    assert run_episode(seq.make_task_env(0), np.random.default_rng(0))[0] == 25


# ---------------------------------------------------------------- a tiny fake parallel env


class _Masked(ParallelEnv):
    """Two players with action masks in Dict observations; 'p1' leaves after 2 steps; the
    other side 'bot' has a mask allowing only action 2. Without `with_state` no state()."""

    metadata = {"name": "masked_v0"}

    def __init__(self, with_state=True, limit=4):
        self.possible_agents = ["p0", "p1", "bot"]
        self.with_state = with_state
        self.limit = limit
        self.bot_actions = []
        obs = gym.spaces.Box(-1, 1, (2,), np.float32)
        self._obs_space = gym.spaces.Dict(
            {"observation": obs, "action_mask": gym.spaces.MultiBinary(3)}
        )

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return gym.spaces.Discrete(3)

    def state(self):
        if not self.with_state:
            raise NotImplementedError("no state")
        return np.full(5, self.t, np.float32)

    def _obs(self):
        masks = {"p0": [1, 1, 0], "p1": [0, 1, 1], "bot": [0, 0, 1]}
        return {
            a: {"observation": np.full(2, 0.5, np.float32), "action_mask": np.array(masks[a])}
            for a in self.agents
        }

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents)
        self.bot_actions.append(actions["bot"])
        self.t += 1
        terms = {a: a == "p1" and self.t >= 2 for a in self.agents}
        truncs = {a: self.t >= self.limit for a in self.agents}
        rewards = {a: 1.0 for a in self.agents}
        self.agents = [a for a in self.agents if not terms[a] and not truncs[a]]
        return self._obs(), rewards, terms, truncs, {a: {} for a in terms}


@pytest.fixture
def fake_module(monkeypatch):
    mod = types.ModuleType("zz_fake_pz")
    mod.parallel_env = _Masked
    monkeypatch.setitem(sys.modules, "zz_fake_pz", mod)
    return mod


def test_masks_departures_and_others(fake_module):
    env = make("pettingzoo:zz_fake_pz", team=["p0", "p1"], episode_limit=10)
    assert env.team == TeamSpec(2, 3, 2, 5, 10)
    obs, _ = env.reset(seed=0)
    assert obs["avail_actions"].tolist() == [[1, 1, 0], [0, 1, 1]]
    obs, reward, terminated, truncated, _ = env.step(np.array([0, 1]))
    assert reward == 2.0 and not (terminated or truncated)
    obs, reward, terminated, truncated, _ = env.step(np.array([1, 2]))
    # p1 has left: zero obs, only action 0; it is no longer stepped.
    assert obs["obs"][1].tolist() == [0, 0] and obs["avail_actions"][1].tolist() == [1, 0, 0]
    assert obs["state"].tolist() == [2.0] * 5
    obs, reward, terminated, truncated, _ = env.step(np.array([0, 0]))
    assert reward == 1.0
    _, _, terminated, truncated, info = env.step(np.array([0, 0]))
    assert (terminated, truncated, info) == (False, True, {"episode_limit": True})
    assert env.pz.bot_actions == [2, 2, 2, 2]  # random others respect the action mask


def test_env_without_state_or_limit_is_refused(fake_module):
    fake_module.parallel_env = lambda **kw: _Masked(with_state=False)
    with pytest.raises(ValueError, match="env: pettingzoo:zz_fake_pz has no global state"):
        make("pettingzoo:zz_fake_pz", episode_limit=5)
    fake_module.parallel_env = _Masked
    with pytest.raises(ValueError, match=r"env_config\.episode_limit: required for pettingzoo"):
        make("pettingzoo:zz_fake_pz")


def test_importing_envs_stays_light():
    # knife.envs must not pull in torch or ray; pettingzoo loads only when asked for.
    import subprocess

    code = (
        "import sys, knife.envs; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'pettingzoo'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
