"""Reset optimizer state in place for re-initialized rows / columns.

Works for any torch optimizer whose per-parameter state tensors have the parameter's shape
(Adam/AdamW: exp_avg, exp_avg_sq, max_exp_avg_sq; RMSprop: square_avg, momentum_buffer,
grad_avg; SGD: momentum_buffer). State is edited in place because RLlib builds the optimizer
once and keeps it; parameters are never replaced.

Fresh rows under Adam. Adam's `step` is one count per tensor, so zeroing a row's moments is
not enough: with the tensor's step in the thousands, bias correction is ~1 and the row's
first updates are (1 - beta1) / sqrt(1 - beta2) ~ 3x what a fresh Adam takes. A partial
reset therefore records, per element, the step at which it was reset (`FRESH_SINCE`, a state
tensor of the parameter's shape, so it travels in checkpoints), and an optimizer step hook
(`enable_fresh_rows`) redoes the update of those elements with their own age in the bias
correction: exactly the update a fresh Adam would take on the same gradients. Untouched
elements keep torch's update bit for bit. Torch's optimizers have no per-element step, hence
this hook. RMSprop has no bias correction: zeroed rows of its `square_avg` already behave as
a fresh RMSprop's (which starts from zero too), so it needs nothing more.
A full reset also zeroes `step` (and drops the per-element record).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FRESH_SINCE = "knife_fresh_since"  # per element: the tensor's step when it was last reset
FRESH_LATEST = "knife_fresh_latest"  # a float: the newest reset step, checked with no sync
_HOOKED = "_knife_fresh_rows_hooks"
# Once every reset element is this old, its bias correction differs from the tensor's by
# < beta2**age / 2 (~5e-5 at beta2 = 0.999): the record is dropped.
_MAX_AGE = 10_000


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer | None,
    param: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> None:
    """Zero `param`'s optimizer state: given rows (dim 0) and/or columns (dim 1), or all of it.

    Under Adam/AdamW the reset elements then take a fresh Adam's steps (module docstring)."""
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    full = rows is None and cols is None
    if full:
        state.pop(FRESH_SINCE, None)
        state.pop(FRESH_LATEST, None)
    for key, val in state.items():
        if not isinstance(val, torch.Tensor):
            if full and key == "step":
                state[key] = 0
            continue
        if key in (FRESH_SINCE, FRESH_LATEST):
            continue
        if val.shape != param.shape:
            if full and key == "step":
                val.zero_()
            continue
        if full:
            val.zero_()
            continue
        if rows is not None:
            val.index_fill_(0, rows.to(val.device), 0)
        if cols is not None:
            val.index_fill_(1, cols.to(val.device), 0)
    if not full and _is_adam(optimizer) and "step" in state:
        since = state.get(FRESH_SINCE)
        if since is None:
            since = state[FRESH_SINCE] = torch.zeros_like(param, dtype=torch.float32)
        step = float(state["step"])
        if rows is not None:
            since.index_fill_(0, rows.to(since.device), step)
        if cols is not None:
            since.index_fill_(1, cols.to(since.device), step)
        state[FRESH_LATEST] = step
        enable_fresh_rows(optimizer)


def reset_optimizer_params(
    optimizer: torch.optim.Optimizer | None, params: Iterable[torch.Tensor]
) -> None:
    """Fully reset the state of every tensor in `params`."""
    for p in params:
        reset_optimizer_state(optimizer, p)


def enable_fresh_rows(optimizer: torch.optim.Optimizer) -> None:
    """Register the step hooks that give reset elements a fresh Adam's update (idempotent).

    Call it once after building (or restoring) an optimizer whose state may carry
    `FRESH_SINCE` records; `reset_optimizer_state` calls it itself."""
    if getattr(optimizer, _HOOKED, None) is not None or not _is_adam(optimizer):
        return
    before: dict[torch.Tensor, torch.Tensor] = {}

    def pre(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        before.clear()
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state.get(p)
                if st and FRESH_SINCE in st and p.grad is not None:
                    before[p] = p.detach().clone()

    def post(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            for p in group["params"]:
                if p in before:
                    _fresh_adam_update(opt, group, p, before[p])
        before.clear()

    handles = (optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post))
    setattr(optimizer, _HOOKED, handles)


@torch.no_grad()
def _fresh_adam_update(
    opt: torch.optim.Optimizer, group: dict, p: torch.Tensor, p_before: torch.Tensor
) -> None:
    """Redo this step's update of the reset elements of `p` with their own bias correction."""
    st = opt.state[p]
    step = float(st["step"])  # a CPU tensor unless capturable: no device sync
    if step - st.get(FRESH_LATEST, step) > _MAX_AGE:  # every reset element is old by now
        del st[FRESH_SINCE]
        st.pop(FRESH_LATEST, None)
        return
    since = st[FRESH_SINCE]
    age = (step - since).clamp(min=1.0)
    mask = since > 0
    beta1, beta2 = group["betas"]
    lr, eps, wd = float(group["lr"]), group["eps"], group["weight_decay"]
    v = st["max_exp_avg_sq"] if group.get("amsgrad") else st["exp_avg_sq"]
    base = p_before
    if wd and (isinstance(opt, torch.optim.AdamW) or group.get("decoupled_weight_decay")):
        base = p_before * (1 - lr * wd)
    bc1 = 1 - beta1**age
    bc2_sqrt = (1 - beta2**age).sqrt()
    update = lr * (st["exp_avg"] / bc1) / (v.sqrt() / bc2_sqrt + eps)
    fresh = base + update if group.get("maximize") else base - update
    p.copy_(torch.where(mask, fresh.to(p.dtype), p))


def _is_adam(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW)
