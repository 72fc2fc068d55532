"""Learner unit tests: TD(lambda) targets by hand, masking, QMIX monotonicity, VDN sum."""

import torch

from knife.policies.mixers import QMixer, VDNMixer, build_mixer
from knife.policies.targets import td_lambda_targets


def _one_episode(rewards, terminated_last, next_values, pad=0):
    t = len(rewards)
    r = torch.tensor([rewards + [0.0] * pad])
    term = torch.zeros(1, t + pad)
    term[0, t - 1] = float(terminated_last)
    filled = torch.zeros(1, t + pad)
    filled[0, :t] = 1.0
    v = torch.tensor([next_values + [0.0] * pad])
    return r, term, filled, v


def test_one_step_targets_match_hand_computation():
    # 3 steps, terminated at the end: G_t = r_t + gamma * V_{t+1}, no bootstrap at the end.
    r, term, filled, v = _one_episode([1.0, 2.0, 3.0], True, [10.0, 20.0, 30.0])
    g = td_lambda_targets(r, term, filled, v, gamma=0.5, td_lambda=0.0)
    assert torch.allclose(g, torch.tensor([[1 + 0.5 * 10, 2 + 0.5 * 20, 3.0]]))


def test_lambda_targets_match_hand_computation():
    gamma, lam = 0.9, 0.6
    rewards, values = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    r, term, filled, v = _one_episode(rewards, True, values)
    g = td_lambda_targets(r, term, filled, v, gamma=gamma, td_lambda=lam)
    g2 = 3.0  # terminal
    g1 = 2.0 + gamma * ((1 - lam) * 20.0 + lam * g2)
    g0 = 1.0 + gamma * ((1 - lam) * 10.0 + lam * g1)
    assert torch.allclose(g, torch.tensor([[g0, g1, g2]]))


def test_truncated_episode_bootstraps_from_last_value():
    gamma, lam = 0.9, 0.6
    r, term, filled, v = _one_episode([1.0, 2.0], False, [10.0, 20.0])
    g = td_lambda_targets(r, term, filled, v, gamma=gamma, td_lambda=lam)
    g1 = 2.0 + gamma * 20.0  # time limit is not terminal: full bootstrap
    g0 = 1.0 + gamma * ((1 - lam) * 10.0 + lam * g1)
    assert torch.allclose(g, torch.tensor([[g0, g1]]))


def test_padding_is_masked_and_does_not_leak():
    gamma, lam = 0.9, 0.6
    base = td_lambda_targets(*_one_episode([1.0, 2.0], True, [10.0, 20.0]), gamma, lam)
    # Same episode padded by 3 steps with garbage values beyond the end.
    r, term, filled, v = _one_episode([1.0, 2.0], True, [10.0, 20.0], pad=3)
    v[0, 2:] = 1e6
    r[0, 2:] = 1e6
    g = td_lambda_targets(r, term, filled, v, gamma, lam)
    assert torch.allclose(g[:, :2], base)
    assert torch.all(g[:, 2:] == 0)
    # A truncated episode of length 2 padded to 5 bootstraps exactly like an unpadded one.
    base_tr = td_lambda_targets(*_one_episode([1.0, 2.0], False, [10.0, 20.0]), gamma, lam)
    r, term, filled, v = _one_episode([1.0, 2.0], False, [10.0, 20.0], pad=3)
    v[0, 2:] = -1e6
    assert torch.allclose(td_lambda_targets(r, term, filled, v, gamma, lam)[:, :2], base_tr)


def test_qmix_is_monotonic_in_agent_qs():
    torch.manual_seed(0)
    mixer = QMixer(n_agents=4, state_dim=7, embed_dim=32, hypernet_dim=64)
    qs = torch.randn(64, 4, requires_grad=True)
    states = torch.randn(64, 7)
    mixer(qs, states).sum().backward()
    assert torch.all(qs.grad >= 0)
    assert qs.grad.abs().sum() > 0


def test_vdn_is_the_sum():
    qs, states = torch.randn(5, 3, 4), torch.randn(5, 3, 2)
    assert torch.allclose(VDNMixer()(qs, states), qs.sum(-1))


def test_unknown_mixer_names_the_field():
    import pytest

    with pytest.raises(ValueError, match=r"mixer: unknown 'qplex'; allowed: qmix, vdn"):
        build_mixer("qplex", 2, 3, 32, 64)


def test_qmix_mixer_matches_the_hypernetwork_formula():
    # Q_tot = |W_final(s)| . ELU(q |W1(s)| + b1(s)) + V(s), written out with matmuls.
    torch.manual_seed(0)
    mixer = QMixer(n_agents=3, state_dim=5, embed_dim=8, hypernet_dim=16)
    qs, states = torch.randn(4, 6, 3), torch.randn(4, 6, 5)
    s = states.reshape(-1, 5)
    w1 = mixer.hyper_w1(s).abs().view(-1, 3, 8)
    hidden = torch.nn.functional.elu(
        torch.bmm(qs.reshape(-1, 1, 3), w1) + mixer.hyper_b1(s).view(-1, 1, 8)
    )
    expected = torch.bmm(hidden, mixer.hyper_w_final(s).abs().view(-1, 8, 1)).view(-1)
    expected = (expected + mixer.value(s).view(-1)).view(4, 6)
    assert torch.allclose(mixer(qs, states), expected, atol=1e-6)
