"""KNIFE (DESIGN 7) and its ablations.

knife                   stagnant units (monitor) -> composite K (frozen) + A (fresh, trainable)
                        + C (frozen copy of A); output unchanged at injection.
knife_no_freeze         K is trainable. To keep the trainable parameter count, K owns no
                        parameters: it is *tied* to the unit's live row,
                        K(t) = K_0 + (A(t) - A_0), so every optimizer step that moves A moves K
                        by the same amount (and A's gradient includes K's). The knowledge is no
                        longer protected - which is what the ablation measures.
knife_no_compensation   plain re-init of the stagnant units' incoming weights (no K, no C; the
                        output changes at injection).
knife_random_units      as knife, on the same number of units per layer chosen uniformly at
                        random instead of the stagnant ones.

GRU layers are scored by the monitor but not injected (no composite GRU unit yet); they are
listed in the summary notes.
"""

from __future__ import annotations

import torch

from knife.plasticity.init import fresh_parameters
from knife.plasticity.monitor import check_tau
from knife.plasticity.optim_state import reset_optimizer_state
from knife.plasticity.structure import ensure_composite
from knife.plasticity.units import find_unit_layers

from .base import Intervention, require
from .ops import linear_only, reinit_incoming

UNIT_CHOICES = ("stagnant", "random")


class KnifeIntervention(Intervention):
    """KNIFE. Needs `monitor=` (a StagnationMonitor updated on this model).

    Options: units ("stagnant" | "random"), freeze (K frozen, default True), compensation
    (build composites, default True), tau (override the monitor's tau), seed (random units).
    """

    name = "knife"

    def __init__(
        self,
        *,
        units: str = "stagnant",
        freeze: bool = True,
        compensation: bool = True,
        tau: float | None = None,
        seed: int | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        if units not in UNIT_CHOICES:
            raise ValueError(f"units must be one of {list(UNIT_CHOICES)}, got {units!r}")
        self.units = units
        self.freeze = bool(freeze)
        self.compensation = bool(compensation)
        self.tau = None if tau is None else check_tau(tau)
        self._gen = None
        if seed is not None:
            self._gen = torch.Generator().manual_seed(int(seed))

    @torch.no_grad()
    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        monitor = require(
            monitor, "monitor= (a StagnationMonitor updated on this model)", self.method
        )
        layers = linear_only(find_unit_layers(model, self.scope), summary.notes, self.method)
        scores = monitor.scores()
        # Stagnant and dead-since-init units alike do not learn; both are replaced.
        masks = monitor.candidate_masks(self.tau)
        changed = {}
        for ly in layers:
            if ly.path not in scores:
                summary.notes.append(f"{ly.path}: not tracked by the monitor, skipped")
                continue
            s = scores[ly.path]
            units = self.select(masks[ly.path], s)
            if self.units == "random" and units.numel():
                units = (
                    torch.randperm(ly.n_units, generator=self._gen)[: units.numel()].sort().values
                )
            units = units.to(ly.module.weight.device)
            summary.units_total[ly.path] = ly.n_units
            summary.units_changed[ly.path] = int(units.numel())
            if units.numel() == 0:
                continue
            if self.compensation:
                comp = ensure_composite(ly)
                fresh = fresh_parameters(comp)
                bias = fresh["bias"][units] if "bias" in fresh else None
                comp.inject(units, fresh["weight"][units], bias, freeze=self.freeze)
                for p in (comp.weight, comp.bias):
                    if p is not None:
                        reset_optimizer_state(optimizer, p, rows=units)
            else:
                reinit_incoming(ly, units, optimizer)
            changed[ly.path] = units
        monitor.reset_units(changed)
