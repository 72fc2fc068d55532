"""QMIX/VDN as one stateful RLModule: the shared GRU agent network plus the mixer.

The whole team is a single RLlib agent: its observation holds all agents' observations and
its action is the joint action, so the recurrent state is [n_agents, hidden] per env. The
EnvRunners build the module with `inference_only=True` and get only the agent network;
the mixer and the target networks exist only on the Learner (InferenceOnlyAPI), which is
what keeps EnvRunner weight sync small and correct.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from knife.plasticity import install_from_state_dict
from knife.policies.agent import RNNAgent, build_agent_inputs
from knife.policies.mixers import build_mixer
from knife.policies.registry import algorithm_spec
from knife.policies.schema import MODEL_KEYS

HIDDEN = "h"
LAST_ACTIONS = "last_actions"


def linear_epsilon(t: float, start: float, finish: float, anneal_steps: int) -> float:
    """Linearly annealed exploration rate over env steps."""
    if anneal_steps <= 0:
        return finish
    frac = min(max(t, 0.0) / anneal_steps, 1.0)
    return start + frac * (finish - start)


class QMixRLModule(TorchRLModule, TargetNetworkAPI, InferenceOnlyAPI):
    """Agent network (all envs) + mixer and targets (Learner only)."""

    def setup(self) -> None:
        space = self.observation_space
        mc = self.model_config
        missing = [k for k in MODEL_KEYS if k not in mc]
        if missing:  # no fallback defaults here: they live in knife.policies.schema
            raise ValueError(
                f"QMixRLModule: model_config lacks {missing}; QMixConfig fills it, "
                "or build one with knife.policies.schema.model_config(...)"
            )
        self.n_agents, self.obs_dim = space["obs"].shape
        self.state_dim = space["state"].shape[0]
        self.n_actions = space["avail_actions"].shape[1]
        self.algorithm = algorithm_spec(mc["algorithm"])
        self.obs_last_action = bool(mc["obs_last_action"])
        input_dim = self.obs_dim + self.n_agents + self.n_actions * self.obs_last_action
        self.agent = RNNAgent(input_dim, self.n_actions, mc["agent_hidden_dim"])
        self.epsilon_schedule = (
            mc["epsilon_start"],
            mc["epsilon_finish"],
            mc["epsilon_anneal_steps"],
        )
        if not self.inference_only:
            self.mixer = build_mixer(
                self.algorithm.mixer,
                self.n_agents,
                self.state_dim,
                mc["mixer_embed_dim"],
                mc["hypernet_dim"],
            )

    def plasticity_networks(self) -> tuple[str, ...]:
        """The networks plasticity metrics and interventions act on (knife.policies.registry);
        each has its target at `target_<name>`."""
        return self.algorithm.networks

    # --- recurrent state -------------------------------------------------------------

    def get_initial_state(self) -> dict[str, Any]:
        return {
            HIDDEN: torch.zeros(self.n_agents, self.agent.state_dim),
            LAST_ACTIONS: torch.zeros(self.n_agents, self.n_actions),
        }

    # --- acting (EnvRunners) ---------------------------------------------------------

    def _agent_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Q-values of one step for a batch of envs, unavailable actions at -inf."""
        obs = batch[Columns.OBS]
        state_in = batch[Columns.STATE_IN]
        last = state_in[LAST_ACTIONS] if self.obs_last_action else None
        inputs = build_agent_inputs(obs["obs"], last, self.n_agents)
        q, h = self.agent(inputs, state_in[HIDDEN])
        q = q.masked_fill(obs["avail_actions"] < 0.5, float("-inf"))
        return q, {HIDDEN: h}

    def _with_actions(self, actions: torch.Tensor, state_out: dict) -> dict[str, Any]:
        state_out[LAST_ACTIONS] = torch.nn.functional.one_hot(actions, self.n_actions).float()
        return {Columns.ACTIONS: actions, Columns.STATE_OUT: state_out}

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            q, state_out = self._agent_step(batch)
            return self._with_actions(q.argmax(dim=-1), state_out)

    def _forward_exploration(self, batch: dict[str, Any], t: float = 0, **kwargs) -> dict[str, Any]:
        """Epsilon-greedy over the available actions, epsilon annealed by env steps t."""
        with torch.no_grad():
            q, state_out = self._agent_step(batch)
            greedy = q.argmax(dim=-1)
            avail = batch[Columns.OBS]["avail_actions"]
            random_actions = torch.multinomial(avail.reshape(-1, self.n_actions), 1).reshape(
                greedy.shape
            )
            eps = linear_epsilon(t, *self.epsilon_schedule)
            explore = torch.rand(greedy.shape, device=q.device) < eps
            return self._with_actions(torch.where(explore, random_actions, greedy), state_out)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_inference(batch)

    # --- learning (Learner) ----------------------------------------------------------

    def agent_q_sequence(self, agent: RNNAgent, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unroll `agent` over whole episodes from a zero state: [B, T+1, N, A]."""
        obs = batch["obs"]
        b = obs.shape[0]
        last = None
        if self.obs_last_action:
            last = torch.nn.functional.one_hot(batch["actions"], self.n_actions).to(obs.dtype)
            last = torch.cat([torch.zeros_like(last[:, :1]), last[:, :-1]], dim=1)
        inputs = build_agent_inputs(obs, last, self.n_agents)
        hidden = torch.zeros(b, self.n_agents, agent.state_dim, device=obs.device)
        return agent.unroll(inputs, hidden)

    def mixed_q_taken(
        self, batch: dict[str, torch.Tensor], agent: RNNAgent | None = None, mixer: Any = None
    ) -> torch.Tensor:
        """Q_tot of the taken actions [B, T] (other agent/mixer networks may stand in)."""
        mixer = self.mixer if mixer is None else mixer
        return mixer(self.agent_q_taken(batch, agent), batch["state"][:, :-1])

    def agent_q_taken(
        self, batch: dict[str, torch.Tensor], agent: RNNAgent | None = None
    ) -> torch.Tensor:
        """The agents' Qs of the taken actions [B, T, N], padded agents zeroed: the mixer's
        input (another agent network may stand in)."""
        q = self.agent_q_sequence(self.agent if agent is None else agent, batch)
        taken = q[:, :-1].gather(-1, batch["actions"][:, :-1].unsqueeze(-1)).squeeze(-1)
        return taken * batch["agent_mask"].unsqueeze(1)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {"q_values": self.agent_q_sequence(self.agent, batch)}

    # --- TargetNetworkAPI ------------------------------------------------------------

    def make_target_networks(self) -> None:
        self.target_agent = make_target_network(self.agent)
        self.target_mixer = make_target_network(self.mixer)

    def get_target_network_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.agent, self.target_agent), (self.mixer, self.target_mixer)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad():
            return {"target_q_values": self.agent_q_sequence(self.target_agent, batch)}

    # --- state: plasticity interventions change structure -----------------------------

    def set_state(self, state: dict[str, Any]) -> None:
        # KNIFE composites and injection wrappers travel in the state dict: give this
        # module the same structure first (EnvRunner copies, restores from checkpoints).
        install_from_state_dict(self, state)
        super().set_state(state)

    # --- InferenceOnlyAPI ------------------------------------------------------------

    def get_non_inference_attributes(self) -> list[str]:
        return ["mixer", "target_agent", "target_mixer"]
