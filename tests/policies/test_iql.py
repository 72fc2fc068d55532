"""IQL (independent Q-learning) added through the algorithm registry alone: its loss is each
agent's own TD error on the team reward, it touches only the agent network, and it runs
through `knife sweep` with a plasticity method (the learning test is test_qmix_e2e's
`test_small_stag_hunt_beats_random[iql]`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from knife.envs.base import TeamSpec, team_spaces
from knife.fields import ConfigError
from knife.platform.config import parse_trial_config
from knife.policies.learner import qmix_td_loss
from knife.policies.rl_module import QMixRLModule
from knife.policies.schema import model_config


def _module():
    obs_space, act_space = team_spaces(TeamSpec(3, 4, 5, 6, 10))
    module = QMixRLModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=False,
        model_config=model_config(algorithm="iql"),
    )
    module.make_target_networks()
    return module


def _batch(b=4, t=5, n=3, a=4, seed=0):
    rng = np.random.default_rng(seed)
    filled = np.ones((b, t), np.float32)
    filled[0, 3:] = 0.0  # a shorter episode
    terminated = np.zeros((b, t), np.float32)
    terminated[1, t - 1] = 1.0
    batch = {
        "obs": rng.normal(size=(b, t + 1, n, 5)).astype(np.float32),
        "state": rng.normal(size=(b, t + 1, 6)).astype(np.float32),
        "avail_actions": np.ones((b, t + 1, n, a), np.float32),
        "actions": rng.integers(0, a, (b, t + 1, n)),
        "reward": rng.normal(size=(b, t)).astype(np.float32),
        "terminated": terminated,
        "filled": filled,
        "agent_mask": np.array([[1.0, 1.0, 0.0]] * b, np.float32),  # agent 2 is padding
    }
    return {k: torch.as_tensor(v) for k, v in batch.items()}


def test_iql_loss_is_each_agents_own_one_step_td_error():
    torch.manual_seed(0)
    module, batch = _module(), _batch()
    config = SimpleNamespace(gamma=0.9, td_lambda=0.0, double_q=False)
    q = module.agent_q_sequence(module.agent, batch)
    loss, _ = qmix_td_loss(module, batch, q, batch["reward"], config)

    # By hand: agents 0 and 1 each regress Q_i(s_t, a_t) on r_t + gamma max_a Qtarget_i.
    with torch.no_grad():
        target_q = module.agent_q_sequence(module.target_agent, batch)
    errors, count = 0.0, 0
    for b in range(4):
        for t in range(5):
            if batch["filled"][b, t] == 0:
                continue
            for i in (0, 1):
                a = batch["actions"][b, t, i]
                boot = (1 - batch["terminated"][b, t]) * target_q[b, t + 1, i].max()
                target = batch["reward"][b, t] + 0.9 * boot
                errors += float((q.detach()[b, t, i, a] - target) ** 2)
                count += 1
    assert float(loss.detach()) == pytest.approx(errors / count, rel=1e-5)
    assert module.plasticity_networks() == ("agent",)
    assert not list(module.mixer.parameters())


def test_iql_config_checks_come_from_the_registry():
    cfg = parse_trial_config({"algorithm": "iql", "env": "matrix:two_step", "steps": 10})
    assert cfg.algorithm == "iql"
    # ReBorn's default scope is the QMIX mixer, which IQL does not have.
    with pytest.raises(ConfigError, match="'reborn' acts on mixer.hyper_w_final.0.*iql"):
        parse_trial_config(
            {
                "algorithm": "iql",
                "env": "matrix:two_step",
                "steps": 10,
                "plasticity": {"method": "reborn"},
            }
        )


@pytest.mark.e2e
def test_iql_runs_through_knife_sweep_with_knife(tmp_path):
    sweep = {
        "name": "iql_knife",
        "base": {
            "algorithm": "iql",
            "training": {
                "batch_size": 8,
                "learning_starts": 8,
                "buffer_size": 200,
                "epsilon_anneal_steps": 100,
                "target_update_interval": 20,
                "td_lambda": 0.0,
            },
            "evaluation": {"episodes": 2, "interval": 50},
            "plasticity": {"monitor": {"metrics_interval": 10}},
        },
        "grid": {
            "methods": ["knife"],
            "seeds": [0],
            "sequences": {
                "climb_pen": [
                    {"env": "matrix:climbing", "steps": 150},
                    {"env": "matrix:penalty", "steps": 150},
                ]
            },
        },
        "tune": {"max_concurrent_trials": 1},
    }
    path = tmp_path / "iql.yaml"
    path.write_text(yaml.safe_dump(sweep))
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    out = subprocess.run(
        [sys.executable, "-m", "knife.platform.cli", "sweep", str(path), "--runs-dir", str(runs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///" + str(Path(runs / "mlflow.db").resolve()))
    exp = client.get_experiment_by_name("iql_knife")
    runs_found = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("knife.kind") == "trial"
    ]
    assert len(runs_found) == 1
    run = runs_found[0]
    assert run.info.status == "FINISHED"
    assert (run.data.tags["algorithm"], run.data.tags["method"]) == ("iql", "knife")
    metrics = run.data.metrics
    assert metrics["env_steps"] == 300
    # KNIFE fired at the switch on the agent network, the only one IQL has.
    assert metrics["plasticity/interventions"] >= 1
    assert any(k.startswith("plasticity/") and "/agent" in k for k in metrics)
    assert not any(k.startswith("plasticity/") and "/mixer" in k for k in metrics)
