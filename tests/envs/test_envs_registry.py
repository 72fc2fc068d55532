import re

import numpy as np
import pytest

import knife.envs as envs
from knife.envs import MatrixGame, TeamEnv, make, names, register, unregister, validate

BUILTIN = [
    "matrix:climbing",
    "matrix:custom",
    "matrix:nonmonotonic",
    "matrix:penalty",
    "matrix:qplex_1",
    "matrix:qplex_2",
    "matrix:qplex_3",
    "matrix:two_step",
    "stag_hunt",
]


def test_builtin_names():
    assert set(BUILTIN) <= set(names())
    assert names() == sorted(names())


@pytest.mark.parametrize("name", BUILTIN)
def test_make_builtin(name):
    config = {"payoff": [[1, 0], [0, 1]]} if name == "matrix:custom" else {}
    env = make(name, **config)
    assert isinstance(env, TeamEnv)
    validate(name, config)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_unknown_env():
    with pytest.raises(ValueError) as err:
        make("foo")
    msg = str(err.value)
    assert msg.startswith("env: unknown env 'foo'; registered: ")
    assert all(name in msg for name in BUILTIN)
    with pytest.raises(ValueError, match="env: unknown env 'matrix:qplex_9'"):
        validate("matrix:qplex_9", {})


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        (
            "matrix:climbing",
            {"x": 1},
            "env_config: unknown key 'x' for matrix:climbing; allowed: noise_features",
        ),
        (
            "matrix:penalty",
            {"kk": 1},
            "env_config: unknown key 'kk' for matrix:penalty; allowed: noise_features, k",
        ),
        ("matrix:two_step", {"k": 1}, "env_config: unknown key 'k' for matrix:two_step"),
        (
            "matrix:custom",
            {"payoff": [[1]], "k": 1},
            "env_config: unknown key 'k' for matrix:custom; allowed: noise_features, payoff",
        ),
        ("stag_hunt", {"x": 1}, "env_config: unknown key 'x' for stag_hunt; allowed: world_shape"),
    ],
)
def test_unknown_config_key(name, config, message):
    for call in (lambda: make(name, **config), lambda: validate(name, config)):
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


def test_penalty_k_must_be_non_positive():
    with pytest.raises(ValueError, match=r"env_config\.k: must be a finite number <= 0"):
        make("matrix:penalty", k=5)


@pytest.mark.parametrize(
    ("payoff", "match"),
    [
        ([[1, 2], [3]], r"env_config\.payoff: ragged nested list"),
        ([[1, 2], [3, float("nan")]], r"env_config\.payoff: all entries must be finite"),
        ([[1, float("inf")]], r"env_config\.payoff: all entries must be finite"),
        (5, r"env_config\.payoff: needs at least 1 agent"),
        ([], r"env_config\.payoff: agent 0 has no actions"),
        ([[], []], r"env_config\.payoff: agent 1 has no actions"),
        ([["a", "b"]], r"env_config\.payoff: must contain only numbers"),
        ([[1, None]], r"env_config\.payoff: must contain only numbers"),
    ],
)
def test_bad_payoff(payoff, match):
    with pytest.raises(ValueError, match=match):
        validate("matrix:custom", {"payoff": payoff})
    with pytest.raises(ValueError, match=match):
        make("matrix:custom", payoff=payoff)
    with pytest.raises(ValueError, match=match):
        MatrixGame(payoff)


def test_missing_payoff():
    with pytest.raises(ValueError, match=r"env_config\.payoff: required for matrix:custom"):
        make("matrix:custom")


def test_validate_is_cheap_and_quiet():
    # Stag hunt config errors come out of validate() without building an env.
    with pytest.raises(ValueError, match=r"env_config\.view"):
        validate("stag_hunt", {"view": 2})
    assert validate("stag_hunt", {"punishment": -2.0, "grid_size": 12}) is None
    assert validate("matrix:penalty") is None
    with pytest.raises(ValueError, match="env_config: must be a mapping"):
        validate("stag_hunt", [("view", 3)])


class _Dummy(TeamEnv):
    def __init__(self, tag: str = "", size: int = 2) -> None:
        self.tag = tag
        self.closed = False
        self._set_team(envs.TeamSpec(1, size, 1, 1, 1))

    def close(self) -> None:
        self.closed = True
        _Dummy.last_closed = self


@pytest.fixture
def scratch_names():
    added: list[str] = []
    yield added
    for name in added:
        unregister(name)


def test_register_exact_and_family(scratch_names):
    built: list[tuple[str, dict]] = []

    def family(suffix, **cfg):
        built.append((suffix, cfg))
        return _Dummy(tag=suffix, **cfg)

    register("zz_fam:", family, keys=["size"])
    register("zz_fam:special", lambda **cfg: _Dummy(tag="exact", **cfg))
    register("zz_list:", family, members=lambda: ["a", "b"])
    scratch_names += ["zz_fam:", "zz_fam:special", "zz_list:"]

    assert make("zz_fam:protoss_5_vs_5", size=4).tag == "protoss_5_vs_5"
    assert built[-1] == ("protoss_5_vs_5", {"size": 4})
    assert make("zz_fam:special").tag == "exact"  # exact names win over families
    assert {"zz_fam:*", "zz_fam:special", "zz_list:a", "zz_list:b"} <= set(names())
    with pytest.raises(
        ValueError, match=re.escape("env_config: unknown key 'colour' for zz_fam:x; allowed: size")
    ):
        validate("zz_fam:x", {"colour": 1})
    with pytest.raises(ValueError, match="env: unknown env 'zz_fam:'"):
        make("zz_fam:")  # a family needs a suffix
    # Without a validator, validate() builds the env and closes it again.
    n_built = len(built)
    validate("zz_fam:y", {"size": 3})
    assert len(built) == n_built + 1 and _Dummy.last_closed.closed


def test_register_validator_used_and_duplicates(scratch_names):
    calls: list[tuple] = []

    def factory(**cfg):
        raise AssertionError("validate() must not build when a validator exists")

    register("zz_exact", factory, validator=lambda cfg: calls.append(("exact", dict(cfg))))
    register("zz_v:", factory, validator=lambda s, cfg: calls.append((s, dict(cfg))))
    scratch_names += ["zz_exact", "zz_v:"]
    validate("zz_exact", {"a": 1})
    validate("zz_v:m", {"b": 2})
    assert calls == [("exact", {"a": 1}), ("m", {"b": 2})]
    with pytest.raises(ValueError, match="env: 'zz_exact' is already registered"):
        register("zz_exact", factory)
    register("zz_exact", lambda **cfg: _Dummy(), replace=True)
    assert isinstance(make("zz_exact"), _Dummy)


def test_builtin_game_name_cannot_be_shadowed_by_config():
    with pytest.raises(ValueError, match="unknown key 'game'"):
        make("matrix:climbing", game="matrix:penalty")
    env = make("matrix:climbing")
    env.reset()
    assert env.step(np.array([0, 0]))[1] == 11.0
