import itertools

import numpy as np
import pytest

from knife.envs import MatrixGame, TwoStepGame, make
from knife.envs.matrix import CLIMBING, NONMONOTONIC, QPLEX_3, TWO_STEP_2B


def play(env, joint):
    env.reset(seed=0)
    return env.step(np.array(joint))


def all_rewards(env):
    n_actions = env.n_actions
    table = np.zeros((n_actions,) * env.n_agents)
    for joint in itertools.product(range(n_actions), repeat=env.n_agents):
        _, reward, terminated, truncated, info = play(env, joint)
        assert terminated and not truncated
        assert info == {"episode_limit": False}
        assert isinstance(reward, float)
        table[joint] = reward
    return table


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("matrix:climbing", {}, CLIMBING),
        ("matrix:penalty", {}, [[-100, 0, 10], [0, 2, 0], [10, 0, -100]]),
        ("matrix:penalty", {"k": -25}, [[-25, 0, 10], [0, 2, 0], [10, 0, -25]]),
        ("matrix:nonmonotonic", {}, [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]),
        ("matrix:qplex_1", {}, [[10.4, 0, 10], [0, 10, 10], [10, 10, 10]]),
        ("matrix:qplex_1", {"first_weight": 12}, [[12, 0, 10], [0, 10, 10], [10, 10, 10]]),
        ("matrix:qplex_2", {}, NONMONOTONIC),
        ("matrix:qplex_3", {}, QPLEX_3),
    ],
)
def test_one_step_payoffs(name, config, expected):
    env = make(name, **config)
    assert (env.n_agents, env.n_actions, env.team.episode_limit) == (2, 3, 1)
    np.testing.assert_allclose(all_rewards(env), expected)


def test_named_payoff_values():
    assert CLIMBING == ((11, -30, 0), (-30, 7, 0), (0, 6, 5))
    assert QPLEX_3 == ((8, -12, -12), (-12, 6, 0), (-12, 0, 6))


def test_one_step_observation():
    env = make("matrix:climbing")
    obs, info = env.reset(seed=3)
    assert info == {}
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["obs"], np.ones((2, 1), np.float32))
    np.testing.assert_array_equal(obs["state"], np.ones(1, np.float32))
    np.testing.assert_array_equal(obs["avail_actions"], np.ones((2, 3), np.float32))
    nxt, *_ = env.step([0, 0])
    assert env.observation_space.contains(nxt)


def test_custom_three_agents():
    payoff = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    env = make("matrix:custom", payoff=payoff.tolist())
    assert (env.n_agents, env.n_actions) == (3, 4)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["avail_actions"], [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert env.observation_space.contains(obs)
    for joint in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        assert play(env, joint)[1] == payoff[joint]


def test_custom_padded_action_is_played_as_last_real_action():
    env = make("matrix:custom", payoff=[[1, 2, 3], [4, 5, 6]])  # agent 0 has 2 actions
    assert play(env, (2, 1))[1] == 5.0  # action 2 of agent 0 is padding -> its action 1


def test_custom_one_agent():
    env = make("matrix:custom", payoff=[3.0, -1.0])
    assert (env.n_agents, env.n_actions) == (1, 2)
    assert play(env, (1,))[1] == -1.0


def test_step_after_end_and_bad_actions():
    env = MatrixGame([[1, 0], [0, 1]])
    env.reset()
    with pytest.raises(ValueError, match=r"actions: each action must be in \[0, 1\]"):
        env.step([0, 2])
    with pytest.raises(ValueError, match=r"actions: expected an integer array of shape \(2,\)"):
        env.step([0, 1, 1])
    env.step([1, 1])
    with pytest.raises(RuntimeError, match="reset"):
        env.step([1, 1])


def test_two_step_transitions():
    env = make("matrix:two_step")
    assert (env.n_agents, env.n_actions, env.team.episode_limit) == (2, 2, 2)
    assert env.team.obs_dim == env.team.state_dim == 3
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["state"], [1, 0, 0])
    np.testing.assert_array_equal(obs["obs"], [[1, 0, 0], [1, 0, 0]])

    # Agent 0 picks the branch; agent 1's first action does not matter.
    for first, branch in [((0, 0), 1), ((0, 1), 1), ((1, 0), 2), ((1, 1), 2)]:
        for second in itertools.product(range(2), repeat=2):
            env.reset()
            obs, reward, terminated, truncated, info = env.step(first)
            assert (reward, terminated, truncated) == (0.0, False, False)
            assert info["episode_limit"] is False
            expected_state = np.eye(3, dtype=np.float32)[branch]
            np.testing.assert_array_equal(obs["state"], expected_state)
            np.testing.assert_array_equal(obs["obs"], np.stack([expected_state] * 2))
            assert env.observation_space.contains(obs)
            obs, reward, terminated, truncated, info = env.step(second)
            expected = 7.0 if branch == 1 else TWO_STEP_2B[second[0]][second[1]]
            assert reward == expected
            assert terminated and not truncated and info == {"episode_limit": False}


def test_two_step_optimal_return_is_8():
    env = TwoStepGame()
    env.reset()
    total = env.step([1, 0])[1] + env.step([1, 1])[1]
    assert total == 8.0


@pytest.mark.parametrize(
    "name",
    [
        "matrix:climbing",
        "matrix:penalty",
        "matrix:nonmonotonic",
        "matrix:qplex_1",
        "matrix:qplex_2",
        "matrix:qplex_3",
        "matrix:two_step",
    ],
)
def test_check_env(name, strict_check_env):
    strict_check_env(make(name))


def test_check_env_custom_padded(strict_check_env):
    strict_check_env(make("matrix:custom", payoff=[[[1, 2]], [[3, 4]]]))


def test_noise_features_make_the_input_non_degenerate():
    import torch

    from knife.envs import make

    env = make("matrix:penalty", k=-50, noise_features=3)
    assert env.team.obs_dim == 4 and env.team.state_dim == 4
    first, _ = env.reset(seed=0)
    again, _ = make("matrix:penalty", k=-50, noise_features=3).reset(seed=0)
    np.testing.assert_array_equal(first["state"], again["state"])  # seeded
    assert first["state"][0] == 1.0 and np.all(first["obs"] == first["state"])
    _, reward, *_ = env.step(np.array([0, 0]))
    assert reward == -50.0  # the payoff ignores the noise
    states = []
    for _ in range(256):
        obs, _ = env.reset()
        states.append(obs["state"])
    states = torch.tensor(np.array(states))
    assert len({tuple(s) for s in states.tolist()}) == 256  # a fresh draw every episode
    # A hypernetwork's first Linear + ReLU: about half its units are dead from init on the
    # constant state, (almost) none with the noise features.
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 64)
    dead_noisy = (torch.relu(layer(states)).amax(0) == 0).float().mean()
    const = torch.nn.Linear(1, 64)
    dead_const = (torch.relu(const(torch.ones(256, 1))).amax(0) == 0).float().mean()
    assert dead_const > 0.3 and dead_noisy < 0.05


def test_noise_features_bad_value_is_named():
    from knife.envs import validate

    with pytest.raises(ValueError, match="env_config.noise_features: must be an integer in"):
        validate("matrix:climbing", {"noise_features": -1})
    with pytest.raises(ValueError, match="allowed: noise_features, k"):
        validate("matrix:penalty", {"kk": 1})


PERMUTABLE = [
    ("matrix:climbing", {}),
    ("matrix:penalty", {"k": -25}),
    ("matrix:nonmonotonic", {}),
    ("matrix:qplex_1", {}),
    ("matrix:qplex_2", {}),
    ("matrix:qplex_3", {}),
]


@pytest.mark.parametrize(("name", "config"), PERMUTABLE)
def test_permute_relabels_the_actions_and_keeps_the_payoffs(name, config):
    perm = [[1, 2, 0], [2, 0, 1]]
    original = all_rewards(make(name, **config))
    permuted = all_rewards(make(name, **config, permute=perm))
    for a0, a1 in itertools.product(range(3), repeat=2):
        # Agent i's action a is now called perm[i][a]; what it pays is unchanged.
        assert permuted[perm[0][a0], perm[1][a1]] == original[a0, a1]
    assert sorted(permuted.ravel()) == sorted(original.ravel())


def test_permute_moves_the_optimum():
    env = make("matrix:climbing", permute=[[1, 2, 0], [0, 2, 1]])
    table = all_rewards(env)
    assert np.argwhere(table == table.max()).tolist() == [[1, 0]] and table.max() == 11.0
    identity = make("matrix:climbing", permute=[[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(all_rewards(identity), CLIMBING)
    np.testing.assert_array_equal(all_rewards(make("matrix:climbing", permute=None)), CLIMBING)


def test_permute_custom_three_agents_with_different_action_counts():
    payoff = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    perm = [[1, 0], [2, 0, 1], [3, 1, 0, 2]]
    env = make("matrix:custom", payoff=payoff.tolist(), permute=perm)
    for joint in itertools.product(range(2), range(3), range(4)):
        relabelled = tuple(perm[i][a] for i, a in enumerate(joint))
        assert play(env, relabelled)[1] == payoff[joint]


@pytest.mark.parametrize(
    ("permute", "message"),
    [
        ([[1, 2, 0]], "env_config.permute: must be a list with one permutation per agent (2 "
                      "agents: a permutation of 0..2, a permutation of 0..2"),
        ("120", "env_config.permute: must be a list with one permutation per agent"),
        ([[1, 2, 0], [0, 0, 1]], "env_config.permute[1]: must be a permutation of 0..2 "
                                 "(agent 1's 3 actions, each listed once), got [0, 0, 1]"),
        ([[1, 2], [0, 1, 2]], "env_config.permute[0]: must be a permutation of 0..2"),
        ([[0, 1, 3], [0, 1, 2]], "env_config.permute[0]: must be a permutation of 0..2"),
        ([[0, 1, 2], [0, 1, 2.0]], "env_config.permute[1]: must be a permutation of 0..2"),
        ([[True, False, 2], [0, 1, 2]], "env_config.permute[0]: must be a permutation of 0..2"),
        ([[0, 1, 2], 5], "env_config.permute[1]: must be a permutation of 0..2"),
    ],
)  # fmt: skip
def test_permute_bad_values_are_refused_by_field(permute, message):
    from knife.envs import validate

    for call in (
        lambda: validate("matrix:nonmonotonic", {"permute": permute}),
        lambda: make("matrix:nonmonotonic", permute=permute),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert message in str(err.value)


def test_permute_is_refused_by_the_two_step_game():
    with pytest.raises(ValueError, match="unknown key 'permute' for matrix:two_step"):
        make("matrix:two_step", permute=[[1, 0], [1, 0]])


def test_permutation_label_spells_the_permutation():
    from knife.envs.matrix import permutation_label

    assert permutation_label([[1, 2, 0], [2, 0, 1]]) == "perm120_201"
    assert permutation_label([list(range(11)), [0]]) == "perm0-1-2-3-4-5-6-7-8-9-10_0"
