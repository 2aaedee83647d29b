"""Implicit Q-Learning for discrete actions (Kostrikov, Nair & Levine, ICLR 2022,
arXiv:2110.06169), registered as "iql_discrete".

IQL's three losses (`valorl.agents.iql`) with a critic that gives Q(s, ·) for every action
(read at the data's action) and a categorical policy:

    V(s)    L_V = E[ L2^τ( Q̂(s, a) − V(s) ) ]                         (Eq. 5, expectile)
    Q(s, a) L_Q = Σ_i E[ ℓ(Q_i(s, a), r + γ·m·V(s')) ]                  (Eq. 6)
    π(a|s)  L_π = −E[ min(exp(β·(Q̂(s, a) − V(s))), 100) · log π(a|s) ]  (Eq. 7, AWR)

log π is the log-softmax of the policy's logits at the data's action, so the extracted policy
is a softmax reweighting of the behaviour policy towards actions with positive advantage. The
update, targets and schedules are IQL's own code; only the networks differ (a CNN torso for
frames) and how Q is read at an action (`DiscreteCriticAgentBase.critic_outputs`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from valorl.agents.base import (
    Metrics,
    Params,
    Spec,
    adam,
    create_train_state,
    scheduled_adam,
)
from valorl.agents.discrete import (
    DiscreteCriticAgentBase,
    create_policy,
    policy_act,
    weighted_cross_entropy,
)
from valorl.agents.iql import IQL, IQLState
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.nets import TorsoValue, obs_rank


@dataclasses.dataclass(frozen=True)
class DiscreteIQL(DiscreteCriticAgentBase, IQL):
    """IQL with Q(s, ·) over actions and a categorical policy extracted by AWR."""

    name: ClassVar[str] = "iql_discrete"

    hidden_dims: tuple[int, ...] = (128,)
    """Dense layers after the torso of every network (frames: one conv layer first)."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics."""
    reward_normalization: RewardNormalization = "none"
    """Reward scaling (none: MinAtar rewards are small integers)."""

    def init(self, key: jax.Array, spec: Spec) -> IQLState:
        key_actor, key_critic, key_value = jax.random.split(key, 3)
        actor = create_policy(
            key_actor,
            spec,
            self.hidden_dims,
            scheduled_adam(self.actor_lr, self.actor_lr_schedule, spec.total_updates),
            self.name,
        )
        critic = self.create_critic(key_critic, spec)
        value = create_train_state(
            TorsoValue(self.hidden_dims, obs_rank(spec.obs_shape)),
            key_value,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.value_lr),
        )
        return IQLState(actor=actor, critic=critic, target_critic=critic.params, value=value)

    def weighted_loss(
        self, params: Params, state: IQLState, batch: Batch, weights: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """−mean(w · log π(a|s)) with the categorical policy (Eq. 7)."""
        return weighted_cross_entropy(
            state.actor, params, batch.observations, batch.actions, weights
        )

    def act(
        self, state: IQLState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        return policy_act(state.actor, obs, key, deterministic)
