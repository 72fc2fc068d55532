"""`reborn` (Qin et al. 2024) for the mixer, DESIGN 8.

Per Linear + activation layer: dormant units (activation score <= tau) take scaled copies of
an over-active unit's incoming weights (score >= over_active_tau; the most active unit if
none is), dormant units spread round-robin over the over-active ones. For over-active unit j
with m dormant copies k (scale alpha_k in [0.5, 1.5]):

    W_in[k] = alpha_k W_in[j]         W_out[:, j] <- W_out[:, j] / (m + 1)
                                      W_out[:, k] <- W_out[:, j] / ((m + 1) alpha_k)

With a positively homogeneous activation (ReLU), phi(alpha z) = alpha phi(z), so the
consumer sees exactly the same sum: the output is kept (up to the dormant units' own,
near-zero, previous contribution). For other activations alpha = 1. Units that carry KNIFE
rows are left out (their output is not a single row's function).
"""

from __future__ import annotations

import torch

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.metrics import activation_scores
from knife.plasticity.monitor import check_tau
from knife.plasticity.optim_state import reset_optimizer_state
from knife.plasticity.units import POSITIVE_HOMOGENEOUS, consumer_columns, find_unit_layers

from .base import Intervention, require
from .ops import linear_only, live_columns, outgoing


class RebornIntervention(Intervention):
    """See the module docstring. Needs `batch`. Default scope: the mixer."""

    name = "reborn"
    default_scope = "mixer"

    def __init__(
        self,
        *,
        tau: float = 0.025,
        over_active_tau: float = 2.0,
        consumers: dict[str, str] | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        self.tau = check_tau(tau)
        if over_active_tau <= 1.0:
            raise ValueError(f"over_active_tau must be > 1, got {over_active_tau!r}")
        self.over_active_tau = float(over_active_tau)
        self.consumers = consumers

    @torch.no_grad()
    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        require(batch, "batch= (a forward pass on real data) for activation scores", self.method)
        layers = linear_only(find_unit_layers(model, self.scope), summary.notes, self.method)
        scores = activation_scores(model, batch, layers=layers)
        changed = {}
        for ly in layers:
            s = scores[ly.path]
            summary.units_total[ly.path] = ly.n_units
            summary.units_changed[ly.path] = 0
            consumer = outgoing(model, ly, self.consumers)
            if consumer is None:
                summary.notes.append(f"{ly.path}: consumer unknown, skipped")
                continue
            free = torch.ones_like(s, dtype=torch.bool)
            if isinstance(ly.module, CompositeLinear):
                free = ~ly.module.units_with_extra_rows().to(s.device)
            dormant = self.select((s <= self.tau) & free, s)
            if dormant.numel() == 0:
                continue
            cand = (s >= self.over_active_tau) & free
            cand[dormant] = False
            over = cand.nonzero().flatten()
            if over.numel() == 0:
                rest = torch.where(free, s, torch.full_like(s, -1.0))
                rest[dormant] = -1.0
                if rest.max() < 0:
                    continue
                over = rest.argmax().reshape(1)
            over = over[s[over].argsort(descending=True)]
            owner = over[torch.arange(dormant.numel(), device=over.device) % over.numel()]
            self._transfer(ly, consumer, dormant, owner, optimizer)
            summary.units_changed[ly.path] = int(dormant.numel())
            changed[ly.path] = dormant
        if monitor is not None:
            monitor.reset_units(changed)

    def _transfer(self, ly, consumer, dormant, owner, optimizer) -> None:
        w, b = ly.module.weight, ly.module.bias
        if isinstance(ly.activation, POSITIVE_HOMOGENEOUS):
            alpha = torch.empty(dormant.numel(), dtype=w.dtype, device=w.device).uniform_(0.5, 1.5)
        else:
            alpha = torch.ones(dormant.numel(), dtype=w.dtype, device=w.device)
        w[dormant] = alpha[:, None] * w[owner]
        if b is not None:
            b[dormant] = alpha * b[owner]
        m = torch.bincount(owner, minlength=ly.n_units).to(w.dtype)
        used = owner.unique()
        for t in consumer_columns(consumer):
            if t.shape[0] == 0:
                continue
            col = t[:, owner]
            t[:, dormant] = col / ((m[owner] + 1) * alpha)
            t[:, used] = t[:, used] / (m[used] + 1)
        for p in (w, b):
            if p is not None:
                reset_optimizer_state(optimizer, p, rows=dormant)
        reset_optimizer_state(optimizer, live_columns(consumer), cols=torch.cat([dormant, used]))
