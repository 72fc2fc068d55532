"""KNIFE composite units (DESIGN 7) as one module per Linear + activation layer.

Layout. A `CompositeLinear` replaces a (Linear, elementwise activation) pair and computes

    out = phi(W x + b)  +  index_add_over_units( sign_r * phi(F_r x + c_r) )

- `weight`/`bias` are the original Linear's Parameter objects, unchanged in identity: they are
  the trainable *active* part of every unit. Optimizers and monitors that hold them by
  reference keep working, and the trainable parameter count never changes.
- Frozen extra rows live in buffers (no gradient, never touched by an optimizer):
  `knife_frozen_weight` [M, in], `knife_frozen_bias` [M], `knife_sign` [M] (+1 knowledge,
  -1 compensation), `knife_index` [M] (the unit each row adds to) and `knife_tied` [M].
- Injecting unit i appends (current row i, +1) as knowledge K, writes fresh values A into
  row i of `weight`/`bias` in place, and appends (A, -1) as compensation C. At injection
  phi(A x) - phi(C x) = 0, so the output is unchanged. Injecting i again appends again: the
  trained active part becomes one more frozen knowledge row.
- A *tied* row (`knife_tied` = 1, used by the no-freeze ablation) has effective weights
  F_r + W[index_r]: it moves with the unit's live row instead of being frozen, so it is
  trainable without owning any parameter.

Buffers resize themselves in `_load_from_state_dict`, so a freshly built model with empty
composites installed loads an injected checkpoint exactly; a plain Linear checkpoint (no
frozen keys) loads into an empty composite too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FROZEN_BUFFERS = (
    "knife_frozen_weight",
    "knife_frozen_bias",
    "knife_sign",
    "knife_index",
    "knife_tied",
)


class CompositeLinear(nn.Module):
    """Linear + elementwise activation whose units can carry frozen knowledge/compensation rows."""

    def __init__(self, linear: nn.Linear | CompositeLinear, activation: nn.Module) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        # Keep the very same tensor objects (Parameters stay Parameters; inside frozen copies
        # made by plasticity injection they are buffers).
        for name in ("weight", "bias"):
            t = getattr(linear, name)
            if t is None or isinstance(t, nn.Parameter):
                self.register_parameter(name, t)
            else:
                self.register_buffer(name, t)
        self.activation = activation
        w = self.weight
        self.register_buffer("knife_frozen_weight", w.new_zeros(0, self.in_features))
        self.register_buffer("knife_frozen_bias", w.new_zeros(0))
        self.register_buffer("knife_sign", w.new_zeros(0))
        self.register_buffer("knife_index", torch.zeros(0, dtype=torch.long, device=w.device))
        self.register_buffer("knife_tied", w.new_zeros(0))
        self._refresh()

    # ----------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(F.linear(x, self.weight, self.bias))
        if self._n_frozen == 0:  # empty composite: exactly the original pair
            return y
        w, b = self.knife_frozen_weight, self.knife_frozen_bias
        if self._has_tied:
            t = self.knife_tied
            w = w + t.unsqueeze(1) * self.weight[self.knife_index]
            if self.bias is not None:
                b = b + t * self.bias[self.knife_index]
        z = self.activation(F.linear(x, w, b)) * self.knife_sign
        return y.index_add(-1, self.knife_index, z)

    # ----------------------------------------------------------------- editing

    @property
    def n_frozen(self) -> int:
        """Number of extra (frozen or tied) rows."""
        return self._n_frozen

    @torch.no_grad()
    def inject(
        self,
        units: torch.Tensor,
        fresh_weight: torch.Tensor,
        fresh_bias: torch.Tensor | None,
        *,
        freeze: bool = True,
    ) -> None:
        """KNIFE-inject `units` (unique long tensor). fresh_* are rows for those units.

        freeze=False (ablation): the knowledge row is tied to the live row instead of frozen.
        """
        units = units.to(self.knife_index.device, torch.long)
        if units.numel() == 0:
            return
        w, b = self.weight, self.bias
        old_w = w[units].clone()
        old_b = b[units].clone() if b is not None else old_w.new_zeros(len(units))
        new_w = fresh_weight.to(w)
        new_b = fresh_bias.to(w) if fresh_bias is not None else old_w.new_zeros(len(units))
        if self._has_tied:
            # tied rows of these units follow the live row: shift their offsets so that their
            # effective values do not jump when the live row is re-initialized
            pos = torch.full((self.out_features,), -1, dtype=torch.long, device=units.device)
            pos[units] = torch.arange(len(units), device=units.device)
            p = pos[self.knife_index]
            rows = (p >= 0) & (self.knife_tied > 0)
            self.knife_frozen_weight[rows] += (old_w - new_w)[p[rows]]
            self.knife_frozen_bias[rows] += (old_b - new_b)[p[rows]]
        w[units] = new_w
        if b is not None:
            b[units] = new_b
        ones = old_w.new_ones(len(units))
        if freeze:
            k_w, k_b, k_t = old_w, old_b, torch.zeros_like(ones)
        else:  # tied: effective K = (old - fresh) + live row, equal to old at injection
            k_w, k_b, k_t = old_w - new_w, old_b - new_b, ones
        self._append(
            torch.cat([k_w, new_w.clone()]),
            torch.cat([k_b, new_b.clone()]),
            torch.cat([ones, -ones]),
            torch.cat([units, units]),
            torch.cat([k_t, torch.zeros_like(ones)]),
        )

    @torch.no_grad()
    def drop_units(self, units: torch.Tensor) -> None:
        """Remove every extra row of `units` (used when a unit is plainly re-initialized)."""
        if self._n_frozen == 0 or units.numel() == 0:
            return
        mask = torch.zeros(self.out_features, dtype=torch.bool, device=self.knife_index.device)
        mask[units.to(mask.device)] = True
        self._keep(~mask[self.knife_index])

    def clear_frozen(self) -> None:
        """Remove all extra rows (the layer becomes its plain Linear + activation again)."""
        self._keep(torch.zeros(self._n_frozen, dtype=torch.bool, device=self.knife_index.device))

    def units_with_extra_rows(self) -> torch.Tensor:
        """Bool [out_features]: units that currently carry frozen or tied rows."""
        mask = torch.zeros(self.out_features, dtype=torch.bool, device=self.knife_index.device)
        mask[self.knife_index] = True
        return mask

    def reset_parameters(self) -> None:
        """nn.Linear's own init for the live part (frozen rows are left alone)."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
                nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"extra_rows={self._n_frozen}"
        )

    # ----------------------------------------------------------------- internals

    def _append(
        self, w: torch.Tensor, b: torch.Tensor, s: torch.Tensor, i: torch.Tensor, t: torch.Tensor
    ) -> None:
        for name, new in zip(FROZEN_BUFFERS, (w, b, s, i, t), strict=True):
            setattr(self, name, torch.cat([getattr(self, name), new.to(getattr(self, name))]))
        self._refresh()

    def _keep(self, keep: torch.Tensor) -> None:
        for name in FROZEN_BUFFERS:
            setattr(self, name, getattr(self, name)[keep].clone())
        self._refresh()

    def _refresh(self) -> None:
        # Python-side caches so forward() never syncs on buffer contents.
        self._n_frozen = int(self.knife_sign.shape[0])
        self._has_tied = bool(self._n_frozen and bool((self.knife_tied > 0).any()))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        absent = []
        for name in FROZEN_BUFFERS:
            key = prefix + name
            cur = getattr(self, name)
            if key in state_dict:
                src = state_dict[key]
                if tuple(src.shape) != tuple(cur.shape):
                    setattr(self, name, cur.new_empty(src.shape))
            else:
                absent.append(key)
                setattr(self, name, cur.new_empty((0, *cur.shape[1:])))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # No frozen keys = a plain Linear's checkpoint = an empty composite: not an error.
        missing_keys[:] = [k for k in missing_keys if k not in absent]
        self._refresh()
