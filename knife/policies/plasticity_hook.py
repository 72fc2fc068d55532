"""The Learner's plasticity hook: one object owns the monitor, the intervention and its
schedule (like dopamine's ReDo recycler); the Learner calls `after_update` after every
optimizer step and `on_task_switch` when the Algorithm moves to the next task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from knife.plasticity import StagnationMonitor, plasticity_metrics
from knife.plasticity.config import PlasticityConfig
from knife.plasticity.fresh_reference import FreshReference
from knife.policies.metric_keys import AT_SWITCH, PLASTICITY, plasticity_key

PREFIX = PLASTICITY


def _holder(module: nn.Module, names: tuple[str, ...], prefix: str = "") -> nn.Module:
    """The networks `names` of `module` (attributes `<prefix><name>`) as the children of
    one module, under their own names: the model the plasticity toolkit works on."""
    holder = nn.Module()
    for name in names:
        holder.add_module(name, getattr(module, prefix + name))
    return holder


class PlasticityHook:
    """Monitor + intervention for one QMixRLModule and its optimizer.

    The networks it watches and changes are the module's `plasticity_networks()` (the
    algorithm's entry in knife.policies.registry); their targets are `target_<name>`.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: dict,
        *,
        seed: int = 0,
    ) -> None:
        plasticity = PlasticityConfig.from_mapping(config)
        self.module = module
        self.optimizer = optimizer
        self.method = plasticity.method
        self.metrics_interval = plasticity.monitor.metrics_interval
        self.monitor_options = plasticity.monitor.monitor_kwargs()
        self.monitor = StagnationMonitor(self._online(), **self.monitor_options)
        # Built before any intervention or restore: the plain architecture, freshly drawn.
        self.fresh = None
        if plasticity.monitor.fresh_reference:
            self.fresh = FreshReference(
                self._online(),
                tau=self.monitor_options["tau"],
                beta=self.monitor_options["beta"],
                interval=self.metrics_interval,
                seed=seed,
            )
        self.intervention = plasticity.build_intervention()
        self.injections = 0
        self.units_changed = 0
        self.last_summary: dict[str, float] = {}

    # --- the two calls the Learner makes ---------------------------------------------

    def after_update(
        self,
        num_updates: int,
        batch_fn: Callable[[], Any],
        loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """After each optimizer step (grads still populated). Returns metrics when due.

        loss_fn(networks) -> this update's TD loss of other networks (a holder with the
        plasticity networks' names) against the same targets: it scores the fresh reference
        on the same batch."""
        self.monitor.update()
        fired = self.intervention.should_fire("update", num_updates)
        if fired:
            self._fire(batch_fn)
        if fired or num_updates % self.metrics_interval == 0:
            if self.fresh is not None and loss_fn is not None:
                self.fresh.measure(loss_fn)
            return self.metrics(batch_fn)
        return {}

    def on_task_switch(self, num_updates: int, batch_fn: Callable[[], Any] | None) -> dict:
        """At a task boundary: measure, intervene if configured, then restart the EMA."""
        before = self.metrics(batch_fn)
        if self.intervention.should_fire("task_switch", num_updates):
            self._fire(batch_fn)
        # The stagnation EMA describes the finished task; the next one is judged afresh.
        self.monitor.reset()
        out = {AT_SWITCH + k[len(PREFIX) :]: v for k, v in before.items()}
        out.update(self._counters())
        return out

    # --- internals -------------------------------------------------------------------

    def _online(self) -> nn.Module:
        return _holder(self.module, self.module.plasticity_networks())

    def _fire(self, batch_fn: Callable[[], Any] | None) -> None:
        module = self.module
        names = module.plasticity_networks()
        online = self._online()
        # Interventions mirror their changes into a target with the same child names.
        target = _holder(module, names, prefix="target_")
        summary = self.intervention.apply(
            online, self.optimizer, monitor=self.monitor, batch=batch_fn, target=target
        )
        # Network-level methods may wrap a whole network: keep the module's handles current.
        for name in names:
            setattr(module, name, getattr(online, name))
            setattr(module, "target_" + name, getattr(target, name))
        self.injections += 1
        self.units_changed += int(summary.total_changed)
        self.last_summary = {k: float(v) for k, v in summary.to_metrics().items()}

    def _counters(self) -> dict[str, float]:
        return {
            f"{PREFIX}interventions": float(self.injections),
            f"{PREFIX}units_changed_total": float(self.units_changed),
        }

    def metrics(self, batch_fn: Callable[[], Any] | None) -> dict[str, float]:
        with torch.no_grad():
            raw = plasticity_metrics(self._online(), batch=batch_fn, monitor=self.monitor)
        if self.fresh is not None:
            raw.update(self.fresh.metrics(raw))  # raw already holds the live fractions
        networks = tuple(self.module.plasticity_networks())
        # Named per network and per layer (`plasticity/<network>/<metric>`): one chart
        # section each in MLflow (docs/design.md 10).
        out = {plasticity_key(k, networks): float(v) for k, v in raw.items()}
        out.update(self._counters())
        for k, v in self.last_summary.items():  # what the latest intervention changed
            out[plasticity_key(f"last_{k}", networks)] = v
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor.state_dict(),
            "fresh": None if self.fresh is None else self.fresh.state_dict(),
            "injections": self.injections,
            "units_changed": self.units_changed,
            "last_summary": dict(self.last_summary),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The module may have gained composites on restore: rebuild the monitor on it.
        self.monitor = StagnationMonitor(self._online(), **self.monitor_options)
        self.monitor.load_state_dict(state["monitor"])
        if self.fresh is not None and state.get("fresh") is not None:
            self.fresh.load_state_dict(state["fresh"])
        self.injections = int(state["injections"])
        self.units_changed = int(state["units_changed"])
        self.last_summary = dict(state["last_summary"])
