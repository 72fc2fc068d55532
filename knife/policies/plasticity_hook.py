"""The Learner's plasticity hook: one object owns the monitor, the intervention, the
trainability probe and their schedules (like dopamine's ReDo recycler); the Learner calls
`after_update` after every optimizer step and `on_task_switch` when the Algorithm moves to
the next task.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from knife.plasticity import StagnationMonitor, plasticity_metrics
from knife.plasticity.config import PlasticityConfig
from knife.plasticity.fresh_reference import FreshReference
from knife.plasticity.probe import TrainabilityProbe
from knife.policies.metric_keys import AT_SWITCH, PLASTICITY, plasticity_key

PREFIX = PLASTICITY


def probe_inputs(
    module: Any, batch: dict[str, torch.Tensor], episodes: int
) -> dict[str, tuple[Callable[[nn.Module], torch.Tensor], torch.Tensor]]:
    """network name -> (run a stand-in for it on the batch, mask of the outputs that count),
    on the first `episodes` episodes of a learner batch (knife.policies.replay_buffer layout).

    agent: the unroll the learner forwards, [B, T+1, N, A] (steps with an action, real
    agents); mixer: the live agent's (detached) Qs of the taken actions and the states,
    [B, T, 1] (filled steps)."""
    sub = {
        k: v[:episodes] if isinstance(v, torch.Tensor) and v.dim() > 0 else v
        for k, v in batch.items()
    }
    filled, agents = sub["filled"], sub["agent_mask"]
    stepped = torch.cat([filled, torch.zeros_like(filled[:, :1])], dim=1)  # [B, T+1]
    out = {}
    names = module.plasticity_networks()
    if "agent" in names:
        agent_mask = stepped[:, :, None, None] * agents[:, None, :, None]
        out["agent"] = (lambda net: module.agent_q_sequence(net, sub), agent_mask)
    if "mixer" in names:
        with torch.no_grad():
            taken = module.agent_q_taken(sub)
        states = sub["state"][:, :-1]
        out["mixer"] = (lambda net: net(taken, states).unsqueeze(-1), filled.unsqueeze(-1))
    return out


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
        # The trainability probe (docs/design.md 9). Its target and fresh networks are drawn
        # from the architecture as built, before any intervention or restore adds frozen
        # parts, as the fresh reference is.
        self.probe = None
        if plasticity.probe.enabled:
            self.probe = TrainabilityProbe(**plasticity.probe.probe_kwargs(), seed=seed)
            self.probe_episodes = plasticity.probe.batch
            self._probe_like = {n: copy.deepcopy(getattr(module, n)) for n in self._names()}
        self.injections = 0
        self.units_changed = 0
        self.last_summary: dict[str, float] = {}

    # --- the two calls the Learner makes ---------------------------------------------

    def after_update(
        self,
        num_updates: int,
        batch_fn: Callable[[], Any],
        loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
        replay_batch: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """After each optimizer step (grads still populated). Returns metrics when due.

        loss_fn(networks) -> this update's TD loss of other networks (a holder with the
        plasticity networks' names) against the same targets: it scores the fresh reference
        on the same batch. replay_batch: that batch itself, for the trainability probe."""
        self.monitor.update()
        probed = {}
        if self.probe is not None and self.probe.should_run("update", num_updates):
            probed = self.probe_metrics(replay_batch)  # before the method acts, as at a switch
        fired = self.intervention.should_fire("update", num_updates)
        if fired:
            self._fire(batch_fn)
        if fired or num_updates % self.metrics_interval == 0:
            if self.fresh is not None and loss_fn is not None:
                self.fresh.measure(loss_fn)
            return {**self.metrics(batch_fn), **probed}
        return probed

    def on_task_switch(
        self,
        num_updates: int,
        batch_fn: Callable[[], Any] | None,
        replay_batch: dict[str, torch.Tensor] | None = None,
    ) -> dict:
        """At a task boundary: measure (the probe too, on `replay_batch`), intervene if
        configured, then restart the EMA."""
        before = self.metrics(batch_fn)
        if self.probe is not None and self.probe.should_run("task_switch", num_updates):
            before.update(self.probe_metrics(replay_batch))
        if self.intervention.should_fire("task_switch", num_updates):
            self._fire(batch_fn)
        # The stagnation EMA describes the finished task; the next one is judged afresh.
        self.monitor.reset()
        out = {AT_SWITCH + k[len(PREFIX) :]: v for k, v in before.items()}
        out.update(self._counters())
        return out

    # --- internals -------------------------------------------------------------------

    def _names(self) -> tuple[str, ...]:
        return tuple(self.module.plasticity_networks())

    def _online(self) -> nn.Module:
        return _holder(self.module, self._names())

    def probe_metrics(self, replay_batch: dict[str, torch.Tensor] | None) -> dict[str, float]:
        """The trainability probe of every plasticity network on the first `batch` episodes
        of `replay_batch` (none: nothing, e.g. right after a restore, before an update)."""
        if self.probe is None or replay_batch is None:
            return {}
        start = time.perf_counter()
        raw: dict[str, float] = {}
        for name, (inputs, mask) in probe_inputs(
            self.module, replay_batch, self.probe_episodes
        ).items():
            network = getattr(self.module, name)
            result = self.probe.measure(network, inputs, mask=mask, like=self._probe_like[name])
            raw.update(result.to_metrics(name))
            raw["probe_steps"] = raw.get("probe_steps", 0.0) + result.steps
        raw["probe_seconds"] = time.perf_counter() - start
        return {plasticity_key(k, self._names()): float(v) for k, v in raw.items()}

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
        networks = self._names()
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
