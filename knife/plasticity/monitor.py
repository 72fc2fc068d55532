"""Stagnant-neuron monitor (DESIGN 6).

For unit i with incoming weights W_i (row i of a Linear weight plus its bias entry; for a
GRUCell rows i, H+i, 2H+i of weight_ih and weight_hh plus the bias entries):

    r_i(t) = ||g_i(t)|| / (||W_i(t)|| + eps)           g = gradient (signal="grad")
                                                         or the step's actual change ("update")
    R_i    = EMA_beta(r_i)   (the first update after a reset initializes it)
    s_i    = R_i / mean_j R_j
    stagnant: s_i < tau and the unit has had a gradient since initialization
    dead since init: the unit's gradient has been exactly zero at every update so far
    volatile: s_i > volatile_threshold (reported only)

Both raw ratios (gradient and the optimizer's actual step) are tracked whatever `signal`
picks for the score, and reported as absolute per-layer percentiles, so a layer-wide decline
is visible even where the relative score (which only sees the tail) is not. Dead units are
kept apart from stagnant ones: a unit that never learned (a ReLU dead from initialization,
common in the hypernetworks of a constant-state game) is not a unit that *lost* plasticity.

`update()` is a handful of tensor ops per layer with no Python loop over units and no
host sync; everything that returns Python floats happens in the reporting methods.
A parameter whose .grad is None contributes a zero gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from knife.plasticity.units import Scope, UnitLayer, find_unit_layers, fraction_metrics

SIGNALS = ("grad", "update")
PERCENTILES = (10, 50, 90)  # of the absolute ratios, per layer


def check_tau(tau: float, name: str = "tau") -> float:
    """tau must lie in (0, 1]."""
    if not isinstance(tau, int | float) or isinstance(tau, bool) or not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {tau!r}")
    return float(tau)


def per_unit_sq(t: torch.Tensor, gates: int, n: int) -> torch.Tensor:
    """Sum of squares of each unit's entries: [gates*n, ...] -> [n]."""
    return t.square().reshape(gates, n, -1).sum(dim=(0, 2))


class StagnationMonitor:
    """Tracks the smoothed update ratio of every hidden unit of `model` (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        tau: float = 0.25,
        beta: float = 0.99,
        signal: str = "grad",
        *,
        scope: Scope = None,
        volatile_threshold: float = 4.0,
        eps: float = 1e-8,
    ) -> None:
        self.tau = check_tau(tau)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {list(SIGNALS)}, got {signal!r}")
        if volatile_threshold <= 1.0:
            raise ValueError(f"volatile_threshold must be > 1, got {volatile_threshold!r}")
        self.beta = float(beta)
        self.signal = signal
        self.volatile_threshold = float(volatile_threshold)
        self.eps = float(eps)
        self.layers: list[UnitLayer] = find_unit_layers(model, scope)
        if not self.layers:
            raise ValueError("StagnationMonitor: the model has no unit layers in scope")
        # Parameters are held by reference: interventions edit them in place and composites
        # reuse them, so these stay valid across injections.
        self._params = {ly.path: ly.incoming() for ly in self.layers}
        self._shape = {ly.path: (ly.gates, ly.n_units) for ly in self.layers}
        w0 = self.layers[0].incoming()[0]
        zeros = {ly.path: torch.zeros(ly.n_units, device=w0.device) for ly in self.layers}
        self._ema_by_signal = {s: {p: z.clone() for p, z in zeros.items()} for s in SIGNALS}
        self._ema = self._ema_by_signal[signal]  # the one the score uses
        self._ever_active = {p: torch.zeros_like(z, dtype=torch.bool) for p, z in zeros.items()}
        # Units that have seen an update since they were (re)initialized: only those can
        # be called dead.
        self._judged = {p: torch.zeros_like(z, dtype=torch.bool) for p, z in zeros.items()}
        self._prev: dict[str, list[torch.Tensor]] = {}
        self.num_updates = 0  # since the last reset (task switch)
        self._snapshot()

    @property
    def paths(self) -> list[str]:
        return [ly.path for ly in self.layers]

    # ----------------------------------------------------------------- measurement

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current step into the EMAs. Call after each optimizer step."""
        first = self.num_updates == 0
        for path, params in self._params.items():
            gates, n = self._shape[path]
            prev = self._prev[path]
            if prev[0].device != params[0].device:  # the model was moved
                prev = self._prev[path] = [p.detach().clone() for p in params]
            w2 = g2 = d2 = None
            for k, p in enumerate(params):
                w = per_unit_sq(p, gates, n)
                d = per_unit_sq(p - prev[k], gates, n)
                w2 = w if w2 is None else w2 + w
                d2 = d if d2 is None else d2 + d
                if p.grad is not None:
                    g = per_unit_sq(p.grad, gates, n)
                    g2 = g if g2 is None else g2 + g
                prev[k].copy_(p)
            if g2 is None:
                g2 = torch.zeros_like(w2)
            norm = w2.sqrt_().add_(self.eps)
            ratios = {"grad": g2.sqrt() / norm, "update": d2.sqrt_().div_(norm)}
            for signal, ratio in ratios.items():
                ema = self._ema_by_signal[signal][path]
                if ema.device != ratio.device:
                    ema = self._ema_by_signal[signal][path] = ema.to(ratio.device)
                if first:
                    ema.copy_(ratio)
                else:
                    ema.mul_(self.beta).add_(ratio, alpha=1.0 - self.beta)
            ever = self._ever_active[path]
            if ever.device != g2.device:
                ever = self._ever_active[path] = ever.to(g2.device)
            ever.logical_or_(g2 > 0)
            self._judged[path] = self._judged[path].to(ever.device).fill_(True)
        self.num_updates += 1

    def ratios(self) -> dict[str, torch.Tensor]:
        """The smoothed update ratios R_i per layer (copies)."""
        return {p: e.clone() for p, e in self._ema.items()}

    def scores(self) -> dict[str, torch.Tensor]:
        """Normalized scores s_i = R_i / mean_j R_j per layer (all ones before any update)."""
        if self.num_updates == 0:
            return {p: torch.ones_like(e) for p, e in self._ema.items()}
        return {p: e / e.mean().clamp_min(1e-30) for p, e in self._ema.items()}

    def stagnant_masks(self, tau: float | None = None) -> dict[str, torch.Tensor]:
        """Bool mask per layer: s_i < tau (default: the monitor's tau) among the units that
        have had a gradient since initialization (dead ones: `dead_masks`)."""
        t = self.tau if tau is None else check_tau(tau)
        return {p: (s < t) & self._ever_active[p] for p, s in self.scores().items()}

    def dead_masks(self) -> dict[str, torch.Tensor]:
        """Bool mask per layer: units whose gradient has been zero at every update since
        initialization (or since they were re-initialized). Empty before any update."""
        return {p: self._judged[p] & ~e for p, e in self._ever_active.items()}

    def candidate_masks(self, tau: float | None = None) -> dict[str, torch.Tensor]:
        """Units that do not learn, stagnant or dead: what KNIFE replaces."""
        dead = self.dead_masks()
        return {p: m | dead[p] for p, m in self.stagnant_masks(tau).items()}

    def dead_fraction(self) -> dict[str, float]:
        return fraction_metrics("dead_since_init_fraction", self.dead_masks())

    def ratio_percentiles(self) -> dict[str, float]:
        """Absolute smoothed ratios per layer: "<signal>_ratio/p<q>/<path>" (one sync)."""
        keys, values = [], []
        q = torch.tensor([x / 100 for x in PERCENTILES])
        for signal, emas in self._ema_by_signal.items():
            for path, ema in emas.items():
                values.append(torch.quantile(ema.float(), q.to(ema.device)))
                keys.extend(f"{signal}_ratio/p{x}/{path}" for x in PERCENTILES)
        flat = torch.cat(values).cpu().tolist()
        return dict(zip(keys, flat, strict=True))

    def volatile_masks(self) -> dict[str, torch.Tensor]:
        return {p: s > self.volatile_threshold for p, s in self.scores().items()}

    def stagnant_fraction(self) -> dict[str, float]:
        """{"stagnant_fraction/<layer path>", ".../<network>", ".../all": fraction}."""
        return fraction_metrics("stagnant_fraction", self.stagnant_masks())

    def volatile_fraction(self) -> dict[str, float]:
        return fraction_metrics("volatile_fraction", self.volatile_masks())

    def score_histograms(
        self, bins: int = 20, max_score: float | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (counts, bin edges) of the scores on [0, max_score] (default 2 x volatile)."""
        hi = 2 * self.volatile_threshold if max_score is None else float(max_score)
        edges = torch.linspace(0.0, hi, bins + 1)
        return {
            f"stagnation_score/{p}": (
                torch.histc(s.float().cpu().clamp(max=hi), bins=bins, min=0.0, max=hi),
                edges,
            )
            for p, s in self.scores().items()
        }

    def metrics(self) -> dict[str, float]:
        """Flat metrics for a logger: stagnant, dead and volatile fractions, absolute ratio
        percentiles, update count."""
        out = self.stagnant_fraction()
        out.update(self.dead_fraction())
        out.update(self.volatile_fraction())
        out.update(self.ratio_percentiles())
        out["stagnation/num_updates"] = float(self.num_updates)
        return out

    # ----------------------------------------------------------------- bookkeeping

    def reset(self) -> None:
        """Forget the EMAs (call at a task switch); "dead since init" is kept: it is about
        the whole life of a unit."""
        for emas in self._ema_by_signal.values():
            for e in emas.values():
                e.zero_()
        self.num_updates = 0
        self._snapshot()

    @torch.no_grad()
    def reset_units(self, units_by_path: Mapping[str, torch.Tensor]) -> None:
        """After re-initializing units: give them the layer's mean ratio (score 1) so they are
        judged afresh, count them as new units for "dead since init", and re-take the
        snapshot of their layers."""
        for path, units in units_by_path.items():
            if path not in self._ema or units.numel() == 0:
                continue
            for emas in self._ema_by_signal.values():
                ema = emas[path]
                ema[units.to(ema.device)] = ema.mean()
            for flags in (self._ever_active, self._judged):
                flags[path][units.to(flags[path].device)] = False
            if path in self._prev:
                for prev, p in zip(self._prev[path], self._params[path], strict=True):
                    prev.copy_(p)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": {
                "tau": self.tau,
                "beta": self.beta,
                "signal": self.signal,
                "volatile_threshold": self.volatile_threshold,
                "eps": self.eps,
            },
            "num_updates": self.num_updates,
            "ema": {p: e.detach().cpu().clone() for p, e in self._ema.items()},
            "ema_by_signal": {
                s: {p: e.detach().cpu().clone() for p, e in emas.items()}
                for s, emas in self._ema_by_signal.items()
            },
            "ever_active": {p: e.detach().cpu().clone() for p, e in self._ever_active.items()},
            "judged": {p: e.detach().cpu().clone() for p, e in self._judged.items()},
            "prev": {p: [t.detach().cpu().clone() for t in ts] for p, ts in self._prev.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ema = state["ema"]
        if set(ema) != set(self._ema):
            raise ValueError(
                f"monitor state is for layers {sorted(ema)}, this monitor has {sorted(self._ema)}"
            )
        for p, e in ema.items():
            if e.shape != self._ema[p].shape:
                raise ValueError(
                    f"monitor state for {p!r} has shape {tuple(e.shape)}, "
                    f"expected {tuple(self._ema[p].shape)}"
                )
        for signal, emas in state.get("ema_by_signal", {}).items():
            for p, e in emas.items():
                self._ema_by_signal[signal][p].copy_(e)
        for p, e in ema.items():  # the score's own EMA last: it may have been edited
            self._ema[p].copy_(e)
        # Checkpoints from before "dead since init" existed: count every unit as active.
        for name, flags in (("ever_active", self._ever_active), ("judged", self._judged)):
            saved = state.get(name)
            for p, e in flags.items():
                if saved is None:
                    e.fill_(True)
                else:
                    e.copy_(saved[p])
        cfg = state.get("config", {})
        self.tau = check_tau(cfg.get("tau", self.tau))
        self.beta = float(cfg.get("beta", self.beta))
        self.volatile_threshold = float(cfg.get("volatile_threshold", self.volatile_threshold))
        self.eps = float(cfg.get("eps", self.eps))
        self.num_updates = int(state.get("num_updates", 0))
        for p, ts in state.get("prev", {}).items():
            if p in self._prev:
                for dst, src in zip(self._prev[p], ts, strict=True):
                    dst.copy_(src)

    def _snapshot(self) -> None:
        self._prev = {p: [t.detach().clone() for t in ps] for p, ps in self._params.items()}
