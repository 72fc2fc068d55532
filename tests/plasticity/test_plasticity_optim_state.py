"""Optimizer state of re-initialized rows behaves like a fresh optimizer's (issue 13)."""

from __future__ import annotations

import copy

import pytest
import torch

from knife.plasticity.optim_state import (
    FRESH_SINCE,
    enable_fresh_rows,
    reset_optimizer_params,
    reset_optimizer_state,
)

LR = 1e-3
ROWS = torch.tensor([1, 4])
COLS = torch.tensor([0, 3])


def _trained(make_opt, steps: int = 500, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(8, 5, generator=gen))
    opt = make_opt([p])
    for _ in range(steps):
        p.grad = torch.randn(8, 5, generator=gen)
        opt.step()
    return p, opt, gen


def _step(p, opt, grad):
    before = p.detach().clone()
    p.grad = grad.clone()
    opt.step()
    return p.detach() - before


ADAM = lambda ps: torch.optim.Adam(ps, lr=LR)  # noqa: E731
ADAMW = lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=0.01)  # noqa: E731
RMSPROP = lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=0.99, eps=1e-5)  # noqa: E731


@pytest.mark.parametrize("make_opt", [ADAM, ADAMW, RMSPROP], ids=["adam", "adamw", "rmsprop"])
def test_reset_rows_take_a_fresh_optimizers_first_10_updates(make_opt):
    p, opt, gen = _trained(make_opt)
    untouched_ref_p = copy.deepcopy(p)
    untouched_ref = make_opt([untouched_ref_p])
    untouched_ref.load_state_dict(copy.deepcopy(opt.state_dict()))
    with torch.no_grad():
        p[ROWS] = torch.randn(len(ROWS), 5, generator=gen)  # re-initialized rows
    reset_optimizer_state(opt, p, rows=ROWS)
    fresh_p = torch.nn.Parameter(p.detach()[ROWS].clone())
    fresh = make_opt([fresh_p])
    keep = torch.ones(8, dtype=torch.bool)
    keep[ROWS] = False
    for t in range(10):
        g = torch.randn(8, 5, generator=gen)
        ours = _step(p, opt, g)
        theirs = _step(fresh_p, fresh, g[ROWS])
        # Re-initialized rows: within 10% of a fresh optimizer's update on the same gradients
        # (in practice equal to float precision).
        torch.testing.assert_close(ours[ROWS], theirs, rtol=0.1, atol=1e-9)
        # Untouched rows: exactly the update they would have had without any reset.
        assert torch.equal(ours[keep], _step(untouched_ref_p, untouched_ref, g)[keep]), t
        if t == 0 and make_opt is ADAM:
            # A fresh Adam's first step is lr * sign(g): not the ~3.2x a stale step count gives.
            torch.testing.assert_close(
                ours[ROWS].abs(), torch.full_like(theirs, LR), rtol=1e-3, atol=0
            )


def test_reset_columns_take_a_fresh_adams_updates():
    p, opt, gen = _trained(ADAM)
    reset_optimizer_state(opt, p, cols=COLS)
    fresh_p = torch.nn.Parameter(p.detach()[:, COLS].clone())
    fresh = ADAM([fresh_p])
    for _ in range(10):
        g = torch.randn(8, 5, generator=gen)
        torch.testing.assert_close(_step(p, opt, g)[:, COLS], _step(fresh_p, fresh, g[:, COLS]))


def test_fresh_rows_survive_a_checkpoint_and_full_reset_drops_them():
    p, opt, gen = _trained(ADAM)
    reset_optimizer_state(opt, p, rows=ROWS)
    _step(p, opt, torch.randn(8, 5, generator=gen))
    # Restore into a new optimizer (what an RLlib checkpoint restore does), hooks re-enabled.
    p2 = torch.nn.Parameter(p.detach().clone())
    opt2 = ADAM([p2])
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    enable_fresh_rows(opt2)
    assert FRESH_SINCE in opt2.state[p2]
    for _ in range(5):
        g = torch.randn(8, 5, generator=gen)
        assert torch.equal(_step(p, opt, g), _step(p2, opt2, g))
    reset_optimizer_params(opt, [p])
    assert FRESH_SINCE not in opt.state[p] and float(opt.state[p]["step"]) == 0


def test_record_is_dropped_once_rows_are_old():
    p, opt, gen = _trained(ADAM, steps=5)
    reset_optimizer_state(opt, p, rows=ROWS)
    opt.state[p]["step"].fill_(50_000.0)  # as if the rows had trained for a long time since
    _step(p, opt, torch.randn(8, 5, generator=gen))
    assert FRESH_SINCE not in opt.state[p]
