"""The Learner's optimizer step (knife.policies.learner.apply_gradients): one fused
finiteness check in place of RLlib's per-parameter ones, with RLlib's result."""

from __future__ import annotations

import copy

import torch
from qmix_helpers import _config, _train
from ray.rllib.core.learner.torch.torch_learner import TorchLearner


def _params(learner) -> dict:
    return {pid: p.detach().clone() for pid, p in learner._params.items()}


def _optimizers(learner) -> list:
    return [
        learner.get_optimizer(module_id, name)
        for module_id, names in learner._module_optimizers.items()
        for name in names
    ]


def _restore(learner, params: dict, optimizers: list) -> None:
    with torch.no_grad():
        for pid, p in learner._params.items():
            p.copy_(params[pid])
    for opt, state in zip(_optimizers(learner), optimizers, strict=True):
        opt.load_state_dict(copy.deepcopy(state))


def test_the_step_equals_rllibs_and_zeroes_non_finite_gradients(ray_local):
    algo = _config("matrix:climbing", td_lambda=0.0, test_interval=50).build_algo()
    try:
        _train(algo, 60)  # Adam has moments to step from
        learner = algo.learner_group._learner
        start = _params(learner)
        moments = [copy.deepcopy(opt.state_dict()) for opt in _optimizers(learner)]
        gen = torch.Generator().manual_seed(0)
        grads = {pid: torch.randn(p.shape, generator=gen) for pid, p in learner._params.items()}

        learner.apply_gradients(dict(grads))
        ours = _params(learner)
        _restore(learner, start, moments)
        TorchLearner.apply_gradients(learner, dict(grads))  # RLlib's own step
        theirs = _params(learner)
        assert all(not torch.equal(ours[pid], start[pid]) for pid in ours)  # it stepped
        assert all(torch.equal(ours[pid], theirs[pid]) for pid in ours)

        # A NaN and an inf: those entries count as 0, the rest steps as usual.
        _restore(learner, start, moments)
        pid = next(iter(grads))
        bad = dict(grads)
        flat = grads[pid].clone().flatten()
        flat[0], flat[1] = float("nan"), float("inf")
        bad[pid] = flat.reshape(grads[pid].shape)
        learner.apply_gradients(bad)
        after = _params(learner)
        assert all(torch.isfinite(p).all() for p in after.values())
        assert not torch.equal(after[pid], start[pid])  # the finite entries stepped
    finally:
        algo.stop()
