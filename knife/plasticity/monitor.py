"""Stagnant-neuron monitor (DESIGN 6).

For unit i with incoming weights W_i (row i of a Linear weight plus its bias entry; for a
GRUCell rows i, H+i, 2H+i of weight_ih and weight_hh plus the bias entries):

    r_i(t) = ||g_i(t)|| / (||W_i(t)|| + eps)           g = gradient (signal="grad")
                                                         or the step's actual change ("update")
    R_i    = EMA_beta(r_i)   (the first update after a reset initializes it)
    s_i    = R_i / mean_j R_j
    stagnant: s_i < tau       volatile: s_i > volatile_threshold (reported only)

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
        self._ema = {ly.path: torch.zeros(ly.n_units, device=w0.device) for ly in self.layers}
        self._prev: dict[str, list[torch.Tensor]] = {}
        self.num_updates = 0
        self._snapshot()

    @property
    def paths(self) -> list[str]:
        return [ly.path for ly in self.layers]

    # ----------------------------------------------------------------- measurement

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current step into the EMA. Call after each optimizer step."""
        first = self.num_updates == 0
        for path, params in self._params.items():
            gates, n = self._shape[path]
            g2 = w2 = None
            prev = self._prev.get(path)
            if prev is not None and prev[0].device != params[0].device:  # model was moved
                prev = self._prev[path] = [p.detach().clone() for p in params]
            for k, p in enumerate(params):
                sig = p.grad if prev is None else p - prev[k]
                if sig is not None:
                    s = per_unit_sq(sig, gates, n)
                    g2 = s if g2 is None else g2 + s
                w = per_unit_sq(p, gates, n)
                w2 = w if w2 is None else w2 + w
            ema = self._ema[path]
            if ema.device != w2.device:
                ema = self._ema[path] = ema.to(w2.device)
            if g2 is None:
                ratio = torch.zeros_like(w2)
            else:
                ratio = g2.sqrt_().div_(w2.sqrt_().add_(self.eps))
            if first:
                ema.copy_(ratio)
            else:
                ema.mul_(self.beta).add_(ratio, alpha=1.0 - self.beta)
            if prev is not None:
                for k, p in enumerate(params):
                    prev[k].copy_(p)
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
        """Bool mask per layer: s_i < tau (default: the monitor's tau)."""
        t = self.tau if tau is None else check_tau(tau)
        return {p: s < t for p, s in self.scores().items()}

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
        """Flat metrics for a logger: stagnant and volatile fractions, update count."""
        out = self.stagnant_fraction()
        out.update(self.volatile_fraction())
        out["stagnation/num_updates"] = float(self.num_updates)
        return out

    # ----------------------------------------------------------------- bookkeeping

    def reset(self) -> None:
        """Forget history (call at a task switch)."""
        for e in self._ema.values():
            e.zero_()
        self.num_updates = 0
        self._snapshot()

    @torch.no_grad()
    def reset_units(self, units_by_path: Mapping[str, torch.Tensor]) -> None:
        """After re-initializing units: give them the layer's mean ratio (score 1) so they are
        judged afresh, and re-take the `update` snapshot of their layers."""
        for path, units in units_by_path.items():
            ema = self._ema.get(path)
            if ema is None or units.numel() == 0:
                continue
            ema[units.to(ema.device)] = ema.mean()
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
            self._ema[p].copy_(e)
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
        if self.signal == "update":
            self._prev = {p: [t.detach().clone() for t in ps] for p, ps in self._params.items()}
