"""Baselines of DESIGN 8: none, reset, shrink_perturb, redo, regrama."""

from __future__ import annotations

import torch
from torch import nn

from knife.plasticity.init import fresh_parameters, leaf_units, param_leaves, reinit_module_
from knife.plasticity.metrics import Batch, activation_scores, grama_scores
from knife.plasticity.monitor import StagnationMonitor, check_tau
from knife.plasticity.optim_state import reset_optimizer_params, reset_optimizer_state
from knife.plasticity.units import find_unit_layers, get_module, in_scope, scope_modules

from .base import Intervention, require
from .ops import linear_only, outgoing, reinit_incoming, zero_outgoing


class NoIntervention(Intervention):
    """`none`: never fires, changes nothing."""

    name = "none"

    def should_fire(self, event: str, num_updates: int) -> bool:
        super().should_fire(event, num_updates)  # validates the event
        return False

    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        return None


def _notify_all(monitor: StagnationMonitor | None, model: nn.Module, entries: list[str]) -> None:
    if monitor is None:
        return
    monitor.reset_units(
        {
            ly.path: torch.arange(ly.n_units)
            for ly in monitor.layers
            if any(in_scope(ly.path, e) for e in entries)
        }
    )


class ResetIntervention(Intervention):
    """`reset`: re-initialize whole networks in scope (every Linear/GRUCell/... with its own
    reset_parameters, composite and injection extras dropped) and fully reset their optimizer
    state, including Adam's step count."""

    name = "reset"

    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        entries = scope_modules(model, self.scope)
        for entry in entries:
            mod = get_module(model, entry)
            changed, notes = reinit_module_(mod, entry)
            summary.units_changed.update(changed)
            summary.units_total.update(changed)
            summary.notes.extend(notes)
            reset_optimizer_params(optimizer, (p for p in mod.parameters() if p.requires_grad))
        _notify_all(monitor, model, entries)


class ShrinkPerturbIntervention(Intervention):
    """`shrink_perturb` (Ash and Adams 2020): theta <- shrink * theta + perturb * theta_fresh for
    every trainable parameter in scope, theta_fresh drawn with the layer's own init. Frozen
    KNIFE/injection parts are knowledge and are left alone. Optimizer state is kept unless
    reset_optimizer=True."""

    name = "shrink_perturb"

    def __init__(
        self, *, shrink: float = 0.8, perturb: float = 0.01, reset_optimizer: bool = False, **common
    ) -> None:
        super().__init__(**common)
        if not 0.0 <= shrink <= 1.0:
            raise ValueError(f"shrink must be in [0, 1], got {shrink!r}")
        if perturb < 0.0:
            raise ValueError(f"perturb must be >= 0, got {perturb!r}")
        self.shrink, self.perturb, self.reset_optimizer = (
            float(shrink),
            float(perturb),
            reset_optimizer,
        )

    @torch.no_grad()
    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        entries = scope_modules(model, self.scope)
        for entry in entries:
            for path, m in param_leaves(get_module(model, entry), entry):
                fresh = fresh_parameters(m)
                if not fresh:
                    summary.notes.append(f"{path}: no reset_parameters, only shrunk")
                for name, p in m._parameters.items():
                    if p is None or not p.requires_grad:
                        continue
                    p.mul_(self.shrink)
                    if name in fresh:
                        p.add_(fresh[name].to(p), alpha=self.perturb)
                    if self.reset_optimizer:
                        reset_optimizer_state(optimizer, p)
                summary.units_changed[path] = summary.units_total[path] = leaf_units(m)
        if self.reset_optimizer:
            _notify_all(monitor, model, entries)


class _UnitReinit(Intervention):
    """Shared body of ReDo / ReGraMa: score units, pick low ones, re-init incoming weights."""

    zero_outgoing_default: bool = True

    def __init__(
        self,
        *,
        tau: float = 0.025,
        zero_outgoing: bool | None = None,
        consumers: dict[str, str] | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        self.tau = check_tau(tau)
        self.zero_outgoing = (
            self.zero_outgoing_default if zero_outgoing is None else bool(zero_outgoing)
        )
        self.consumers = consumers

    def _scores(self, model, layers, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        layers = linear_only(find_unit_layers(model, self.scope), summary.notes, self.method)
        scores = self._scores(model, layers, batch)
        changed = {}
        for ly in layers:
            s = scores[ly.path]
            units = self.select(s <= self.tau, s)
            summary.units_total[ly.path] = ly.n_units
            summary.units_changed[ly.path] = int(units.numel())
            if units.numel() == 0:
                continue
            if self.zero_outgoing:
                consumer = outgoing(model, ly, self.consumers)
                if consumer is None:
                    summary.notes.append(
                        f"{ly.path}: consumer unknown, outgoing weights not zeroed"
                    )
                else:
                    zero_outgoing(consumer, units, optimizer)
            reinit_incoming(ly, units, optimizer)
            changed[ly.path] = units
        if monitor is not None:
            monitor.reset_units(changed)


class RedoIntervention(_UnitReinit):
    """`redo` (Sokar et al. 2023): dormant units (activation score <= tau, default 0.025) get
    fresh incoming weights and zero outgoing weights; their optimizer moments are reset.
    Needs `batch`."""

    name = "redo"

    def _scores(self, model, layers, batch: Batch | None) -> dict[str, torch.Tensor]:
        require(batch, "batch= (a forward pass on real data) for activation scores", self.method)
        return activation_scores(model, batch, layers=layers)


class ReGramaIntervention(_UnitReinit):
    """`regrama` (gradient magnitude): units whose mean |grad| of incoming weights / layer mean
    <= tau get re-initialized incoming weights (outgoing kept unless zero_outgoing=True);
    optimizer moments reset. Uses the gradients in .grad (apply after backward)."""

    name = "regrama"
    zero_outgoing_default = False

    def _scores(self, model, layers, batch) -> dict[str, torch.Tensor]:
        if not any(p.grad is not None for ly in layers for p in ly.incoming()):
            raise ValueError("regrama needs gradients in .grad: apply it after a backward pass")
        return grama_scores(model, layers=layers)
