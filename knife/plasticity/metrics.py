"""Plasticity metrics users compare against (DESIGN 6).

- ReDo dormant fraction (Sokar et al. 2023): s_i = mean|a_i| / mean_j mean|a_j| over a batch;
  dormant if s_i <= tau (0.025). Activations are post-activation unit outputs, captured with
  forward hooks (GRU units: the hidden state at every step).
- GraMa score (gradient magnitude): mean |grad| of a unit's incoming weights / layer mean.
- Effective rank of a feature batch (srank, Kumar et al. 2021; or the entropy version).
- Weight norm, gradient norm, feature norm.

`batch` is whatever runs a forward pass: a zero-argument callable (e.g. a closure running the
model on real data), a tuple/list passed as model(*batch), a dict passed as model(**batch),
or a single tensor passed as model(batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.monitor import check_tau
from knife.plasticity.units import (
    Scope,
    UnitLayer,
    find_consumer,
    find_unit_layers,
    fraction_metrics,
    get_module,
    resolve_scope,
)

Batch = Callable[[], Any] | torch.Tensor | tuple | list | dict


def run_batch(model: nn.Module, batch: Batch) -> Any:
    """Run one forward pass described by `batch` (see module docstring)."""
    if callable(batch) and not isinstance(batch, torch.Tensor | nn.Module):
        return batch()
    if isinstance(batch, tuple | list):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, torch.Tensor):
        return model(batch)
    raise TypeError(
        f"batch must be a callable, tensor, tuple/list or dict, got {type(batch).__name__}"
    )


def capture_unit_outputs(
    model: nn.Module,
    batch: Batch,
    layers: list[UnitLayer],
    fn: Callable[[UnitLayer, torch.Tensor], None],
) -> None:
    """Run `batch` once and call fn(layer, outputs [rows, units]) with each layer's unit outputs.

    Linear layers: the post-activation output (a composite's full output). GRU layers: the
    hidden state; if the GRUCell's own forward never runs (e.g. the agent's unroll feeds its
    parameters to a fused GRU kernel), the input of its consumer (agent.fc2) is used, which is
    the same hidden-state sequence.
    """
    own: set[str] = set()
    fallback: dict[str, list[torch.Tensor]] = {}
    by_path = {ly.path: ly for ly in layers}
    handles = []

    def out_hook(layer: UnitLayer) -> Callable:
        apply_act = layer.kind == "linear" and not isinstance(layer.module, CompositeLinear)
        act = layer.activation

        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            a = out[0] if isinstance(out, tuple) else out
            if apply_act:  # plain Linear: the pair's activation is applied by the next module
                a = act(a.clone() if getattr(act, "inplace", False) else a)
            own.add(layer.path)
            fn(layer, a.detach().reshape(-1, layer.n_units))

        return hook

    def in_hook(path: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple) -> None:
            fallback.setdefault(path, []).append(args[0].detach())

        return hook

    try:
        for ly in layers:
            handles.append(ly.module.register_forward_hook(out_hook(ly)))
            if ly.kind == "gru":
                consumer = find_consumer(model, ly)
                if consumer is not None:
                    handles.append(consumer[1].register_forward_pre_hook(in_hook(ly.path)))
        with torch.no_grad():
            run_batch(model, batch)
    finally:
        for h in handles:
            h.remove()
    for path, tensors in fallback.items():
        if path not in own:
            ly = by_path[path]
            for t in tensors:
                fn(ly, t.reshape(-1, ly.n_units))
    missing = [ly.path for ly in layers if ly.path not in own and ly.path not in fallback]
    if missing:
        raise ValueError(
            f"batch did not run layers {missing}; pass a batch that runs the whole model"
        )


def mean_abs_activations(
    model: nn.Module, batch: Batch, scope: Scope = None, layers: list[UnitLayer] | None = None
) -> dict[str, torch.Tensor]:
    """Mean |activation| of every unit over the batch (all leading dims, all calls)."""
    layers = find_unit_layers(model, scope) if layers is None else layers
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def accumulate(layer: UnitLayer, a: torch.Tensor) -> None:
        s = a.abs().sum(0)
        sums[layer.path] = s if layer.path not in sums else sums[layer.path] + s
        counts[layer.path] = counts.get(layer.path, 0) + a.shape[0]

    capture_unit_outputs(model, batch, layers, accumulate)
    return {ly.path: sums[ly.path] / counts[ly.path] for ly in layers}


def activation_scores(
    model: nn.Module, batch: Batch, scope: Scope = None, layers: list[UnitLayer] | None = None
) -> dict[str, torch.Tensor]:
    """ReDo scores s_i = mean|a_i| / mean_j mean|a_j| per layer."""
    acts = mean_abs_activations(model, batch, scope, layers)
    return {p: a / a.mean().clamp_min(1e-30) for p, a in acts.items()}


def dormant_masks(
    model: nn.Module, batch: Batch, tau: float = 0.025, scope: Scope = None
) -> dict[str, torch.Tensor]:
    tau = check_tau(tau)
    return {p: s <= tau for p, s in activation_scores(model, batch, scope).items()}


def dormant_fraction(
    model: nn.Module, batch: Batch, tau: float = 0.025, scope: Scope = None
) -> dict[str, float]:
    """{"dormant_fraction/<layer>", ".../<network>", ".../all": fraction}."""
    return fraction_metrics("dormant_fraction", dormant_masks(model, batch, tau, scope))


def grama_scores(
    model: nn.Module, scope: Scope = None, layers: list[UnitLayer] | None = None
) -> dict[str, torch.Tensor]:
    """GraMa: mean |grad| of each unit's incoming weights, normalized by the layer mean.

    Uses the gradients currently in .grad (call after backward). A missing .grad counts as 0.
    """
    layers = find_unit_layers(model, scope) if layers is None else layers
    out = {}
    with torch.no_grad():
        for ly in layers:
            n, g = ly.n_units, ly.gates
            total = torch.zeros(n, device=ly.incoming()[0].device)
            entries = 0
            for p in ly.incoming():
                per_unit = p.numel() // n
                entries += per_unit
                if p.grad is not None:
                    total += p.grad.abs().reshape(g, n, -1).sum(dim=(0, 2))
            m = total / entries
            out[ly.path] = m / m.mean().clamp_min(1e-30)
    return out


def grama_fraction(model: nn.Module, tau: float = 0.025, scope: Scope = None) -> dict[str, float]:
    tau = check_tau(tau)
    masks = {p: s <= tau for p, s in grama_scores(model, scope).items()}
    return fraction_metrics("grama_fraction", masks)


def capture_features(
    model: nn.Module, batch: Batch, paths: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Outputs of the modules at `paths` in one forward pass, as [n, features] (calls stacked).

    Paths of unit layers give the units' outputs as in `capture_unit_outputs` (so GRU hidden
    states are found even when a fused kernel bypasses the GRUCell); other paths give the
    module's output.
    """
    got: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    units = {ly.path: ly for ly in find_unit_layers(model, "all") if ly.path in got}
    handles = []
    try:
        for p in paths:
            if p in units:
                continue
            try:
                mod = get_module(model, p)
            except KeyError:
                raise ValueError(f"capture_features: no module at {p!r}") from None

            def hook(_m: nn.Module, _i: Any, out: Any, p: str = p) -> None:
                t = out[0] if isinstance(out, tuple) else out
                got[p].append(t.detach().reshape(-1, t.shape[-1]))

            handles.append(mod.register_forward_hook(hook))
        capture_unit_outputs(
            model, batch, list(units.values()), lambda ly, a: got[ly.path].append(a)
        )
    finally:
        for h in handles:
            h.remove()
    return {p: torch.cat(v) for p, v in got.items() if v}


def effective_rank(features: torch.Tensor, delta: float = 0.01, method: str = "srank") -> float:
    """Effective rank of a feature batch [n, d].

    srank (Kumar et al. 2021): smallest k with sum_{i<=k} sigma_i >= (1 - delta) sum_i sigma_i.
    entropy (Roy and Vetterli 2007): exp(H(sigma / sum sigma)).
    """
    f = features.detach().reshape(-1, features.shape[-1]).double()
    sv = torch.linalg.svdvals(f)
    total = sv.sum()
    if total <= 0:
        return 0.0
    if method == "srank":
        cum = torch.cumsum(sv, 0) / total
        return float(int((cum < 1.0 - delta).sum()) + 1)
    if method == "entropy":
        p = sv / total
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))
    raise ValueError(f"effective_rank: method must be 'srank' or 'entropy', got {method!r}")


def feature_norm(features: torch.Tensor) -> float:
    """Mean L2 norm of the feature vectors."""
    f = features.detach().reshape(-1, features.shape[-1])
    return float(f.norm(dim=1).mean())


def weight_norm(model: nn.Module, scope: Scope = None) -> dict[str, float]:
    """L2 norm of all trainable parameters per scoped network: {"weight_norm/<net>": ...}."""
    return _norms(model, scope, "weight_norm", lambda p: p)


def gradient_norm(model: nn.Module, scope: Scope = None) -> dict[str, float]:
    """L2 norm of the current gradients per scoped network: {"grad_norm/<net>": ...}."""
    return _norms(model, scope, "grad_norm", lambda p: p.grad)


def plasticity_metrics(
    model: nn.Module,
    *,
    batch: Batch | None = None,
    monitor: Any = None,
    scope: Scope = None,
    dormant_tau: float = 0.025,
    grama_tau: float = 0.025,
) -> dict[str, float]:
    """All metrics at once, as flat floats. Activation metrics need `batch`; gradient
    metrics (grad_norm, grama_fraction) are included when gradients are present.

    Effective rank and feature norm are taken on the output of each network's last unit
    layer (for the QMIX agent: the GRU hidden state).
    """
    out: dict[str, float] = {}
    if monitor is not None:
        out.update(monitor.metrics())
    out.update(weight_norm(model, scope))
    if any(p.grad is not None for p in model.parameters()):  # gradient metrics need a backward
        out.update(gradient_norm(model, scope))
        out.update(grama_fraction(model, grama_tau, scope))
    if batch is not None:
        layers = find_unit_layers(model, scope)
        scores = activation_scores(model, batch, layers=layers)
        out.update(
            fraction_metrics(
                "dormant_fraction", {p: s <= check_tau(dormant_tau) for p, s in scores.items()}
            )
        )
        last: dict[str, str] = {}
        for ly in layers:
            last[ly.network] = ly.path
        feats = capture_features(model, batch, list(last.values()))
        for net, path in last.items():
            if path in feats:
                out[f"effective_rank/{net}"] = effective_rank(feats[path])
                out[f"feature_norm/{net}"] = feature_norm(feats[path])
    return out


def _norms(model: nn.Module, scope: Scope, prefix: str, pick: Callable) -> dict[str, float]:
    out = {}
    for entry in resolve_scope(model, scope):
        mod = get_module(model, entry)
        sq = [
            pick(p).detach().float().square().sum()
            for p in mod.parameters()
            if p.requires_grad and pick(p) is not None
        ]
        out[f"{prefix}/{entry or 'model'}"] = float(torch.stack(sq).sum().sqrt()) if sq else 0.0
    return out
