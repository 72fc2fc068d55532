"""Each baseline's defaults equal its cited source (issue 13); one test per baseline.

The numbers are written here a second time on purpose: this file states what the paper or
its public code says, the modules' defaults must agree with it.
"""

from __future__ import annotations

from knife.plasticity import build_intervention


def test_reborn_defaults_follow_its_public_code():
    # xmu-rl-3dv/ReBorn, src/learners/q_learner.py find()/reborn(), src/run.py,
    # src/config/algs/qmix_b.yaml: tau 0.1 and beta 3 on the mean activation relative to
    # the layer mean, alpha = rand * 0.5 + 0.3, at most 5 dormant units per over-active
    # unit, the mixer's hyper_w_final and V hidden layers, no optimizer reset, every
    # 2 x 10k env steps (~330 updates at one update per ~60-step episode).
    r = build_intervention("reborn")
    assert (r.tau, r.beta, r.alpha_range, r.max_per_over_active) == (0.1, 3.0, (0.3, 0.8), 5)
    assert r.scope == ["mixer.hyper_w_final.0", "mixer.value.0"]
    assert r.reset_optimizer is False
    assert r.every_n_updates == 330 and r.on_task_switch is True


def test_redo_defaults_follow_sokar_et_al_2023():
    # Sokar, Agarwal, Castro, Evci 2023, "The Dormant Neuron Phenomenon in Deep RL":
    # dormant if score <= 0.025, recycle every 1000 gradient updates, incoming re-drawn,
    # outgoing zeroed (dopamine labs/redo: init_method_outgoing='zero').
    r = build_intervention("redo")
    assert (r.tau, r.every_n_updates, r.zero_outgoing) == (0.025, 1000, True)


def test_shrink_perturb_defaults_follow_ash_and_adams_2020():
    # Ash and Adams 2020, "On Warm-Starting Neural Network Training", public code
    # JordanAsh/warm_start run.py: --shrink 0.4 --perturb 0.1, theta_fresh a new network.
    s = build_intervention("shrink_perturb")
    assert (s.shrink, s.perturb) == (0.4, 0.1)


def test_reset_defaults_follow_nikishin_et_al_2022():
    # Nikishin et al. 2022, "The Primacy Bias in Deep RL", evgenii-nikishin/rl_with_resets
    # train_pixels.py: a new agent with the encoder (and its optimizer state) copied back,
    # i.e. every layer but the encoder reset; the replay buffer kept.
    r = build_intervention("reset")
    assert r.keep == ["agent.fc1"]
    assert build_intervention("reset", keep=[]).keep == []  # their SAC runs: everything


def test_reset_keeps_the_encoder_and_resets_the_rest(model):
    import torch

    fc1 = model.agent.fc1[0].weight.detach().clone()
    rnn = model.agent.rnn.weight_hh.detach().clone()
    hyper = model.mixer.hyper_w1[0].weight.detach().clone()
    s = build_intervention("reset").apply(model, None)
    assert torch.equal(model.agent.fc1[0].weight, fc1)
    assert not torch.equal(model.agent.rnn.weight_hh, rnn)
    assert not torch.equal(model.mixer.hyper_w1[0].weight, hyper)
    assert "agent.fc1.0" not in s.units_changed and "agent.fc2" in s.units_changed


def test_plasticity_injection_follows_nikishin_et_al_2023(model, batch):
    # Nikishin et al. 2023, "Deep RL with Plasticity Injection" (no public code; the paper):
    # encoder phi keeps training, the head theta is frozen, a new head theta' trains and a
    # frozen copy theta'_0 of its initial values is subtracted:
    #   h(x) = h_theta(phi(x)) + h_theta'(phi(x)) - h_theta'_0(phi(x)), equal at injection.
    import torch

    agent = model.agent
    with torch.no_grad():
        before = model(*batch)[0]
    build_intervention("plasticity_injection", scope="agent").apply(model, None)
    old, new0 = agent.head_terms
    assert agent.head_signs.tolist() == [1.0, -1.0]  # + old head, - frozen copy of new
    assert all(p.requires_grad for p in agent.fc1.parameters())  # the encoder trains
    assert all(p.requires_grad for p in (*agent.rnn.parameters(), *agent.fc2.parameters()))
    assert not list(old.parameters()) and not list(new0.parameters())  # frozen: buffers only
    with torch.no_grad():
        torch.testing.assert_close(model(*batch)[0], before, atol=1e-5, rtol=0)


def test_regrama_defaults_follow_liu_et_al_2025():
    # Liu et al. 2025, "Measure gradients, not activations!", code
    # grad-based-plasticity-metrics utils/ReDo.py GradientReDo, SAC/configs.py: tau 0.1 (the
    # README's example), every 1000 gradient updates, outgoing weights and optimizer kept.
    r = build_intervention("regrama")
    assert (r.tau, r.every_n_updates, r.zero_outgoing, r.reset_optimizer) == (
        0.1,
        1000,
        False,
        False,
    )
