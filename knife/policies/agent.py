"""The agent network shared by all agents (DESIGN 5).

input = obs ++ one-hot agent id (++ one-hot last action, unless obs_last_action=False)
fc1 (Linear + ReLU) -> GRUCell -> fc2 (Q per action)

Hidden Linear+activation pairs live in `nn.Sequential` blocks so that the plasticity
toolkit can find them by module path and swap them for composite units without the
network being written for it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.func import functional_call


class RNNAgent(nn.Module):
    """Shared GRU agent: maps per-agent inputs and hidden state to Q-values."""

    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.n_actions = n_actions
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        self.rnn = nn.GRUCell(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def initial_state(self, *batch_shape: int) -> torch.Tensor:
        return torch.zeros(*batch_shape, self.hidden_dim)

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step. inputs [..., input_dim], hidden [..., H] -> (q [..., A], hidden [..., H])."""
        lead = inputs.shape[:-1]
        x = self.fc1(inputs.reshape(-1, self.input_dim))
        h = self.rnn(x, hidden.reshape(-1, self.hidden_dim))
        q = self.fc2(h)
        return q.reshape(*lead, self.n_actions), h.reshape(*lead, self.hidden_dim)

    def unroll(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Whole sequences. inputs [B, T, N, D], hidden [B, N, H] -> q [B, T, N, A].

        fc1 and fc2 run once over all steps; the recurrence runs in torch's fused GRU
        kernel with this GRUCell's own parameters (same math, about 2x faster than a
        Python loop of GRUCell calls), so gradients land on `self.rnn` as usual.
        """
        b, t, n, _ = inputs.shape
        x = self.fc1(inputs.reshape(b * t * n, self.input_dim))
        x = x.reshape(b, t, n, -1).transpose(1, 2).reshape(b * n, t, -1)
        cell = self.rnn
        params = {
            "weight_ih_l0": cell.weight_ih,
            "weight_hh_l0": cell.weight_hh,
            "bias_ih_l0": cell.bias_ih,
            "bias_hh_l0": cell.bias_hh,
        }
        h0 = hidden.reshape(1, b * n, self.hidden_dim)
        hs, _ = functional_call(_gru_shell(cell.input_size, cell.hidden_size), params, (x, h0))
        q = self.fc2(hs)  # [B*N, T, A]
        return q.reshape(b, n, t, self.n_actions).transpose(1, 2)


@functools.cache
def _gru_shell(input_size: int, hidden_size: int) -> nn.GRU:
    """A parameter-less stand-in nn.GRU whose weights are supplied per call."""
    return nn.GRU(input_size, hidden_size, batch_first=True, device="meta")


def build_agent_inputs(
    obs: torch.Tensor, last_actions_onehot: torch.Tensor | None, n_agents: int
) -> torch.Tensor:
    """obs [..., N, obs_dim], last actions one-hot [..., N, A] or None -> [..., N, obs+N(+A)]."""
    eye = torch.eye(n_agents, dtype=obs.dtype, device=obs.device)
    agent_ids = eye.expand(*obs.shape[:-2], n_agents, n_agents)
    if last_actions_onehot is None:
        return torch.cat([obs, agent_ids], dim=-1)
    return torch.cat([obs, agent_ids, last_actions_onehot], dim=-1)
