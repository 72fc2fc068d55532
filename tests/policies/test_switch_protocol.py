"""One switch protocol for every plasticity method (issue 13): `none` and `knife` go through
the same target, optimizer, buffer and epsilon handling at a task switch, in real RLlib."""

from __future__ import annotations

import copy

import pytest
import torch
from qmix_helpers import _config
from ray.rllib.core import DEFAULT_MODULE_ID

PAYOFF_A = [[1, 0], [0, 0]]
PAYOFF_B = [[0, 0], [0, 5]]

PROTOCOLS = {
    "defaults": {},  # target_on_switch: sync, optimizer_on_switch: keep, buffer flush
    "keep_target_reset_optimizer": {
        "target_on_switch": "keep",
        "optimizer_on_switch": "reset",
        "buffer_on_switch": "keep",
        "reanneal_epsilon": True,
    },
}


def _run_to_switch(method: str, protocol: dict) -> dict:
    tasks = {
        **protocol,
        "tasks": [
            {"env": "matrix:custom", "env_config": {"payoff": PAYOFF_A}, "steps": 200},
            {"env": "matrix:custom", "env_config": {"payoff": PAYOFF_B}, "steps": 200},
        ],
    }
    # No regular target update before the switch: only the protocol can move the targets.
    cfg = _config(
        tasks=tasks,
        epsilon_anneal_steps=300,
        test_interval=100,
        test_episodes=2,
        target_update_interval=10_000,
    )
    cfg.min_sample_timesteps_per_iteration = 50
    # tau 1.0: every unit below its layer's mean score is stagnant, so KNIFE does change units.
    cfg.plasticity(method, monitor={"tau": 1.0, "metrics_interval": 5})
    algo = cfg.build_algo()
    try:
        module = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
        initial_target = {
            name: copy.deepcopy(t.state_dict()) for name, t in _targets(module).items()
        }
        while algo.progress.index == 0:
            algo.train()
        learner = algo.learner_group._learner
        [(_, optimizer)] = learner.get_optimizers_for_module(DEFAULT_MODULE_ID)
        hook = learner.plasticity[DEFAULT_MODULE_ID]
        online = {"agent": module.agent, "mixer": module.mixer}
        return {
            "target_is_online": all(
                _same_values(online[n].state_dict(), t.state_dict())
                for n, t in _targets(module).items()
            ),
            "target_is_initial": all(
                _same_values(initial_target[n], t.state_dict(), keys=initial_target[n])
                for n, t in _targets(module).items()
            ),
            "target_structure_is_online": all(
                _module_types(online[n]) == _module_types(t) for n, t in _targets(module).items()
            ),
            "buffer_is_empty": len(algo.replay_buffer) == 0,
            "buffer_is_all_task0": len(algo.replay_buffer) == algo.counters["episodes"],
            "epsilon_restarted": algo._epsilon_steps() == 0,
            "optimizer_steps": sorted(
                {int(s["step"]) for s in optimizer.state.values() if "step" in s}
            ),
            "learner_updates": learner.num_updates,
            "interventions": hook.injections,
            "units_changed": hook.units_changed,
        }
    finally:
        algo.stop()


def _targets(module) -> dict:
    return {"agent": module.target_agent, "mixer": module.target_mixer}


def _same_values(a: dict, b: dict, keys=None) -> bool:
    keys = a.keys() if keys is None else keys
    return all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in keys)


def _module_types(m: torch.nn.Module) -> list[tuple[str, str]]:
    return [(n, type(x).__name__) for n, x in m.named_modules()]


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_none_and_knife_go_through_the_same_switch(ray_local, protocol):
    opts = PROTOCOLS[protocol]
    none, knife = (_run_to_switch(m, opts) for m in ("none", "knife"))
    # The method acted only where it may: KNIFE changed units, `none` nothing.
    assert knife["interventions"] == 1 and knife["units_changed"] > 0
    assert none["interventions"] == 0 and none["units_changed"] == 0
    protocol_keys = (
        "target_is_online",
        "target_is_initial",
        "target_structure_is_online",
        "buffer_is_empty",
        "buffer_is_all_task0",
        "epsilon_restarted",
    )
    # Identical handling of target, buffer and epsilon ...
    assert {k: none[k] for k in protocol_keys} == {k: knife[k] for k in protocol_keys}
    assert knife["target_structure_is_online"]
    # ... and it is the protocol that was asked for.
    sync = opts.get("target_on_switch", "sync") == "sync"
    assert knife["target_is_online"] is sync
    assert knife["target_is_initial"] is not sync  # keep: untouched since initialization
    flush = opts.get("buffer_on_switch", "flush") == "flush"
    assert knife["buffer_is_empty"] is flush and knife["buffer_is_all_task0"] is not flush
    assert knife["epsilon_restarted"] is opts.get("reanneal_epsilon", False)
    for run in (none, knife):
        if opts.get("optimizer_on_switch") == "reset":
            assert run["optimizer_steps"] == [0]
        else:
            assert run["optimizer_steps"] == [run["learner_updates"]]
