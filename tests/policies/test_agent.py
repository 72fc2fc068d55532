import torch

from knife.policies.agent import RNNAgent


def test_fused_unroll_matches_step_by_step_gru_cell():
    torch.manual_seed(0)
    agent = RNNAgent(input_dim=10, n_actions=5, hidden_dim=64)
    x, h = torch.randn(3, 7, 4, 10), torch.randn(3, 4, 64)
    q = agent.unroll(x, h)
    steps, hidden = [], h
    for t in range(7):
        q_t, hidden = agent(x[:, t], hidden)
        steps.append(q_t)
    assert torch.allclose(q, torch.stack(steps, 1), atol=1e-6)
    q.sum().backward()
    assert agent.rnn.weight_hh.grad is not None and agent.rnn.weight_hh.grad.abs().sum() > 0
    assert all(not n.startswith("_") for n, _ in agent.named_parameters())
    assert sum(p.numel() for p in agent.parameters()) == sum(
        p.numel() for m in (agent.fc1, agent.rnn, agent.fc2) for p in m.parameters()
    )


def test_agent_inputs_without_last_action():
    import gymnasium as gym
    import numpy as np

    from knife.policies.rl_module import QMixRLModule
    from knife.policies.schema import model_config

    n, obs_dim, a = 3, 6, 5
    space = gym.spaces.Dict(
        {
            "obs": gym.spaces.Box(-1, 1, (n, obs_dim), np.float32),
            "state": gym.spaces.Box(-1, 1, (7,), np.float32),
            "avail_actions": gym.spaces.Box(0, 1, (n, a), np.float32),
        }
    )
    sizes = {}
    for flag in (True, False):
        module = QMixRLModule(
            observation_space=space,
            action_space=gym.spaces.MultiDiscrete([a] * n),
            inference_only=False,
            model_config=model_config(obs_last_action=flag),
        )
        sizes[flag] = module.agent.input_dim
        batch = {
            "obs": torch.randn(2, 4, n, obs_dim),
            "actions": torch.randint(0, a, (2, 4, n)),
        }
        assert module.agent_q_sequence(module.agent, batch).shape == (2, 4, n, a)
        state = {k: v.expand(2, *v.shape) for k, v in module.get_initial_state().items()}
        obs = {"obs": batch["obs"][:, 0], "avail_actions": torch.ones(2, n, a)}
        step = module.forward_inference({"obs": obs, "state_in": state})
        assert step["actions"].shape == (2, n)
    # pymarl's default input (obs, id, last action) vs EPyMARL QMIX's (obs, id).
    assert sizes == {True: obs_dim + n + a, False: obs_dim + n}
