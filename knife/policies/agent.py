"""The agent network shared by all agents (DESIGN 5).

input = obs ++ one-hot agent id (++ one-hot last action, unless obs_last_action=False)
fc1 (Linear + ReLU) -> GRUCell -> fc2 (Q per action)

Plasticity injection (Nikishin et al. 2023) on this agent: fc1 is the encoder, GRU + fc2 the
head. `inject_head()` freezes a copy of the current head, re-initializes the live head in
place (its Parameters, which the optimizer holds, become the new trainable head) and freezes
a copy of the fresh head:  q = head_old(fc1(x)) + head_new(fc1(x)) - head_new0(fc1(x)).
The encoder keeps training. Each head term carries its own GRU state, so the recurrent
state grows from H to H * (1 + number of frozen terms) (`state_dim`); head_new and head_new0
start from the same weights and the same zero state, so they cancel exactly at injection.

Hidden Linear+activation pairs live in `nn.Sequential` blocks so that the plasticity
toolkit can find them by module path and swap them for composite units without the
network being written for it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.func import functional_call

from knife.plasticity import FrozenTerms, frozen_copy
from knife.plasticity.init import fresh_parameters


class _Head(nn.Module):
    """GRU + Q head: the part of the agent plasticity injection replaces."""

    def __init__(self, rnn: nn.GRUCell, fc2: nn.Linear) -> None:
        super().__init__()
        self.rnn, self.fc2 = rnn, fc2


class RNNAgent(nn.Module):
    """Shared GRU agent: maps per-agent inputs and hidden state to Q-values."""

    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.n_actions = n_actions
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        self.rnn = nn.GRUCell(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, n_actions)
        # Frozen heads of plasticity injection (module docstring), with signs +1 / -1.
        self.head_terms = FrozenTerms()
        self.register_buffer("head_signs", torch.zeros(0))
        self._signs: list[float] = []

    @property
    def state_dim(self) -> int:
        """Size of the recurrent state: one GRU state per head term."""
        return self.hidden_dim * (1 + len(self.head_terms))

    def initial_state(self, *batch_shape: int) -> torch.Tensor:
        return torch.zeros(*batch_shape, self.state_dim)

    # --- plasticity injection ------------------------------------------------------

    @torch.no_grad()
    def inject_head(self) -> dict[str, int]:
        """Plasticity injection of the head (module docstring). Returns the re-initialized
        children and their unit counts; the caller resets their optimizer state."""
        self._add_term(frozen_copy(_Head(self.rnn, self.fc2)), 1.0)
        for module in (self.rnn, self.fc2):
            for name, value in fresh_parameters(module).items():
                module._parameters[name].copy_(value)
        self._add_term(frozen_copy(_Head(self.rnn, self.fc2)), -1.0)
        return {"rnn": self.rnn.hidden_size, "fc2": self.fc2.out_features}

    def _add_term(self, head: nn.Module, sign: float) -> None:
        self.head_terms.append(head)
        sign_t = self.head_signs.new_tensor([sign])
        self.head_signs = torch.cat([self.head_signs, sign_t])
        self._signs = [float(s) for s in self.head_signs.tolist()]

    def resize_for_state_dict(self, state_dict: dict, prefix: str) -> bool:
        """Give this agent as many head terms as `state_dict` has (values not loaded)."""
        key = prefix + "head_signs"
        n = int(state_dict[key].shape[0]) if key in state_dict else 0
        if n == len(self.head_terms):
            return False
        while len(self.head_terms) < n:
            self.head_terms.append(frozen_copy(_Head(self.rnn, self.fc2)))
        while len(self.head_terms) > n:
            del self.head_terms[len(self.head_terms) - 1]
        self.head_signs = self.head_signs.new_zeros(n)
        self._signs = [0.0] * n
        return True

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        self.resize_for_state_dict(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # A checkpoint from before head injection existed has no head_signs: no terms.
        missing_keys[:] = [k for k in missing_keys if k != prefix + "head_signs"]
        self._signs = [float(s) for s in self.head_signs.tolist()]

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step. inputs [..., input_dim], hidden [..., H] -> (q [..., A], hidden [..., H])."""
        lead = inputs.shape[:-1]
        x = self.fc1(inputs.reshape(-1, self.input_dim))
        states = hidden.reshape(-1, self.state_dim).split(self.hidden_dim, dim=-1)
        h = self.rnn(x, states[0])
        q = self.fc2(h)
        new_states = [h]
        for sign, term, h_k in zip(self._signs, self.head_terms, states[1:], strict=True):
            h_k = term.rnn(x, h_k)
            q = q + sign * term.fc2(h_k)
            new_states.append(h_k)
        h = torch.cat(new_states, dim=-1) if self.head_terms else h
        return q.reshape(*lead, self.n_actions), h.reshape(*lead, self.state_dim)

    def unroll(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Whole sequences. inputs [B, T, N, D], hidden [B, N, H] -> q [B, T, N, A].

        fc1 and fc2 run once over all steps; the recurrence runs in torch's fused GRU
        kernel with this GRUCell's own parameters (same math, about 2x faster than a
        Python loop of GRUCell calls), so gradients land on `self.rnn` as usual.
        """
        b, t, n, _ = inputs.shape
        x = self.fc1(inputs.reshape(b * t * n, self.input_dim))
        x = x.reshape(b, t, n, -1).transpose(1, 2).reshape(b * n, t, -1)
        states = hidden.reshape(b * n, self.state_dim).split(self.hidden_dim, dim=-1)
        q = self.fc2(_unroll_gru(self.rnn, x, states[0]))  # [B*N, T, A]
        for sign, term, h0 in zip(self._signs, self.head_terms, states[1:], strict=True):
            q = q + sign * term.fc2(_unroll_gru(term.rnn, x, h0))
        return q.reshape(b, n, t, self.n_actions).transpose(1, 2)


def _unroll_gru(cell: nn.GRUCell, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """x [B, T, D], h0 [B, H] -> hidden states [B, T, H], in torch's fused GRU kernel with
    the cell's own tensors (parameters, or buffers in a frozen copy)."""
    params = {
        "weight_ih_l0": cell.weight_ih,
        "weight_hh_l0": cell.weight_hh,
        "bias_ih_l0": cell.bias_ih,
        "bias_hh_l0": cell.bias_hh,
    }
    shell = _gru_shell(cell.input_size, cell.hidden_size)
    hs, _ = functional_call(shell, params, (x, h0.unsqueeze(0).contiguous()))
    return hs


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
