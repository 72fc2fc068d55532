"""Shared machinery of all interventions: triggers, scope, cap, target structure, summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from knife.plasticity.metrics import Batch
from knife.plasticity.monitor import StagnationMonitor
from knife.plasticity.structure import mirror_structure
from knife.plasticity.units import Scope

EVENTS = ("task_switch", "update")


@dataclass
class InterventionSummary:
    """What an intervention changed: units per layer (or per parameter leaf for network-level
    methods), the number of units those layers have, and free-text notes."""

    method: str
    units_changed: dict[str, int] = field(default_factory=dict)
    units_total: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_changed(self) -> int:
        return sum(self.units_changed.values())

    def to_metrics(self, prefix: str = "intervention") -> dict[str, float]:
        """Flat metric names: "<prefix>/units_changed/<path>" and ".../total"."""
        out = {f"{prefix}/units_changed/{p}": float(n) for p, n in self.units_changed.items()}
        out[f"{prefix}/units_changed/total"] = float(self.total_changed)
        return out


class Intervention:
    """Base class. Subclasses implement `_apply`.

    Options shared by all methods:
    - on_task_switch (bool, default True): fire on the "task_switch" event;
    - every_n_updates (int | None): also fire on every n-th "update" event;
    - scope: "agent", "mixer", a module path or a list of them (None: every network of the
      model it is given; the policies give it the algorithm's plasticity networks);
    - max_fraction (float in (0, 1] | None): cap on the fraction of units changed per layer,
      the lowest-scoring units first (unit-level methods; network-level methods ignore it).

    A target network only gets the structure the intervention added (empty composites, zero
    injection terms), never values: its function is kept until the next regular target
    update, exactly as for `none`. What the targets do at a task switch is the sequence's
    switch protocol (knife.envs.tasks.TaskSequence: target_on_switch), the same for every
    method, so no method enters a task with a fresher target than another.
    """

    name: ClassVar[str] = "base"
    default_scope: ClassVar[Scope] = None

    def __init__(
        self,
        *,
        on_task_switch: bool = True,
        every_n_updates: int | None = None,
        scope: Scope = None,
        max_fraction: float | None = None,
    ) -> None:
        if every_n_updates is not None and (
            not isinstance(every_n_updates, int) or every_n_updates <= 0
        ):
            raise ValueError(
                f"every_n_updates must be a positive int or None, got {every_n_updates!r}"
            )
        if max_fraction is not None and not 0.0 < float(max_fraction) <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1] or None, got {max_fraction!r}")
        self.method = self.name
        self.on_task_switch = bool(on_task_switch)
        self.every_n_updates = every_n_updates
        self.scope = self.default_scope if scope is None else scope
        self.max_fraction = None if max_fraction is None else float(max_fraction)

    def should_fire(self, event: str, num_updates: int) -> bool:
        """Whether to apply now. event: "task_switch" or "update" (after learner update n)."""
        if event not in EVENTS:
            raise ValueError(f"event must be one of {list(EVENTS)}, got {event!r}")
        if event == "task_switch":
            return self.on_task_switch
        n = self.every_n_updates
        return n is not None and num_updates > 0 and num_updates % n == 0

    def apply(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        monitor: StagnationMonitor | None = None,
        batch: Batch | None = None,
        target: nn.Module | None = None,
    ) -> InterventionSummary:
        """Change `model` in place (never replacing Parameters the optimizer holds), reset the
        optimizer state of what was re-initialized, and give `target` the same structure."""
        summary = InterventionSummary(self.method)
        self._apply(model, optimizer, monitor=monitor, batch=batch, summary=summary)
        if target is not None:
            mirror_structure(model, target)
        return summary

    def _apply(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        monitor: StagnationMonitor | None,
        batch: Batch | None,
        summary: InterventionSummary,
    ) -> None:
        raise NotImplementedError

    def select(self, candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Indices of candidate units, capped at max_fraction (lowest scores kept)."""
        idx = candidates.nonzero().flatten()
        if self.max_fraction is not None:
            cap = int(self.max_fraction * candidates.numel())
            if idx.numel() > cap:
                keep = scores[idx].argsort()[:cap]
                idx = idx[keep].sort().values
        return idx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r}, scope={self.scope!r})"


def require(value: Any, what: str, method: str) -> Any:
    if value is None:
        raise ValueError(f"{method} needs {what}")
    return value
