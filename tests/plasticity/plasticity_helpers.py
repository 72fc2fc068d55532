"""Test helpers: the real QMIX agent network and mixer in a small container module."""

from __future__ import annotations

import torch
from torch import nn

from knife.plasticity import find_unit_layers
from knife.policies.agent import RNNAgent
from knife.policies.mixers import QMixer, VDNMixer
from knife.policies.schema import TrainingConfig

B, T, N, D, A, S = 4, 6, 3, 30, 6, 24


class QmixNet(nn.Module):
    """`agent` + `mixer` like the QMIX RLModule; forward -> (agent qs [B,T,N,A], q_tot [B,T])."""

    def __init__(self, mixer: str = "qmix") -> None:
        super().__init__()
        t = TrainingConfig()  # the schema's default sizes
        self.agent = RNNAgent(D, A, t.agent_hidden_dim)
        self.mixer = (
            QMixer(N, S, t.mixer_embed_dim, t.hypernet_dim) if mixer == "qmix" else VDNMixer()
        )

    def forward(self, inputs, states, actions):
        b, _, n, _ = inputs.shape
        qs = self.agent.unroll(inputs, self.agent.initial_state(b, n))
        chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return qs, self.mixer(chosen, states)


def make_batch(seed: int = 0, b: int = B, t: int = T):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(b, t, N, D, generator=g)
    states = torch.randn(b, t, S, generator=g)
    actions = torch.randint(0, A, (b, t, N), generator=g)
    return inputs, states, actions


def td_loss(model: nn.Module, batch, seed: int = 1) -> torch.Tensor:
    _, q_tot = model(*batch)
    target = torch.randn(q_tot.shape, generator=torch.Generator().manual_seed(seed))
    return (q_tot - target).square().mean()


def train(model, optimizer, batch, steps, monitor=None, seed=1):
    for i in range(steps):
        optimizer.zero_grad()
        td_loss(model, batch, seed + i).backward()
        optimizer.step()
        if monitor is not None:
            monitor.update()


def stall_units(model: nn.Module, units: dict[str, torch.Tensor], scale: float = 0.0):
    """Multiply the incoming gradient of the given units by `scale` (0 = no gradient)."""
    handles = []
    for ly in find_unit_layers(model):
        if ly.path not in units:
            continue
        rows = ly.unit_rows(units[ly.path])
        for p in ly.incoming():
            mask = torch.ones(p.shape[0], *([1] * (p.dim() - 1)))
            mask[rows] = scale
            handles.append(p.register_hook(lambda g, m=mask: g * m))
    return handles


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
