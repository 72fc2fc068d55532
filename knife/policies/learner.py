"""QMIX/VDN/IQL Learner: the masked double-Q TD(lambda) loss over whole episodes.

One training step, top to bottom (see `compute_loss_for_module`):
  1. online agent Qs over the episode          q      [B, T+1, N, A]
  2. Q of the taken actions, mixed              q_tot  [B, T]  (IQL, unmixed: [B, T, N])
  3. double Q: online argmax at t+1 (available actions only), evaluated by the target
     agent, mixed by the target mixer          v_next [B, T]
  4. TD(lambda) targets from rewards, termination and padding masks
  5. masked mean squared TD error
RLlib then clips the global gradient norm and steps the optimizer; afterwards
`after_gradient_based_update` runs the plasticity hook and the hard target sync.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.policy.sample_batch import MultiAgentBatch

from knife.plasticity.optim_state import enable_fresh_rows, reset_optimizer_params
from knife.policies.plasticity_hook import PlasticityHook
from knife.policies.targets import td_lambda_targets

PLASTICITY_STATE = "knife_learner"

LOSS_METRICS = ("loss", "td_error_abs", "q_taken_mean", "target_mean")


class RunningMeanStd:
    """Running reward statistics for `standardise_rewards` (as EPyMARL does)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        b_mean, b_var, b_count = x.mean().item(), x.var(unbiased=False).item(), x.numel()
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean += delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var, self.count = m2 / total, total


def masked_td(
    q_tot: torch.Tensor, targets: torch.Tensor, filled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean squared TD error over the filled steps, TD error, number of filled steps)."""
    td_error = (q_tot - targets) * filled
    n_valid = filled.sum().clamp(min=1.0)
    return (td_error**2).sum() / n_valid, td_error, n_valid


def qmix_td_loss(
    module: Any,
    batch: dict[str, torch.Tensor],
    q: torch.Tensor,
    rewards: torch.Tensor,
    config: Any,
    targets_out: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked double-Q TD(lambda) loss; `q` = online agent Qs [B, T+1, N, A]. A mixer that
    keeps one value per agent (IQL) gives each agent its own TD error on the team reward.

    `config` needs gamma, td_lambda, double_q. Returns (loss, scalar stats for logging);
    `targets_out`, if given, receives the TD targets and the padding mask (the plasticity
    hook scores a fresh network against the same targets).
    """
    actions = batch["actions"][:, :-1]  # [B, T, N]
    filled, terminated = batch["filled"], batch["terminated"]
    # Padded agents of a task sequence never contribute to Q_tot (nor to its target).
    agent_mask = batch["agent_mask"].unsqueeze(1)  # [B, 1, N]
    q_taken = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1) * agent_mask
    q_tot = module.mixer(q_taken, batch["state"][:, :-1])  # [B, T]

    with torch.no_grad():
        target_q = module.forward_target(batch)["target_q_values"][:, 1:]
        unavailable = batch["avail_actions"][:, 1:] < 0.5
        if config.double_q:
            greedy = q.detach()[:, 1:].masked_fill(unavailable, float("-inf")).argmax(-1)
            target_max = target_q.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)
        else:
            target_max = target_q.masked_fill(unavailable, float("-inf")).max(-1).values
        # States past the end of an episode have no available actions (all -inf):
        # zero them; the TD(lambda) recursion never uses them.
        target_max = torch.nan_to_num(target_max, neginf=0.0) * agent_mask
        v_next = module.target_mixer(target_max, batch["state"][:, 1:])
        if v_next.dim() == 3:  # one value per agent: the team reward for each, real agents only
            rewards, terminated, filled = (
                x.unsqueeze(-1).expand_as(v_next) for x in (rewards, terminated, filled)
            )
            filled = filled * agent_mask
        targets = td_lambda_targets(
            rewards, terminated, filled, v_next, config.gamma, config.td_lambda
        )

    if targets_out is not None:
        targets_out.update(targets=targets, filled=filled)
    loss, td_error, n_valid = masked_td(q_tot, targets, filled)
    # Detached tensors, not floats: no device sync in the update; RLlib's metrics logger
    # converts them when results are reduced.
    with torch.no_grad():
        stats = {
            "loss": loss.detach(),
            "td_error_abs": td_error.abs().sum() / n_valid,
            "q_taken_mean": (q_tot * filled).sum() / n_valid,
            "target_mean": (targets * filled).sum() / n_valid,
        }
    return loss, stats


def sync_targets(module: Any) -> None:
    """Hard target update: every target network becomes a copy of its online network."""
    for online, target in module.get_target_network_pairs():
        target.load_state_dict(online.state_dict())


class QMixTorchLearner(TorchLearner):
    """TorchLearner for QMixRLModule."""

    def build(self) -> None:
        super().build()
        # Targets are made after the optimizer exists so it only holds online parameters.
        self.module.foreach_module(lambda mid, mod: mod.make_target_networks())
        self.num_updates = 0
        self.reward_stats = RunningMeanStd()
        self._last_batch: dict[str, dict[str, torch.Tensor]] = {}
        self._last_targets: dict[str, dict[str, torch.Tensor]] = {}
        # The hooks' latest metrics per module: states measured every few updates, which the
        # Algorithm reads once per iteration. Kept out of RLlib's MetricsLogger, which
        # reduces and merges every key it ever saw at every update: with these ~100 keys in
        # it, that bookkeeping cost a third of an update (docs/performance.md).
        self.plasticity_latest: dict[str, dict[str, float]] = {}
        self.plasticity: dict[str, PlasticityHook] = {}
        for module_id, module in self.module._rl_modules.items():
            config = self.config.get_config_for_module(module_id)
            [(_, optimizer)] = self.get_optimizers_for_module(module_id)
            self.plasticity[module_id] = PlasticityHook(
                module.unwrapped(), optimizer, config.plasticity_config, seed=config.seed or 0
            )

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id]
        params = self.get_parameters(module)
        if config.optimizer == "rmsprop":
            # pymarl's RMSprop settings.
            optimizer = torch.optim.RMSprop(params, lr=config.lr, alpha=0.99, eps=1e-5)
        else:
            optimizer = torch.optim.Adam(params, lr=config.lr)
        # Re-initialized rows take a fresh Adam's steps, also after a checkpoint restore
        # (knife.plasticity.optim_state).
        enable_fresh_rows(optimizer)
        self.register_optimizer(
            module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr
        )

    def apply_gradients(self, gradients_dict: dict[Any, torch.Tensor]) -> None:
        """RLlib's step with one fused finiteness check: RLlib tests every parameter's
        gradient twice, ~90 small kernels and host syncs per update on this network. As
        RLlib does by default, non-finite entries become 0 and the optimizer steps.
        Learning-rate schedules and AMP scalers take RLlib's own path."""
        if self._lr_scheduler_classes is not None or self._grad_scalers is not None:
            return super().apply_gradients(gradients_dict)
        grads = [g for g in gradients_dict.values() if g is not None]  # frozen: None
        finite = not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        for pid, grad in gradients_dict.items():
            if not finite and grad is not None:
                grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            self._params[pid].grad = grad
        for module_id, optimizer_names in self._module_optimizers.items():
            for optimizer_name in optimizer_names:
                self.get_optimizer(module_id, optimizer_name).step()

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        self._last_batch[module_id] = batch
        self._last_targets[module_id] = {}
        rewards = batch["reward"]
        if config.standardise_rewards:
            self.reward_stats.update(rewards[batch["filled"] > 0])
            rewards = (rewards - self.reward_stats.mean) / (self.reward_stats.var**0.5 + 1e-8)
        loss, stats = qmix_td_loss(
            module, batch, fwd_out["q_values"], rewards, config, self._last_targets[module_id]
        )
        self.metrics.log_dict(stats, key=module_id, window=1)
        return loss

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        self.num_updates += 1
        self.after_update_plasticity_hook(timesteps)
        for module_id, module in self.module._rl_modules.items():
            config = self.config.get_config_for_module(module_id)
            if self.num_updates % config.target_update_interval == 0:
                sync_targets(module.unwrapped())
        self.metrics.log_value("num_updates", self.num_updates, window=1)

    def after_update_plasticity_hook(self, timesteps: dict[str, Any]) -> None:
        """THE PLACE where plasticity monitoring and interventions run (DESIGN 3, 6-8).

        Called after every optimizer step with `param.grad` still populated and before
        the target sync, so the monitor sees this step's gradients and an intervention's
        changes reach the targets in the same update.
        """
        for module_id, hook in self.plasticity.items():
            metrics = hook.after_update(
                self.num_updates,
                self._batch_fn(module_id),
                self._loss_fn(module_id),
                self._last_batch.get(module_id),
            )
            if metrics:
                self.plasticity_latest.setdefault(module_id, {}).update(metrics)

    def on_task_switch(
        self, *, target: str, optimizer: str, replay_batch: MultiAgentBatch | None = None
    ) -> dict[str, dict[str, float]]:
        """The Algorithm moved to the next task: the switch protocol, identical for every
        plasticity method (`none` included; docs/design.md section 9).

        1. the hook measures (stagnation, the trainability probe on the last batch) and lets
           the method act on the networks it names (the targets only mirror the structure
           it added);
        2. optimizer="reset": the whole optimizer state is zeroed (moments, step counts);
        3. target="sync": every target network becomes a copy of its online network
           ("keep": targets wait for the next regular target update).
        """
        missing = [mid for mid in self.plasticity if mid not in self._last_batch]
        if replay_batch is not None and missing:  # no update since a restore
            converted = self._convert_batch_type(replay_batch)
            for module_id in missing:
                self._last_batch[module_id] = converted.policy_batches[module_id]
        out = {}
        for module_id, hook in self.plasticity.items():
            out[module_id] = hook.on_task_switch(
                self.num_updates, self._batch_fn(module_id), self._last_batch.get(module_id)
            )
            module = self.module[module_id].unwrapped()
            if optimizer == "reset":
                reset_optimizer_params(hook.optimizer, module.parameters())
            if target == "sync":
                sync_targets(module)
            self.plasticity_latest.setdefault(module_id, {}).update(out[module_id])
        return out

    def _batch_fn(self, module_id: str) -> Callable[[], Any] | None:
        """A forward pass over the last training batch, for activation-based metrics."""
        batch = self._last_batch.get(module_id)
        if batch is None:
            return None
        module = self.module[module_id].unwrapped()
        return lambda: module.mixed_q_taken(batch)

    def _loss_fn(self, module_id: str) -> Callable[[Any], torch.Tensor] | None:
        """The last update's TD loss with other networks standing in for the module's
        plasticity networks (a holder with those child names), same targets."""
        batch, td = self._last_batch.get(module_id), self._last_targets.get(module_id)
        if batch is None or not td:
            return None
        module = self.module[module_id].unwrapped()

        def loss(nets: Any) -> torch.Tensor:
            q_tot = module.mixed_q_taken(batch, **dict(nets.named_children()))
            return masked_td(q_tot, td["targets"], td["filled"])[0]

        return loss

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        # Not asked for by a weight sync (components="rl_module"): the monitor's state is
        # copied only into checkpoints.
        if not self._check_component(PLASTICITY_STATE, components, not_components):
            return state
        state[PLASTICITY_STATE] = {
            "num_updates": self.num_updates,
            "reward_stats": vars(self.reward_stats).copy(),
            "hooks": {mid: hook.state_dict() for mid, hook in self.plasticity.items()},
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        own = state.get(PLASTICITY_STATE)
        if own is not None:
            self.num_updates = own["num_updates"]
            vars(self.reward_stats).update(own["reward_stats"])
            for mid, hook_state in own["hooks"].items():
                self.plasticity[mid].load_state_dict(hook_state)
