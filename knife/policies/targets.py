"""TD(lambda) targets over padded episode batches (DESIGN 5)."""

from __future__ import annotations

import torch


def td_lambda_targets(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    filled: torch.Tensor,
    next_values: torch.Tensor,
    gamma: float,
    td_lambda: float,
) -> torch.Tensor:
    """Lambda-returns G_t for t = 0..T-1.

    rewards, terminated, filled, next_values: [B, T] (or [B, T, N], one value per agent, for
    independent learners); next_values[:, t] is the target network's value of the state
    reached after step t. The recursion is

        G_t = r_t + gamma * (1 - term_t) * ((1 - lambda) V_{t+1} + lambda * G'_{t+1})

    where G'_{t+1} = G_{t+1} if step t+1 belongs to the episode, else V_{t+1}: at the end
    of a truncated episode this bootstraps fully from V (time limits are not terminal),
    at a terminal step it contributes nothing. lambda = 0 gives one-step targets.
    Padded steps (filled = 0) get G = 0; the loss masks them anyway.
    """
    t = rewards.shape[1]
    returns = torch.zeros_like(rewards)
    for step in range(t - 1, -1, -1):
        v_next = next_values[:, step]
        g_next = v_next  # past the batch's last step: bootstrap from V
        if step + 1 < t:
            valid_next = filled[:, step + 1]
            g_next = valid_next * returns[:, step + 1] + (1.0 - valid_next) * v_next
        blended = (1.0 - td_lambda) * v_next + td_lambda * g_next
        returns[:, step] = filled[:, step] * (
            rewards[:, step] + gamma * (1.0 - terminated[:, step]) * blended
        )
    return returns
