"""`reborn` (Qin et al., NeurIPS 2024), as its public code does it (docs/design.md section 8).

Source: xmu-rl-3dv/ReBorn, `src/learners/q_learner.py` (`find`, `reborn`), `src/run.py`
(schedule) and `src/config/algs/qmix_b.yaml`. Per Linear + ReLU layer of the mixer:

1. score s_i = mean activation_i / mean_j activation_j on a batch (after a ReLU the mean is
   the mean |activation|); dormant if s_i <= tau (0.1), over-active if s_i > beta (3);
2. every dormant unit's incoming weights are re-drawn with the layer's own init;
3. the dormant units, in random order, are each given to a random over-active unit that has
   fewer than `max_per_over_active` (5) so far; leftovers keep their fresh weights;
4. a given unit k of over-active unit j takes alpha_k * (j's incoming weights and bias),
   alpha_k ~ U(0.3, 0.8);
5. outgoing weights: every dormant column is zeroed; then for each j with m given units,
   div = softmax(randn(m + 1, out), dim=0) splits each of j's outgoing weights: unit k
   gets W_out[o, j] div[k, o] / alpha_k, j keeps W_out[o, j] div[m, o]. Since
   relu(alpha z) = alpha relu(z), the consumer sees exactly j's old contribution: the
   output changes only by the dormant units' own (near-zero) previous contribution.

Defaults follow the code: tau 0.1, beta 3, alpha U(0.3, 0.8), at most 5 units per
over-active unit, the mixer's hidden layers of hyper_w_final and V only (the code's
`ActivateLayer`s; hyper_w1, hyper_b1 and the agent are not touched), optimizer state kept
(the code resets no RMSprop state), target networks untouched (they follow the regular
target update). Schedule in the code: every 2 test intervals of 10k env steps, for the whole
run; our schedules count learner updates, and at pymarl's one update per episode on the
SMACv2 5v5 maps (episodes of about 60 steps) 20k env steps are ~330 updates: the default
`every_n_updates`. Where we differ, and why:
- the score is taken on the learner's last training batch, not on the 32 latest episodes
  (the hook has that batch at hand; both are recent replay);
- the code also sums the *target* agent's activations into its agent-layer scores; it never
  acts on agent layers, so this does not matter for what it changes;
- units that carry KNIFE rows are left out (their output is not one row's function);
- like every method here, it also fires at a task switch unless `on_task_switch=False`.
Non-ReLU (non positively homogeneous) activations get alpha = 1.
"""

from __future__ import annotations

import torch

from knife.plasticity.composite import CompositeLinear
from knife.plasticity.init import fresh_parameters
from knife.plasticity.metrics import activation_scores
from knife.plasticity.monitor import check_tau
from knife.plasticity.optim_state import reset_optimizer_state
from knife.plasticity.units import POSITIVE_HOMOGENEOUS, consumer_columns, find_unit_layers

from .base import Intervention, require
from .ops import linear_only, live_columns, outgoing

# ReBorn's public code (module docstring): the values its defaults take.
SOURCE_DEFAULTS = {
    "tau": 0.1,
    "beta": 3.0,
    "alpha_range": (0.3, 0.8),
    "max_per_over_active": 5,
    "scope": ["mixer.hyper_w_final.0", "mixer.value.0"],
    "reset_optimizer": False,
    "every_n_updates": 330,
}


class RebornIntervention(Intervention):
    """See the module docstring. Needs `batch`."""

    name = "reborn"
    default_scope = SOURCE_DEFAULTS["scope"]

    def __init__(
        self,
        *,
        tau: float = SOURCE_DEFAULTS["tau"],
        beta: float = SOURCE_DEFAULTS["beta"],
        alpha_range: tuple[float, float] | list[float] = SOURCE_DEFAULTS["alpha_range"],
        max_per_over_active: int = SOURCE_DEFAULTS["max_per_over_active"],
        reset_optimizer: bool = SOURCE_DEFAULTS["reset_optimizer"],
        seed: int | None = None,
        consumers: dict[str, str] | None = None,
        every_n_updates: int | None = SOURCE_DEFAULTS["every_n_updates"],
        **common,
    ) -> None:
        super().__init__(every_n_updates=every_n_updates, **common)
        self.tau = check_tau(tau)
        if beta <= 1.0:
            raise ValueError(f"beta must be > 1, got {beta!r}")
        lo, hi = (float(a) for a in alpha_range)
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"alpha_range must be (low, high) with 0 < low <= high, got {alpha_range!r}"
            )
        if not isinstance(max_per_over_active, int) or max_per_over_active < 1:
            raise ValueError(
                f"max_per_over_active must be a positive int, got {max_per_over_active!r}"
            )
        self.beta = float(beta)
        self.alpha_range = (lo, hi)
        self.max_per_over_active = max_per_over_active
        self.reset_optimizer = bool(reset_optimizer)
        self.consumers = consumers
        self._gen = torch.Generator().manual_seed(0 if seed is None else int(seed))

    @torch.no_grad()
    def _apply(self, model, optimizer, *, monitor, batch, summary) -> None:
        require(batch, "batch= (a forward pass on real data) for activation scores", self.method)
        layers = linear_only(find_unit_layers(model, self.scope), summary.notes, self.method)
        scores = activation_scores(model, batch, layers=layers)
        changed = {}
        for ly in layers:
            s = scores[ly.path].cpu()
            summary.units_total[ly.path] = ly.n_units
            summary.units_changed[ly.path] = 0
            consumer = outgoing(model, ly, self.consumers)
            if consumer is None:
                summary.notes.append(f"{ly.path}: consumer unknown, skipped")
                continue
            free = torch.ones_like(s, dtype=torch.bool)
            if isinstance(ly.module, CompositeLinear):
                free = ~ly.module.units_with_extra_rows().cpu()
            dormant = self.select((s <= self.tau) & free, s)
            if dormant.numel() == 0:
                continue
            over = ((s > self.beta) & free).nonzero().flatten()
            self._reborn(ly, consumer, dormant, over, optimizer)
            summary.units_changed[ly.path] = int(dormant.numel())
            changed[ly.path] = dormant
        if monitor is not None:
            monitor.reset_units(changed)

    def _assign(self, dormant: torch.Tensor, over: torch.Tensor) -> dict[int, list[int]]:
        """Over-active unit -> the dormant units it takes (code's step 3)."""
        taken: dict[int, list[int]] = {int(j): [] for j in over}
        for k in dormant[torch.randperm(dormant.numel(), generator=self._gen)].tolist():
            open_ = [j for j, ks in taken.items() if len(ks) < self.max_per_over_active]
            if not open_:
                break
            j = open_[int(torch.randint(len(open_), (1,), generator=self._gen))]
            taken[j].append(k)
        return {j: ks for j, ks in taken.items() if ks}

    def _reborn(self, ly, consumer, dormant, over, optimizer) -> None:
        w, b = ly.module.weight, ly.module.bias
        fresh = fresh_parameters(ly.module)
        dev = w.device
        rows = dormant.to(dev)
        w[rows] = fresh["weight"].to(w)[rows]
        if b is not None and "bias" in fresh:
            b[rows] = fresh["bias"].to(b)[rows]
        columns = [t for t in consumer_columns(consumer) if t.shape[0]]
        for t in columns:
            t[:, rows] = 0
        homogeneous = isinstance(ly.activation, POSITIVE_HOMOGENEOUS)
        lo, hi = self.alpha_range
        for j, ks in self._assign(dormant, over).items():
            m = len(ks)
            if homogeneous:
                alpha = torch.rand(m, generator=self._gen) * (hi - lo) + lo
            else:
                alpha = torch.ones(m)
            alpha = alpha.to(w)
            k_idx = torch.tensor(ks, device=dev)
            w[k_idx] = alpha[:, None] * w[j]
            if b is not None:
                b[k_idx] = alpha * b[j]
            for t in columns:
                div = torch.softmax(torch.randn(m + 1, t.shape[0], generator=self._gen), 0)
                div = div.to(t)
                col = t[:, j].clone()
                t[:, k_idx] = (col[None, :] * div[:m] / alpha[:, None]).T
                t[:, j] = col * div[m]
        if self.reset_optimizer:
            for p in (w, b):
                if p is not None:
                    reset_optimizer_state(optimizer, p, rows=rows)
            reset_optimizer_state(optimizer, live_columns(consumer), cols=rows)
