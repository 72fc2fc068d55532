import numpy as np
import pytest

from knife.envs import StagHuntEnv, make
from knife.envs.stag_hunt import CATCH, DOWN, LEFT, RIGHT, STAY, UP


def placed(positions, **config):
    """A stag hunt with static prey and hand-placed entities, just reset."""
    config.setdefault("prey_move_prob", 0.0)
    env = StagHuntEnv(**config)
    obs, _ = env.reset(seed=0, options={"positions": positions})
    return env, obs


def test_action_order_constants():
    assert (UP, DOWN, LEFT, RIGHT, STAY, CATCH) == (0, 1, 2, 3, 4, 5)


def test_default_sizes():
    env = make("stag_hunt")
    t = env.team
    assert (t.n_agents, t.n_actions, t.episode_limit) == (8, 6, 200)
    assert t.obs_dim == 4 * 5 * 5 + 2
    assert t.state_dim == 3 * 10 * 10
    assert not t.has_win
    obs, info = env.reset(seed=1)
    assert info == {}
    assert env.observation_space.contains(obs)
    pos = env.positions()
    assert len(pos["agents"]) == 8 and len(pos["stags"]) == 8 and len(pos["hares"]) == 0


# ------------------------------------------------------------------ capture rule


def test_two_adjacent_catchers_capture_a_stag():
    # stag at (2,2); agents 0 and 1 next to it, agent 2 far away.
    env, obs = placed(
        {"agents": [[1, 2], [2, 1], [4, 4]], "stags": [[2, 2], [0, 4]]},
        world_shape=[5, 5],
        n_agents=3,
        n_stags=2,
    )
    assert obs["avail_actions"][0, CATCH] == 1 and obs["avail_actions"][2, CATCH] == 0
    _, reward, terminated, truncated, info = env.step([CATCH, CATCH, STAY])
    assert reward == 10.0
    assert not terminated and not truncated
    assert info["stags_captured"] == 1
    np.testing.assert_array_equal(env.positions()["stags"], [[0, 4]])


def test_one_catcher_does_not_capture_a_stag():
    env, _ = placed(
        {"agents": [[1, 2], [2, 1], [4, 4]], "stags": [[2, 2]]},
        world_shape=[5, 5],
        n_agents=3,
        n_stags=1,
    )
    _, reward, terminated, _, info = env.step([CATCH, STAY, STAY])
    assert reward == 0.0 and not terminated and info["stags_captured"] == 0
    np.testing.assert_array_equal(env.positions()["stags"], [[2, 2]])


def test_diagonal_catcher_does_not_count():
    env, _ = placed(
        {"agents": [[1, 2], [1, 1], [4, 4]], "stags": [[2, 2]]},
        world_shape=[5, 5],
        n_agents=3,
        n_stags=1,
    )
    assert env.step([CATCH, CATCH, STAY])[1] == 0.0


def test_capturing_the_last_prey_terminates():
    env, _ = placed(
        {"agents": [[1, 2], [2, 1], [4, 4]], "stags": [[2, 2]]},
        world_shape=[5, 5],
        n_agents=3,
        n_stags=1,
        episode_limit=1,
    )
    obs, reward, terminated, truncated, info = env.step([CATCH, CATCH, STAY])
    # Last step of the time limit too, but a capture end is a termination, not a truncation.
    assert (reward, terminated, truncated, info["episode_limit"]) == (10.0, True, False, False)
    assert obs["state"].reshape(3, 5, 5)[1].sum() == 0.0  # no stag left on the map


def test_punishment_per_failed_catch():
    positions = {"agents": [[1, 2], [2, 1], [4, 4], [0, 0]], "stags": [[2, 2]]}
    config = {"world_shape": [5, 5], "n_agents": 4, "n_stags": 1, "punishment": -0.5}
    env, _ = placed(positions, **config)
    # One catcher next to the stag (too few) and one catcher with no prey at all: 2 fails.
    assert env.step([CATCH, STAY, CATCH, STAY])[1] == -1.0
    env, _ = placed(positions, **config)
    # Two succeed; the third catcher is nowhere near: 10 - 0.5.
    assert env.step([CATCH, CATCH, CATCH, STAY])[1] == 9.5


def test_capture_agents_config_and_hares():
    positions = {"agents": [[1, 2], [2, 1], [2, 3], [4, 4]], "stags": [[2, 2]], "hares": [[0, 4]]}
    config = {
        "world_shape": [5, 5],
        "n_agents": 4,
        "n_stags": 1,
        "n_hares": 1,
        "capture_agents": 3,
        "reward_hare": 2.5,
    }
    env, _ = placed(positions, **config)
    assert env.step([CATCH, CATCH, STAY, STAY])[1] == 0.0  # 2 < 3
    assert env.step([CATCH, CATCH, CATCH, STAY])[1] == 10.0
    hare_only = {"agents": [[0, 3], [2, 1], [2, 3], [4, 4]], "hares": [[0, 4]]}
    env.reset(options={"positions": hare_only})
    _, reward, terminated, _, info = env.step([CATCH, STAY, STAY, STAY])  # one agent is enough
    assert reward == 2.5 and terminated and info["hares_captured"] == 1


def test_one_catcher_can_serve_two_prey():
    env, _ = placed(
        {"agents": [[2, 2], [1, 1]], "stags": [[1, 2], [2, 1]]},
        world_shape=[5, 5],
        n_agents=2,
        n_stags=2,
    )
    _, reward, terminated, _, _ = env.step([CATCH, CATCH])
    assert reward == 20.0 and terminated


# ------------------------------------------------------------------ movement


def test_moves_blocking_and_collisions():
    env, _ = placed(
        {"agents": [[0, 0], [2, 0], [2, 2], [4, 4]], "stags": [[3, 3]]},
        world_shape=[5, 5],
        n_agents=4,
        n_stags=1,
    )
    # 0 tries to leave the grid; 1 and 2 both move into (2,1): both stay; 3 moves up.
    env.step([UP, RIGHT, LEFT, UP])
    np.testing.assert_array_equal(env.positions()["agents"], [[0, 0], [2, 0], [2, 2], [3, 4]])
    # 3 moves left into the stag: blocked; 0 moves down.
    env.step([DOWN, STAY, STAY, LEFT])
    np.testing.assert_array_equal(env.positions()["agents"], [[1, 0], [2, 0], [2, 2], [3, 4]])
    # 0 moves down into agent 1 while 1 moves away: cells must be free at the start -> stays.
    env.step([DOWN, RIGHT, STAY, STAY])
    np.testing.assert_array_equal(env.positions()["agents"], [[1, 0], [2, 1], [2, 2], [3, 4]])


def test_prey_moves_only_to_free_cells_and_entities_never_overlap():
    env = StagHuntEnv(world_shape=[6, 6], n_agents=8, n_stags=8, n_hares=4, prey_move_prob=1.0)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(300):
        before = env.positions()
        avail = env._observe()["avail_actions"]
        acts = [rng.choice(np.flatnonzero(row)) for row in avail]
        _, _, terminated, truncated, _ = env.step(acts)
        after = env.positions()
        every = np.concatenate([after["agents"], after["stags"], after["hares"]])
        assert len({tuple(c) for c in every}) == len(every)
        assert (every >= 0).all() and (every < 6).all()
        if len(after["stags"]) == len(before["stags"]):
            steps = np.abs(after["stags"] - before["stags"]).sum(axis=1)
            assert (steps <= 1).all()
            moved += int(steps.sum())
        if terminated or truncated:
            env.reset()
    assert moved > 0


def test_static_prey_with_zero_move_prob():
    env = StagHuntEnv(prey_move_prob=0.0)
    env.reset(seed=2)
    stags = env.positions()["stags"]
    for _ in range(10):
        env.step([STAY] * 8)
    np.testing.assert_array_equal(env.positions()["stags"], stags)


# ------------------------------------------------------------------ views


def test_view_and_state_contents():
    # 4x5 grid, view 3. Agent 0 at the top-left corner, stag right of it, hare below-right,
    # agent 1 at (3, 4).
    env, obs = placed(
        {"agents": [[0, 0], [3, 4]], "stags": [[0, 1]], "hares": [[1, 1]]},
        world_shape=[4, 5],
        n_agents=2,
        n_stags=1,
        n_hares=1,
        view=3,
    )
    assert env.team.obs_dim == 4 * 9 + 2
    view = obs["obs"][0, :36].reshape(4, 3, 3)  # channels: agents, stags, hares, outside
    np.testing.assert_array_equal(view[0], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(view[1], [[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(view[2], [[0, 0, 0], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(view[3], [[1, 1, 1], [1, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(obs["obs"][0, 36:], [0.0, 0.0])
    np.testing.assert_allclose(obs["obs"][1, 36:], [1.0, 1.0])
    view1 = obs["obs"][1, :36].reshape(4, 3, 3)
    np.testing.assert_array_equal(view1[3], [[0, 0, 1], [0, 0, 1], [1, 1, 1]])
    assert view1[:3].sum() == 1  # only itself

    state = obs["state"].reshape(3, 4, 5)
    expect = np.zeros((3, 4, 5), np.float32)
    expect[0, 0, 0] = expect[0, 3, 4] = 1
    expect[1, 0, 1] = 1
    expect[2, 1, 1] = 1
    np.testing.assert_array_equal(state, expect)
    assert obs["obs"].dtype == obs["state"].dtype == obs["avail_actions"].dtype == np.float32


def test_no_position_feature():
    env = StagHuntEnv(obs_position=False, view=7)
    obs, _ = env.reset(seed=0)
    assert obs["obs"].shape == (8, 4 * 49)
    assert env.observation_space.contains(obs)


def test_avail_actions():
    env, obs = placed(
        {"agents": [[0, 0], [0, 1], [3, 3]], "stags": [[1, 0]], "hares": [[3, 4]]},
        world_shape=[4, 5],
        n_agents=3,
        n_stags=1,
        n_hares=1,
    )
    #                up down left right stay catch
    np.testing.assert_array_equal(
        obs["avail_actions"],
        [
            [0, 0, 0, 0, 1, 1],  # corner; right is agent 1, down is the stag
            [0, 1, 0, 1, 1, 0],  # left is agent 0; no prey adjacent (stag is diagonal)
            [1, 0, 1, 0, 1, 1],  # down is outside; right is the hare
        ],
    )


# ------------------------------------------------------------------ episode ends, seeding


def test_truncation_at_episode_limit():
    env, _ = placed(
        {"agents": [[0, 0], [4, 4]], "stags": [[2, 2]]},
        world_shape=[5, 5],
        n_agents=2,
        n_stags=1,
        episode_limit=3,
    )
    for t in range(3):
        _, reward, terminated, truncated, info = env.step([STAY, STAY])
        assert not terminated and reward == 0.0
        assert truncated == (t == 2) and info["episode_limit"] == (t == 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step([STAY, STAY])


def rollout(seed, steps=60):
    env = make("stag_hunt", n_hares=2)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    trace = [obs["state"].copy()]
    total = 0.0
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(rng.integers(0, 6, 8))
        total += reward
        trace.append(obs["state"].copy())
        if terminated or truncated:
            break
    return np.stack(trace), total


def test_seeding():
    a, ra = rollout(7)
    b, rb = rollout(7)
    c, _ = rollout(8)
    np.testing.assert_array_equal(a, b)
    assert ra == rb
    assert not np.array_equal(a[0], c[0])


def test_check_env(strict_check_env):
    strict_check_env(make("stag_hunt"))
    strict_check_env(
        make(
            "stag_hunt", world_shape=[3, 7], n_agents=2, n_stags=1, n_hares=1, view=1, punishment=-1
        )
    )


# ------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            {"world_shape": [3, 3], "n_agents": 5, "n_stags": 5},
            r"env_config\.n_agents: n_agents \+ n_stags \+ n_hares = 10 exceeds the 9 cells",
        ),
        ({"view": 4}, r"env_config\.view: must be an odd integer"),
        ({"punishment": 0.5}, r"env_config\.punishment: must be a finite number <= 0"),
        ({"punishment": float("nan")}, r"env_config\.punishment"),
        ({"world_shape": [0, 4]}, r"env_config\.world_shape: must be \[rows, cols\]"),
        ({"world_shape": [4, 4], "grid_size": 4}, r"env_config\.grid_size: give either"),
        ({"n_agents": True}, r"env_config\.n_agents: must be an integer >= 1"),
        ({"n_agents": 1}, r"env_config\.capture_agents: must be an integer in \[1, 1\]"),
        ({"n_stags": 0}, r"env_config\.n_stags: need at least one prey"),
        ({"prey_move_prob": 1.5}, r"env_config\.prey_move_prob"),
        ({"episode_limit": 0}, r"env_config\.episode_limit: must be an integer >= 1"),
        ({"obs_position": 1}, r"env_config\.obs_position: must be true or false"),
        ({"n_agent": 3}, r"env_config: unknown key 'n_agent' for stag_hunt; allowed: world_shape"),
    ],
)
def test_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        StagHuntEnv(**config)


def test_grid_size_alias():
    env = make("stag_hunt", grid_size=7, n_agents=4, n_stags=2)
    assert env.team.state_dim == 3 * 49


@pytest.mark.parametrize(
    ("positions", "match"),
    [
        ({"agents": [[0, 0]], "stags": [[1, 1]]}, r"options\.positions\.agents: need 2"),
        ({"agents": [[0, 0], [0, 5]], "stags": [[1, 1]]}, r"options\.positions\.agents: cells"),
        ({"agents": [[0, 0], [1, 1]], "stags": [[1, 1]]}, r"share a cell"),
        ({"agents": [[0, 0], [1, 1]]}, r"at least one stag or hare"),
        ({"agents": [[0, 0], [1, 1]], "wolves": [[2, 2]]}, r"unknown key 'wolves'"),
    ],
)
def test_position_errors(positions, match):
    env = StagHuntEnv(world_shape=[5, 5], n_agents=2, n_stags=1)
    with pytest.raises(ValueError, match=match):
        env.reset(options={"positions": positions})


def test_unknown_reset_option():
    with pytest.raises(ValueError, match="options: unknown key 'position'"):
        StagHuntEnv().reset(options={"position": {}})
