"""Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022, arXiv:2110.06169).

IQL never evaluates the critic at actions outside the dataset. It fits

    V(s)    by expectile regression onto the target critic          (Eq. 5)
            L_V = E[ L2^τ( Q̂(s, a) − V(s) ) ]
    Q(s, a) by TD learning onto the value of the next state         (Eq. 6)
            L_Q = Σ_i E[ ℓ(Q_i(s, a), r + γ·m·V(s')) ]
    π(a|s)  by advantage-weighted regression on dataset actions     (Eq. 7)
            L_π = −E[ min(exp(β·(Q̂(s, a) − V(s))), w_max) · log π(a|s) ]

in that order each step (as the reference code does), then moves the target critic towards Q
by Polyak averaging. Q̂ is the target ensemble's reduction (the paper: min of two) and ℓ the
critic head's loss (the paper: squared error). Defaults are the paper's MuJoCo settings
(App. B).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    CriticAgentBase,
    LRSchedule,
    Metrics,
    NetState,
    Params,
    Spec,
    adam,
    apply,
    create_train_state,
    grad_step,
    polyak,
    prefix,
    scheduled_adam,
)
from valorl.critics import CriticHead, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.transforms import RewardNormalization
from valorl.losses import awr_weights, expectile_loss
from valorl.nets import GaussianPolicy, StateValue
from valorl.nets.policies import gaussian_log_prob, gaussian_sample


class IQLState(flax.struct.PyTreeNode):
    actor: NetState
    critic: NetState
    target_critic: Params
    value: NetState


@dataclasses.dataclass(frozen=True)
class IQL(CriticAgentBase):
    """Implicit Q-Learning: expectile value, TD critic, advantage-weighted actor.

    Subclasses change the actor through two hooks: `actor_network` and `weighted_loss`
    (RIQL's deterministic actor)."""

    name: ClassVar[str] = "iql"
    separate_actor_goals: ClassVar[bool] = True

    expectile: float = 0.7
    """τ of the value loss (Eq. 5): 0.7 for locomotion, 0.9 for AntMaze."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights (Eq. 7): 3 for locomotion, 10 for AntMaze."""
    max_weight: float = 100.0
    """Clip on the exponentiated advantages."""
    discount: float = 0.99
    """Discount factor γ."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    actor_lr: float = 3e-4
    """Actor learning rate."""
    critic_lr: float = 3e-4
    """Q-network learning rate."""
    value_lr: float = 3e-4
    """V-network learning rate."""
    actor_lr_schedule: LRSchedule = "cosine"
    """Cosine decay of the actor learning rate over training, as in the reference code."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of every network."""
    critic: CriticHead = Scalar()
    """How Q is represented and trained: mse, huber, bce, hl-gauss, two-hot, c51, quantile, gaussian
    (`valorl.critics.heads`)."""
    ensemble: QEnsemble = QEnsemble()
    """Q-ensemble: size, how members combine in targets (the paper: min of two), layers."""
    batch_size: int = 256
    """Transitions per gradient step."""
    normalize_observations: bool = False
    """Standardise observations with dataset statistics."""
    reward_normalization: RewardNormalization = "return_range"
    """Scale rewards by 1000 / (max − min episode return), the paper's locomotion setting."""

    def init(self, key: jax.Array, spec: Spec) -> IQLState:
        key_actor, key_critic, key_value = jax.random.split(key, 3)
        obs = jnp.zeros((1, *spec.obs_shape))
        actor = create_train_state(
            self.actor_network(spec.action_dim),
            key_actor,
            (obs,),
            scheduled_adam(self.actor_lr, self.actor_lr_schedule, spec.total_updates),
        )
        critic = self.create_critic(key_critic, spec)
        value = create_train_state(
            StateValue(self.hidden_dims), key_value, (obs,), adam(self.value_lr)
        )
        return IQLState(actor=actor, critic=critic, target_critic=critic.params, value=value)

    def value_loss(
        self, params: Params, state: IQLState, batch: Batch, q: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        v = apply(state.value, params, batch.observations)
        return expectile_loss(q - v, self.expectile).mean(), {"v_mean": v.mean()}

    def critic_loss(
        self, params: Params, state: IQLState, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        next_v = apply(state.value, state.value.params, batch.next_observations)
        target = batch.rewards + self.discount * batch.masks * next_v
        outputs = self.critic_outputs(state.critic, params, batch.observations, batch.actions)
        loss = self.critic.loss(outputs, target).mean(axis=-1).sum()
        return loss, {"q_mean": self.critic.value(outputs).mean()}

    def actor_network(self, action_dim: int) -> nn.Module:
        """The policy: a Gaussian with a state-independent log-std (the reference code's)."""
        return GaussianPolicy(self.hidden_dims, action_dim)

    def weighted_loss(
        self, params: Params, state: IQLState, batch: Batch, weights: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """The advantage-weighted regression loss for weights (B,) (Eq. 7):
        −mean(w · log π(a|s)). Written as the reference does, so results stay bit for bit."""
        mean, log_std = apply(state.actor, params, batch.observations)
        log_prob = gaussian_log_prob(mean, log_std, batch.actions)
        return -(weights * log_prob).mean(), {"bc_mse": ((mean - batch.actions) ** 2).mean()}

    def actor_loss(
        self, params: Params, state: IQLState, batch: Batch, q: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        v = apply(state.value, state.value.params, batch.observations)
        weights = awr_weights(q - v, self.beta, self.max_weight)
        loss, metrics = self.weighted_loss(params, state, batch, weights)
        return loss, {
            "advantage_mean": (q - v).mean(),
            "weight_mean": weights.mean(),
            **metrics,
        }

    def target_q(self, state: IQLState, obs: jax.Array, actions: jax.Array, key: jax.Array):
        """Q̂(s, a) from the target critic, reduced over the ensemble."""
        outputs = self.critic_outputs(state.critic, state.target_critic, obs, actions)
        return self.ensemble.reduce(self.critic.value(outputs), key)

    def actor_inputs(
        self, state: IQLState, batch: Batch, q: jax.Array, key: jax.Array
    ) -> tuple[Batch, jax.Array]:
        """The rows the actor learns from and their Q̂: the batch's, or with goals of the
        actor's own ([s, actor goal], OGBench's GCIQL) the same rows at those goals."""
        if batch.actor_observations is None:
            return batch, q
        actor_batch = batch.replace(observations=batch.actor_observations)
        return actor_batch, self.target_q(state, actor_batch.observations, batch.actions, key)

    def update(self, state: IQLState, batch: Batch, key: jax.Array) -> tuple[IQLState, Metrics]:
        # Q̂(s, a), shared by Eq. 5 and 7 (the actor's at its own goals, when it has them)
        q = self.target_q(state, batch.observations, batch.actions, key)
        value, value_metrics = grad_step(state.value, lambda p: self.value_loss(p, state, batch, q))
        state = state.replace(value=value)
        actor_batch, actor_q = self.actor_inputs(state, batch, q, jax.random.fold_in(key, 1))
        actor, actor_metrics = grad_step(
            state.actor, lambda p: self.actor_loss(p, state, actor_batch, actor_q)
        )
        critic, critic_metrics = grad_step(
            state.critic, lambda p: self.critic_loss(p, state, batch)
        )
        state = state.replace(
            actor=actor,
            critic=critic,
            target_critic=polyak(critic.params, state.target_critic, self.tau),
        )
        return state, {
            **prefix("value", value_metrics),
            **prefix("critic", critic_metrics),
            **prefix("actor", actor_metrics),
        }

    def act(
        self, state: IQLState, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        mean, log_std = apply(state.actor, state.actor.params, obs)
        if deterministic:
            return mean
        return jnp.clip(gaussian_sample(key, mean, log_std), -1.0, 1.0)
