"""Network-level plasticity injection wrapper (Nikishin et al. 2023), DESIGN 8.

`InjectedModule(live)` computes live(*args) + sum_k sign_k * frozen_k(*args).

One injection appends frozen_old (a frozen copy of the current function, sign +1),
re-initializes `live` in place and appends frozen_copy_of_new (sign -1). The live module's
Parameter objects are the ones the optimizer already holds: they become the trainable `new`
part after the in-place re-init; frozen copies keep their values as buffers, so they are not
parameters at all (trainable count unchanged, nothing for an optimizer to find). A second
injection simply appends two more terms.

The wrapper is transparent for paths: the monitor and bookkeeping treat `wrapper.live` as if
it sat at the wrapper's own path, and skip the frozen copies.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """Deep copy of `module` whose parameters are turned into buffers (no grad, not trainable)."""
    clone = copy.deepcopy(module)
    for m in clone.modules():
        for name, p in list(m._parameters.items()):
            del m._parameters[name]
            m.register_buffer(name, None if p is None else p.detach().requires_grad_(False))
    return clone


class FrozenTerms(nn.ModuleList):
    """Frozen copies a network keeps for its own plasticity injection (e.g. the recurrent
    agent's old and compensation heads). They are knowledge, not units: the toolkit's module
    walk (`units.iter_modules`) skips them, as it skips an InjectedModule's frozen terms."""


class InjectedModule(nn.Module):
    """out = live(x) + sum_k sign_k * frozen_k(x); see the module docstring."""

    def __init__(self, live: nn.Module) -> None:
        super().__init__()
        self.live = live
        self.frozen = nn.ModuleList()
        self.register_buffer("injection_signs", torch.zeros(0))
        self._signs: list[float] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.live(*args, **kwargs)
        for sign, term in zip(self._signs, self.frozen, strict=True):
            out = _combine(out, term(*args, **kwargs), sign)
        return out

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped network (e.g. mixer.n_agents) stay reachable.
        try:
            return super().__getattr__(name)
        except AttributeError:
            live = super().__getattr__("live")
            return getattr(live, name)

    def add_frozen(self, module: nn.Module, sign: float) -> None:
        """Append an already frozen term."""
        self.frozen.append(module)
        sign_t = torch.tensor([float(sign)], device=self.injection_signs.device)
        self.injection_signs = torch.cat([self.injection_signs, sign_t.to(self.injection_signs)])
        self._signs = [float(s) for s in self.injection_signs.tolist()]

    def clear_frozen(self) -> None:
        """Drop all frozen terms (the wrapper becomes the identity around `live`)."""
        self.frozen = nn.ModuleList()
        self.injection_signs = self.injection_signs[:0].clone()
        self._signs = []

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # Resize the list of frozen terms before children load (children load after this).
        key = prefix + "injection_signs"
        n = int(state_dict[key].shape[0]) if key in state_dict else 0
        while len(self.frozen) < n:
            self.frozen.append(frozen_copy(self.live))
        while len(self.frozen) > n:
            del self.frozen[len(self.frozen) - 1]
        if self.injection_signs.shape[0] != n:
            self.injection_signs = self.injection_signs.new_zeros(n)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._signs = [float(s) for s in self.injection_signs.tolist()]


def _combine(out: Any, extra: Any, sign: float) -> Any:
    if isinstance(out, torch.Tensor):
        return out.add(extra, alpha=sign)
    if isinstance(out, tuple | list):
        return type(out)(_combine(a, b, sign) for a, b in zip(out, extra, strict=True))
    raise TypeError(f"plasticity injection: cannot combine outputs of type {type(out).__name__}")
