"""The fresh-network baseline of the stagnation score (docs/design.md section 6).

A relative score flags the lower tail of any network, a freshly initialized one included
(in a constant-state matrix game about half the hypernetwork units read "stagnant" at the
first measurement). So the score only means stagnation against a control: the same score
on a freshly initialized copy of the same architecture, measured on the same batches with
the same loss. `stagnant_above_fresh = stagnant_fraction(live) - stagnant_fraction(fresh)`
is then ~0 for a network that has not lost anything.

The copy never trains: it is the architecture at initialization, seen through the current
data. It is scored with the gradient signal (it takes no optimizer steps), once per metrics
report; its EMA uses beta ** interval so that it spans as many learner updates as the live
monitor's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from knife.plasticity.init import fresh_copy
from knife.plasticity.monitor import StagnationMonitor


class FreshReference:
    """A frozen-in-time fresh copy of `model` and its own stagnation monitor."""

    def __init__(
        self, model: nn.Module, *, tau: float, beta: float, interval: int, seed: int = 0
    ) -> None:
        # A private RNG stream: building the reference must not move the run's own RNG.
        self.net = fresh_copy(model, seed)
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.monitor = StagnationMonitor(self.net, tau=tau, beta=float(beta) ** int(interval))

    def measure(self, loss_fn: Callable[[nn.Module], torch.Tensor]) -> None:
        """One gradient of `loss_fn(fresh copy)` folded into the reference's EMA."""
        for p in self.net.parameters():
            p.grad = None
        loss_fn(self.net).backward()
        self.monitor.update()

    def metrics(self, live: StagnationMonitor | Mapping[str, float]) -> dict[str, float]:
        """fresh_stagnant_fraction/<layer> and stagnant_above_fresh/<layer> (live - fresh).

        `live`: the live monitor, or the metrics already read from it (its
        stagnant_fraction/... keys), so a report does not compute them twice."""
        if self.monitor.num_updates == 0:
            return {}
        fresh = self.monitor.stagnant_fraction()
        ours = live.stagnant_fraction() if isinstance(live, StagnationMonitor) else live
        out = {f"fresh_{k}": v for k, v in fresh.items()}
        for key, value in fresh.items():
            if key in ours:
                out[key.replace("stagnant_fraction", "stagnant_above_fresh", 1)] = ours[key] - value
        return out

    def state_dict(self) -> dict:
        return {"monitor": self.monitor.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.monitor.load_state_dict(state["monitor"])
