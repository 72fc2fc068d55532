import torch

from knife.policies.agent import RNNAgent


def test_fused_unroll_matches_step_by_step_gru_cell():
    torch.manual_seed(0)
    agent = RNNAgent(input_dim=10, n_actions=5)
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
