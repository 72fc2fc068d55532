"""Baselines of DESIGN 8: none, reset, shrink_perturb, redo, regrama."""

from __future__ import annotations

from collections.abc import Callable

import torch

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


def _notify_all(
    monitor: StagnationMonitor | None,
    entries: list[str],
    keep: Callable[[str], bool] = lambda path: False,
) -> None:
    """Tell the monitor every unit under `entries` (but the kept ones) starts afresh."""
    if monitor is None:
        return
    monitor.reset_units(
        {
            ly.path: torch.arange(ly.n_units)
            for ly in monitor.layers
            if any(in_scope(ly.path, e) for e in entries) and not keep(ly.path)
        }
    )


# Nikishin et al. 2022, "The Primacy Bias in Deep RL" (evgenii-nikishin/rl_with_resets):
# with an encoder (their DrQ runs) the encoder and its optimizer state are kept and every
# other layer is reset with fresh optimizer state; the replay buffer is kept (here: the
# sequence's switch protocol decides). The QMIX agent's encoder is its input layer fc1.
RESET_SOURCE = {"keep": ["agent.fc1"]}


class ResetIntervention(Intervention):
    """`reset` (Nikishin et al. 2022): re-initialize the networks in scope except the modules
    in `keep` (default: the agent's encoder fc1, as their DrQ resets; `keep=[]` resets
    everything, as their SAC runs do), each leaf with its own reset_parameters, composite and
    injection extras dropped, and fully reset the optimizer state of what was re-initialized,
    including Adam's step count."""

    name = "reset"

    def __init__(self, *, keep: list[str] | None = None, **common) -> None:
        super().__init__(**common)
        keep = list(RESET_SOURCE["keep"]) if keep is None else keep
        keep = [keep] if isinstance(keep, str) else list(keep)
        if not all(isinstance(k, str) and k for k in keep):
            raise ValueError(f"keep must be a list of module paths, got {keep!r}")
        self.keep = keep

    def _kept(self, path: str) -> bool:
        return any(in_scope(path, k) for k in self.keep)

    @torch.no_grad()
    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        entries = scope_modules(model, self.scope)
        for entry in entries:
            mod = get_module(model, entry)
            changed, notes = reinit_module_(mod, entry, keep=self._kept)
            summary.units_changed.update(changed)
            summary.units_total.update(changed)
            summary.notes.extend(notes)
            for path, leaf in param_leaves(mod, entry):
                if path in changed:
                    reset_optimizer_params(optimizer, leaf._parameters.values())
        _notify_all(monitor, entries, self._kept)


# Ash and Adams 2020, "On Warm-Starting Neural Network Training": their public code
# (JordanAsh/warm_start, run.py: --shrink 0.4, --perturb 0.1; theta_fresh is a newly
# initialized network used as the noise).
SHRINK_PERTURB_SOURCE = {"shrink": 0.4, "perturb": 0.1}


class ShrinkPerturbIntervention(Intervention):
    """`shrink_perturb` (Ash and Adams 2020): theta <- shrink * theta + perturb * theta_fresh for
    every trainable parameter in scope, theta_fresh drawn with the layer's own init. Defaults:
    their code's shrink 0.4, perturb 0.1 (SHRINK_PERTURB_SOURCE; BBF's RL use is 0.5 / 0.5,
    SR-SPR's 0.8 / 0.2, both settable). Frozen KNIFE/injection parts are knowledge and are left
    alone. Optimizer state is kept unless reset_optimizer=True (their code builds a new
    optimizer per round: reset_optimizer=True is the literal reading)."""

    name = "shrink_perturb"

    def __init__(
        self,
        *,
        shrink: float = SHRINK_PERTURB_SOURCE["shrink"],
        perturb: float = SHRINK_PERTURB_SOURCE["perturb"],
        reset_optimizer: bool = False,
        **common,
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
            _notify_all(monitor, entries)


class _UnitReinit(Intervention):
    """Shared body of ReDo / ReGraMa: score units, pick low ones, re-init incoming weights."""

    zero_outgoing_default: bool = True

    def __init__(
        self,
        *,
        tau: float = 0.025,
        zero_outgoing: bool | None = None,
        reset_optimizer: bool = True,
        consumers: dict[str, str] | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        self.tau = check_tau(tau)
        self.zero_outgoing = (
            self.zero_outgoing_default if zero_outgoing is None else bool(zero_outgoing)
        )
        self.reset_optimizer = bool(reset_optimizer)
        self.consumers = consumers

    def _scores(self, model, layers, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        layers = linear_only(find_unit_layers(model, self.scope), summary.notes, self.method)
        scores = self._scores(model, layers, batch)
        optimizer = optimizer if self.reset_optimizer else None  # None: state kept
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


# Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL": dormant if the activation
# score is <= 0.025 (their default), recycled every 1000 gradient updates; dopamine's
# recycler (google/dopamine, labs/redo/weight_recyclers.py) re-draws incoming weights, zeroes
# outgoing ones and the recycled weights' Adam moments. Where we differ: dopamine draws the
# incoming weights with xavier_uniform and a zero bias; here each layer's own init is used
# (nn.Linear's), as everywhere in this toolkit.
REDO_SOURCE = {"tau": 0.025, "every_n_updates": 1000, "zero_outgoing": True}


class RedoIntervention(_UnitReinit):
    """`redo` (Sokar et al. 2023): dormant units (activation score <= tau, default 0.025) get
    fresh incoming weights and zero outgoing weights; their optimizer moments are reset (and,
    unlike dopamine, which keeps Adam's count, their steps are a fresh Adam's:
    knife.plasticity.optim_state). Every 1000 updates, as in the paper (REDO_SOURCE), and at
    task switches. Needs `batch`."""

    name = "redo"

    def __init__(
        self, *, every_n_updates: int | None = REDO_SOURCE["every_n_updates"], **options
    ) -> None:
        super().__init__(every_n_updates=every_n_updates, **options)

    def _scores(self, model, layers, batch: Batch | None) -> dict[str, torch.Tensor]:
        require(batch, "batch= (a forward pass on real data) for activation scores", self.method)
        return activation_scores(model, batch, layers=layers)


# Liu et al. 2025, "Measure gradients, not activations!" (NeurIPS 2025), code
# torressliu/grad-based-plasticity-metrics (read from a public copy, utils/ReDo.py
# GradientReDo and SAC/configs.py): score = mean |grad| of a unit's incoming weights over the
# layer mean, reset if <= tau (the README's example 0.1; the code's default 0 would only
# catch exactly-zero gradients), every 1000 gradient updates, incoming weights re-drawn,
# outgoing kept, optimizer state kept.
REGRAMA_SOURCE = {
    "tau": 0.1,
    "every_n_updates": 1000,
    "zero_outgoing": False,
    "reset_optimizer": False,
}


class ReGramaIntervention(_UnitReinit):
    """`regrama` (Liu et al. 2025, REGRAMA_SOURCE): units whose mean |grad| of incoming
    weights / layer mean <= tau (0.1) get re-initialized incoming weights; outgoing weights
    and optimizer state are kept, as in the paper's code; every 1000 updates and at task
    switches. Uses the gradients in .grad (apply after backward). One difference: the
    score here also counts the bias gradient of each unit (the code uses weight.grad only)."""

    name = "regrama"
    zero_outgoing_default = REGRAMA_SOURCE["zero_outgoing"]

    def __init__(
        self,
        *,
        tau: float = REGRAMA_SOURCE["tau"],
        every_n_updates: int | None = REGRAMA_SOURCE["every_n_updates"],
        reset_optimizer: bool = REGRAMA_SOURCE["reset_optimizer"],
        **options,
    ) -> None:
        super().__init__(
            tau=tau, every_n_updates=every_n_updates, reset_optimizer=reset_optimizer, **options
        )

    def _scores(self, model, layers, batch) -> dict[str, torch.Tensor]:
        if not any(p.grad is not None for ly in layers for p in ly.incoming()):
            raise ValueError("regrama needs gradients in .grad: apply it after a backward pass")
        return grama_scores(model, layers=layers)
