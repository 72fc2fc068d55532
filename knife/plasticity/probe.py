"""Trainability probe (Lyle et al. 2023, "Understanding plasticity in neural networks";
docs/design.md section 9).

Can the network still fit something new, independent of what exploration shows it? On a
batch of recent inputs:
  1. targets: the outputs of a freshly initialized network of the same architecture,
     fixed, each output feature (the last dimension) standardized over the (masked) batch
     to mean 0, variance 1;
  2. a deep copy of the network is fitted to them for `steps` full-batch steps of a fresh
     Adam (`lr`); its final loss is `loss`;
  3. another freshly initialized network is fitted the same way: `fresh_loss`;
  4. `ratio = loss / fresh_loss` (both plus RATIO_FLOOR): ~1 = as trainable as a fresh
     network, >> 1 = trainability lost.
The loss is the mean squared error against the standardized targets, so it is the fraction
of the targets' variance left unexplained (1 = no better than predicting each output's
mean) and compares across networks and batches. Both initializations are drawn from seeds
derived from `seed` by a hash, so neither coincides with a network the run itself built
from a small seed (a live network starting at the targets would read as very trainable).
The network, its optimizer and the run's RNG are untouched: the probe works on copies, in
a private RNG stream. Seeded: the same network and inputs give the same numbers.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from knife.plasticity.init import fresh_copy
from knife.plasticity.metrics import run_batch

# How to run a network on the batch: a callable taking the network (e.g. the recurrent
# agent's unroll over episodes), or a tensor / tuple / dict passed to `network(...)`.
ProbeInputs = Callable[[nn.Module], torch.Tensor] | torch.Tensor | tuple | list | dict

EVENTS = ("task_switch", "update")
# Losses below this fraction of the targets' variance count as a complete fit: the ratio is
# (loss + floor) / (fresh_loss + floor), so two near-perfect fits (the QMIX mixer reaches
# ~1e-5) read ~1 instead of a ratio of round-off.
RATIO_FLOOR = 1e-3


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one network."""

    loss: float  # the copy's normalized loss after the fit
    fresh_loss: float  # a fresh network's, fitted the same way
    ratio: float  # (loss + RATIO_FLOOR) / (fresh_loss + RATIO_FLOOR)
    initial_loss: float  # the copy's before the fit
    seconds: float  # wall time of the whole probe
    steps: int  # optimizer steps taken (both fits)

    def to_metrics(self, network: str) -> dict[str, float]:
        """Toolkit-style names `<metric>/<network>` (knife.policies.metric_keys turns them
        into `plasticity/<network>/<metric>`)."""
        return {
            f"probe_loss/{network}": self.loss,
            f"probe_fresh_loss/{network}": self.fresh_loss,
            f"probe_loss_ratio/{network}": self.ratio,
            f"probe_initial_loss/{network}": self.initial_loss,
            f"probe_seconds/{network}": self.seconds,
        }


class TrainabilityProbe:
    """The probe (module docstring) and its schedule: at task switches (`at_switch`) and
    every `every` learner updates (0: never periodically)."""

    def __init__(
        self,
        *,
        steps: int = 100,
        lr: float = 1e-3,
        every: int = 0,
        at_switch: bool = True,
        seed: int = 0,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps: must be an integer >= 1, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr: must be a number > 0, got {lr!r}")
        if every < 0:
            raise ValueError(f"every: must be an integer >= 0 (0: only at switches), got {every!r}")
        self.steps = int(steps)
        self.lr = float(lr)
        self.every = int(every)
        self.at_switch = bool(at_switch)
        self.target_seed = derived_seed(seed, "targets")
        self.fresh_seed = derived_seed(seed, "fresh")  # another draw: not at the targets

    def should_run(self, event: str, num_updates: int) -> bool:
        """event: "task_switch" or "update" (after learner update `num_updates`)."""
        if event == "task_switch":
            return self.at_switch
        if event == "update":
            return self.every > 0 and num_updates > 0 and num_updates % self.every == 0
        raise ValueError(f"event: unknown {event!r}; allowed: {', '.join(EVENTS)}")

    def measure(
        self,
        network: nn.Module,
        inputs: ProbeInputs,
        *,
        mask: torch.Tensor | None = None,
        like: nn.Module | None = None,
    ) -> ProbeResult:
        """Probe `network` on `inputs` (module docstring).

        mask: 1 where an output counts (broadcastable to the output; padding 0). like: the
        architecture the target and fresh networks are drawn from (default `network`
        itself); give the plain network when `network` carries intervention extras (frozen
        KNIFE rows, injected heads), so "fresh" means the architecture at initialization.
        """
        start = time.perf_counter()
        like = network if like is None else like
        devices = sorted(
            {p.device.index or 0 for p in network.parameters() if p.device.type == "cuda"}
        )
        # A private RNG stream and grad mode on whatever the caller's context is.
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            with torch.no_grad():
                raw = _forward(fresh_copy(like, self.target_seed), inputs)
                weight = _weight(raw, mask)
                targets = _standardized(raw, weight)
            probed = copy.deepcopy(network)
            initial = _loss(probed, inputs, targets, weight)
            loss = self._fit(probed, inputs, targets, weight)
            fresh_loss = self._fit(fresh_copy(like, self.fresh_seed), inputs, targets, weight)
        return ProbeResult(
            loss=loss,
            fresh_loss=fresh_loss,
            ratio=(loss + RATIO_FLOOR) / (fresh_loss + RATIO_FLOOR),
            initial_loss=initial,
            seconds=time.perf_counter() - start,
            steps=2 * self.steps,
        )

    def _fit(
        self, net: nn.Module, inputs: ProbeInputs, targets: torch.Tensor, weight: torch.Tensor
    ) -> float:
        """`steps` full-batch Adam steps on `net`; its loss afterwards."""
        params = [p for p in net.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        optimizer = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            residual = (_forward(net, inputs) - targets) ** 2
            ((residual * weight).sum() / weight.sum()).backward()
            optimizer.step()
        return _loss(net, inputs, targets, weight)


def derived_seed(seed: int, role: str) -> int:
    """A seed for one of the probe's networks, a stable hash of (seed, role)."""
    digest = hashlib.sha256(f"knife.plasticity.probe/{int(seed)}/{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch.manual_seed takes < 2**63


def _standardized(raw: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each output feature (last dim) to mean 0, variance 1 over the weighted rows."""
    rows = tuple(range(raw.dim() - 1))
    count = weight.sum(dim=rows, keepdim=True).clamp(min=1.0)
    mean = (raw * weight).sum(dim=rows, keepdim=True) / count
    var = ((raw - mean) ** 2 * weight).sum(dim=rows, keepdim=True) / count
    return (raw - mean) / var.sqrt().clamp(min=1e-8)


def _forward(net: nn.Module, inputs: ProbeInputs) -> torch.Tensor:
    out: Any = inputs(net) if callable(inputs) else run_batch(net, inputs)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the probed network must return a tensor, got {type(out).__name__}")
    return out


def _weight(out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(out)
    weight = torch.broadcast_to(mask.to(out.dtype), out.shape)
    if not weight.sum() > 0:
        raise ValueError("mask: selects no output of the probed network")
    return weight


@torch.no_grad()
def _loss(net: nn.Module, inputs: ProbeInputs, targets: torch.Tensor, w: torch.Tensor) -> float:
    return float((((_forward(net, inputs) - targets) ** 2) * w).sum() / w.sum())
