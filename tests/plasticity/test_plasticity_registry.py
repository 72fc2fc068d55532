"""Every intervention in the registry, on the real QMIX agent + mixer (issue 13): the mixer
stays monotone, the output is kept where the method promises it, the trainable parameter
count is unchanged and the target gets the online structure with its own function."""

from __future__ import annotations

import copy

import pytest
import torch
from plasticity_helpers import train

from knife.plasticity import INTERVENTIONS, StagnationMonitor, build_intervention

# Methods whose output is unchanged at the moment they act, and the tolerance they promise.
PRESERVES = {
    "none": 0.0,
    "knife": 1e-5,
    "knife_no_freeze": 1e-5,
    "knife_random_units": 1e-5,
    "plasticity_injection": 1e-5,
    # ReBorn keeps the output up to the dormant units' own, near-zero, contribution.
    "reborn": 0.05,
}


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _types(model: torch.nn.Module) -> list[tuple[str, str]]:
    return [(n, type(m).__name__) for n, m in model.named_modules()]


def _min_mixer_slope(mixer: torch.nn.Module, n_agents: int, state_dim: int) -> float:
    """min over random inputs and states of dQ_tot / dQ_i, by autograd."""
    g = torch.Generator().manual_seed(7)
    qs = (torch.randn(512, n_agents, generator=g) * 5).requires_grad_(True)
    states = torch.randn(512, state_dim, generator=g) * 2
    (grad,) = torch.autograd.grad(mixer(qs, states).sum(), qs)
    return float(grad.min())


@pytest.mark.parametrize("method", INTERVENTIONS)
def test_intervention_keeps_qmix_monotone_output_params_and_target_structure(method, model, batch):
    with torch.no_grad():  # a few dead units, so that every unit-level method has work
        model.agent.fc1[0].bias[:4] = -1e4
        model.mixer.hyper_w1[0].bias[:4] = -1e4
        model.mixer.hyper_w_final[0].bias[:4] = -1e4
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # tau 1.0: every unit below its layer's mean update ratio is stagnant (KNIFE has work).
    monitor = StagnationMonitor(model, tau=1.0)
    train(model, opt, batch, 5, monitor)
    target = copy.deepcopy(model)
    n_params = _trainable(model)
    with torch.no_grad():
        before = model(*batch)[1]
        target_before = target(*batch)[1]

    summary = build_intervention(method).apply(
        model, opt, monitor=monitor, batch=batch, target=target
    )

    assert (summary.total_changed > 0) is (method != "none"), summary
    n, s = model.mixer.n_agents, model.mixer.state_dim
    assert _min_mixer_slope(model.mixer, n, s) >= 0.0
    assert _min_mixer_slope(target.mixer, n, s) >= 0.0
    assert _trainable(model) == n_params
    assert _types(target) == _types(model)
    assert target.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        after = model(*batch)[1]
        torch.testing.assert_close(target(*batch)[1], target_before, rtol=0, atol=1e-5)
    if method in PRESERVES:
        scale = float(before.abs().max())
        assert float((after - before).abs().max()) <= PRESERVES[method] * scale + 1e-5
    # Still trainable and still monotone after more updates.
    train(model, opt, batch, 3, monitor)
    assert _min_mixer_slope(model.mixer, n, s) >= 0.0
