"""The Learner's plasticity hook in real RLlib runs (monitor every update, interventions)."""

from __future__ import annotations

import pytest
import torch
from qmix_helpers import SMALL_STAG_HUNT, _config, _train

from knife.policies import result_metrics


def _module(algo):
    return algo.learner_group._learner.module["default_policy"]


@pytest.mark.e2e
def test_knife_fires_on_schedule_and_at_task_switch_and_survives_restore(ray_local, tmp_path):
    cfg = _config("stag_hunt", SMALL_STAG_HUNT, test_interval=1000, epsilon_anneal_steps=2000)
    cfg.plasticity(
        "knife", monitor={"metrics_interval": 10}, options={"knife": {"every_n_updates": 40}}
    )
    algo = cfg.build_algo()
    restored = None
    try:
        metrics = _train(algo, 2500)
        assert metrics["learner_updates"] >= 40
        for key in (
            "agent/stagnant_fraction",  # plasticity/<network or layer>/<metric>
            "mixer/stagnant_fraction",
            "all/dormant_fraction",
            "agent/effective_rank",
            "mixer/dead_since_init_fraction",
            "agent.rnn/fresh_stagnant_fraction",
            "agent.fc1.0/grad_ratio_p50",
            "mixer.hyper_w1.0/update_ratio_p90",
        ):
            assert 0.0 <= metrics[f"plasticity/{key}"], key
        # The fresh-network control, on the same batches: a difference of two fractions.
        assert -1.0 <= metrics["plasticity/all/stagnant_above_fresh"] <= 1.0
        assert metrics["plasticity/interventions"] >= 1
        assert metrics["plasticity/units_changed_total"] > 0
        module = _module(algo)
        assert module.agent.fc1[0].knife_sign.numel() > 0  # composite rows exist
        # Targets mirror the online structure (composites installed, their function kept
        # until the next regular target update fills in the frozen rows).
        assert type(module.target_agent.fc1[0]) is type(module.agent.fc1[0])
        assert module.target_agent.state_dict().keys() == module.agent.state_dict().keys()

        before = metrics["plasticity/interventions"]
        switch = algo.on_task_switch()
        assert switch["plasticity/interventions"] == before + 1
        assert "plasticity/at_switch/agent/stagnant_fraction" in switch

        path = algo.save_to_path(str(tmp_path / "ckpt"))
        restored = type(algo).from_checkpoint(path)
        a, b = _module(algo).state_dict(), _module(restored).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        # EnvRunner copies got the composite structure through weight sync.
        runner_module = restored.env_runner_group.local_env_runner.module
        assert runner_module.agent.fc1[0].knife_sign.shape == module.agent.fc1[0].knife_sign.shape
        after = result_metrics(restored.train())
        assert after["env_steps"] > metrics["env_steps"]
        assert after["plasticity/interventions"] >= before + 1
    finally:
        algo.stop()
        if restored is not None:
            restored.stop()


@pytest.mark.e2e
def test_monitor_runs_without_an_intervention(ray_local):
    algo = _config("matrix:two_step", test_interval=1000).plasticity(
        monitor={"metrics_interval": 5}
    )
    algo = algo.build_algo()
    try:
        metrics = _train(algo, 300)
        assert "plasticity/all/stagnant_fraction" in metrics
        assert metrics["plasticity/interventions"] == 0
    finally:
        algo.stop()


def test_bad_plasticity_config_fails_in_validate():
    cfg = _config("matrix:two_step").plasticity(method="knfe")
    with pytest.raises(ValueError, match="plasticity.method: unknown 'knfe'; allowed: none"):
        cfg.validate()
    cfg = _config("matrix:two_step").plasticity("knife", monitor={"tau": 2.0})
    with pytest.raises(ValueError, match=r"plasticity.monitor.tau.*\(0, 1\]"):
        cfg.validate()


@pytest.mark.e2e
def test_plasticity_injection_of_the_recurrent_head_trains_and_restores(ray_local, tmp_path):
    """Nikishin et al.'s head injection in a real run: the agent's recurrent state grows to
    three GRU states, a remote EnvRunner plays with it, and a checkpoint restores it."""
    cfg = _config(
        "stag_hunt", SMALL_STAG_HUNT, runners=1, test_interval=1000, epsilon_anneal_steps=2000
    )
    cfg.plasticity("plasticity_injection")
    algo = cfg.build_algo()
    restored = None
    try:
        _train(algo, 600)
        switch = algo.on_task_switch()
        assert switch["plasticity/interventions"] == 1
        module = _module(algo)
        assert len(module.agent.head_terms) == 2 and module.agent.state_dim == 3 * 64
        assert len(module.target_agent.head_terms) == 2  # the target mirrors the structure
        after = _train(algo, 1600)  # the remote runner now plays with the 3-term head
        assert after["env_steps"] >= 1600 and after["plasticity/interventions"] == 1
        remote_dims = algo.env_runner_group.foreach_env_runner(
            lambda r: r.module.agent.state_dim, local_env_runner=False
        )
        assert remote_dims == [3 * 64]
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        restored = type(algo).from_checkpoint(path)
        a, b = _module(algo).state_dict(), _module(restored).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert result_metrics(restored.train())["env_steps"] > after["env_steps"]
    finally:
        algo.stop()
        if restored is not None:
            restored.stop()
