"""Padded agents (task sequences) never contribute to Q_tot or its target."""

from types import SimpleNamespace

import numpy as np
import torch

from knife.envs.base import TeamSpec, team_spaces
from knife.policies.learner import qmix_td_loss
from knife.policies.rl_module import QMixRLModule
from knife.policies.schema import model_config


def _module(mixer):
    obs_space, act_space = team_spaces(TeamSpec(3, 4, 5, 6, 10))
    module = QMixRLModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=False,
        model_config=model_config(algorithm=mixer),
    )
    module.make_target_networks()
    return module


def _batch(b=4, t=6, n=3, a=4):
    rng = np.random.default_rng(0)
    avail = np.ones((b, t + 1, n, a), np.float32)
    avail[:, :, 2] = 0.0
    avail[:, :, 2, 0] = 1.0  # padded agent 2: only action 0
    actions = rng.integers(0, a, (b, t + 1, n))
    actions[:, :, 2] = 0
    batch = {
        "obs": rng.normal(size=(b, t + 1, n, 5)).astype(np.float32),
        "state": rng.normal(size=(b, t + 1, 6)).astype(np.float32),
        "avail_actions": avail,
        "actions": actions,
        "reward": rng.normal(size=(b, t)).astype(np.float32),
        "terminated": np.zeros((b, t), np.float32),
        "filled": np.ones((b, t), np.float32),
        "agent_mask": np.array([[1.0, 1.0, 0.0]] * b, np.float32),
    }
    batch["obs"][:, :, 2] = 0.0
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def test_padded_agent_q_values_do_not_change_the_loss():
    cfg = SimpleNamespace(gamma=0.99, td_lambda=0.6, double_q=True)
    for mixer in ("qmix", "vdn"):
        torch.manual_seed(0)
        module = _module(mixer)
        batch = _batch()
        q = module.agent_q_sequence(module.agent, batch).detach()
        q_other = q.clone()
        q_other[:, :, 2] += 100.0  # whatever the padded agent's Q, Q_tot must not see it
        q.requires_grad_(True)
        loss, stats = qmix_td_loss(module, batch, q, batch["reward"], cfg)
        loss_other, stats_other = qmix_td_loss(module, batch, q_other, batch["reward"], cfg)
        floats = {k: v.item() for k, v in stats.items()}
        floats_other = {k: v.item() for k, v in stats_other.items()}
        assert torch.allclose(loss, loss_other) and floats == floats_other, mixer
        loss.backward()
        assert torch.all(q.grad[:, :, 2] == 0), mixer  # no gradient through padded agents
        assert q.grad[:, :, :2].abs().sum() > 0
