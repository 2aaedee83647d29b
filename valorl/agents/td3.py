"""TD3's machinery (Fujimoto, van Hoof & Meger, "Addressing Function Approximation Error in
Actor-Critic Methods", ICML 2018), shared by TD3+BC and ReBRAC.

A deterministic tanh actor; clipped double-Q targets (the ensemble's reduction) at the target
actor's action plus clipped Gaussian smoothing noise (Sec. 5.3); the actor and both targets
move once every `policy_freq` critic steps (Sec. 5.2), so one `update` consumes `policy_freq`
batches. An agent built on it declares its hyperparameters (the fields read here) and its
`actor_loss`, and may penalise the bootstrapped value (`next_value_penalty`: ReBRAC).
"""

from __future__ import annotations

from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    CriticAgentBase,
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
)
from valorl.agents.steps import critic_steps
from valorl.data.dataset import Batch
from valorl.errors import ValorlError
from valorl.nets import DeterministicPolicy


class TD3State(flax.struct.PyTreeNode):
    actor: NetState
    critic: NetState
    target_actor: Params
    target_critic: Params


class TD3Base(CriticAgentBase):
    """Init, critic step, delayed actor and target updates, and acting of TD3-style agents."""

    discount: float
    tau: float
    policy_noise: float
    noise_clip: float
    policy_freq: int
    exploration_noise: float
    actor_lr: float
    distributional_backup: bool
    actor_output_scale: ClassVar[float] = 1.0
    """Initial scale of the actor's output layer (`MLP.output_scale`)."""

    def __post_init__(self) -> None:
        if self.distributional_backup and not self.critic.distributional:
            raise ValorlError(
                f"--distributional-backup needs a distributional critic (c51, "
                f"quantile, gaussian), not {self.critic.name}"
            )
        if self.distributional_backup and not self.ensemble.picks_a_member:
            raise ValorlError(
                f"--distributional-backup needs --q-reduce min or subset-min, not "
                f"{self.ensemble.q_reduce}"
            )

    @property
    def batches_per_update(self) -> int:
        return self.policy_freq

    def init(self, key: jax.Array, spec: Spec) -> TD3State:
        key_actor, key_critic = jax.random.split(key)
        actor = create_train_state(
            DeterministicPolicy(self.hidden_dims, spec.action_dim, self.actor_output_scale),
            key_actor,
            (jnp.zeros((1, *spec.obs_shape)),),
            adam(self.actor_lr),
        )
        critic = self.create_critic(key_critic, spec)
        return TD3State(
            actor=actor, critic=critic, target_actor=actor.params, target_critic=critic.params
        )

    def next_value_penalty(self, batch: Batch, next_actions: jax.Array) -> jax.Array | float:
        """Subtracted from the bootstrapped next value (batch,): none in TD3."""
        return 0.0

    def actor_loss(
        self, params: Params, state: TD3State, batch: Batch
    ) -> tuple[jax.Array, Metrics]:
        raise NotImplementedError

    def critic_loss(
        self, params: Params, state: TD3State, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        key_noise, key_reduce = jax.random.split(key)
        noise = jnp.clip(
            self.policy_noise * jax.random.normal(key_noise, batch.actions.shape),
            -self.noise_clip,
            self.noise_clip,
        )
        next_actions = apply(state.actor, state.target_actor, batch.next_observations)
        next_actions = jnp.clip(next_actions + noise, -1.0, 1.0)
        next_outputs = apply(
            state.critic, state.target_critic, batch.next_observations, next_actions
        )
        next_values = self.critic.value(next_outputs)
        discounts = self.discount * batch.masks
        # r + γm(V' − penalty) = (r − γm·penalty) + γm·V', for scalar and distributional targets
        rewards = batch.rewards - discounts * self.next_value_penalty(batch, next_actions)
        outputs = apply(state.critic, params, batch.observations, batch.actions)
        if self.distributional_backup:
            member = self.ensemble.select(next_values, key_reduce)
            chosen = next_outputs[member, jnp.arange(member.shape[0])]
            target = self.critic.backup(chosen, rewards, discounts)
            loss = self.critic.backup_loss(outputs, target)
        else:
            target = rewards + discounts * self.ensemble.reduce(next_values, key_reduce)
            loss = self.critic.loss(outputs, target)
        return loss.mean(axis=-1).sum(), {"q_mean": self.critic.value(outputs).mean()}

    def critic_step(self, state: TD3State, batch: Batch, key: jax.Array):
        critic, metrics = grad_step(state.critic, lambda p: self.critic_loss(p, state, batch, key))
        return state.replace(critic=critic), metrics

    def update(self, state: TD3State, batch: Batch, key: jax.Array) -> tuple[TD3State, Metrics]:
        state, critic_metrics, last = critic_steps(
            self.critic_step, state, batch, key, self.policy_freq
        )
        actor, actor_metrics = grad_step(state.actor, lambda p: self.actor_loss(p, state, last))
        state = state.replace(
            actor=actor,
            target_actor=polyak(actor.params, state.target_actor, self.tau),
            target_critic=polyak(state.critic.params, state.target_critic, self.tau),
        )
        return state, {**prefix("critic", critic_metrics), **prefix("actor", actor_metrics)}

    def act(
        self, state: TD3State, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        actions = apply(state.actor, state.actor.params, obs)
        if deterministic:
            return actions
        noise = self.exploration_noise * jax.random.normal(key, actions.shape)
        return jnp.clip(actions + noise, -1.0, 1.0)
