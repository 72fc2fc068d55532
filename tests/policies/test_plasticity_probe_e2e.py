"""The trainability probe (knife.plasticity.probe) in a real 2-task RLlib run: every n
updates and at the switch, for the agent and the mixer, with finite values."""

from __future__ import annotations

import math

import pytest
from qmix_helpers import SMALL_STAG_HUNT, _config, _train

NETWORKS = ("agent", "mixer")
FIELDS = ("probe_loss", "probe_fresh_loss", "probe_loss_ratio", "probe_seconds")


@pytest.mark.e2e
def test_probe_metrics_every_n_updates_and_at_the_switch(ray_local):
    task = {"env": "stag_hunt", "env_config": SMALL_STAG_HUNT, "steps": 2000}
    cfg = _config(
        tasks={"tasks": [task, task]}, test_interval=500, test_episodes=2, epsilon_anneal_steps=800
    )
    cfg.plasticity(
        "knife", monitor={"metrics_interval": 5}, probe={"every": 10, "steps": 20, "batch": 4}
    )
    algo = cfg.build_algo()
    try:
        during = _train(algo, 1500)  # task 0, after >= 10 updates
        assert during["task_index"] == 0 and during["learner_updates"] >= 10
        for network in NETWORKS:
            for field in FIELDS:
                value = during[f"plasticity/{network}/{field}"]
                assert math.isfinite(value) and value >= 0, (network, field, value)
        assert during["plasticity/probe_steps"] == 2 * 20 * len(NETWORKS)
        assert during["plasticity/probe_seconds"] > 0
        after = _train(algo, 2500)  # past the switch
    finally:
        algo.stop()
    assert after["task_index"] == 1
    switch = "plasticity/at_switch/"
    for network in NETWORKS:
        ratio = after[f"{switch}{network}/probe_loss_ratio"]
        assert math.isfinite(ratio) and ratio > 0
        # Measured before KNIFE acted at the switch: one intervention in all so far.
        assert math.isfinite(after[f"{switch}{network}/probe_fresh_loss"])
    assert after[f"{switch}probe_seconds"] > 0 and after["plasticity/interventions"] == 1
    print({k: round(v, 4) for k, v in after.items() if "probe" in k})
