"""Reset optimizer state in place for re-initialized rows / columns.

Works for any torch optimizer whose per-parameter state tensors have the parameter's shape
(Adam/AdamW: exp_avg, exp_avg_sq, max_exp_avg_sq; RMSprop: square_avg, momentum_buffer,
grad_avg; SGD: momentum_buffer). State is edited in place because RLlib builds the optimizer
once and keeps it; parameters are never replaced.

Scalar entries such as Adam's `step` are shared by the whole tensor, so a partial reset
leaves them alone (the re-initialized rows restart from zero moments with the tensor's bias
correction); a full reset also zeroes `step`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer | None,
    param: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> None:
    """Zero `param`'s optimizer state: given rows (dim 0) and/or columns (dim 1), or all of it."""
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    full = rows is None and cols is None
    for key, val in state.items():
        if not isinstance(val, torch.Tensor):
            if full and key == "step":
                state[key] = 0
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


def reset_optimizer_params(
    optimizer: torch.optim.Optimizer | None, params: Iterable[torch.Tensor]
) -> None:
    """Fully reset the state of every tensor in `params`."""
    for p in params:
        reset_optimizer_state(optimizer, p)
