"""The maximum-entropy actor that SAC, CQL (and Cal-QL) and DSAC-T share: a tanh-squashed
Gaussian policy, its entropy-regularised loss against the Q-ensemble, and the learned entropy
temperature.

Haarnoja et al., *Soft Actor-Critic Algorithms and Applications* (2018), Eq. 7/9 and 18: the
actor minimises J_π = E[α·log π(ã|s) − Q̂(s, ã)] with ã = tanh(μ + σ·ε) reparameterised, and
α is tuned so that the policy's entropy tracks a target H̄, by gradient steps on
J(α) = E[−α·log π(a|s) − α·H̄] = α·(H − H̄). The default target is −|A| (one nat below zero per
action dimension), the paper's and every reference implementation's.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.agents.base import (
    CriticAgentBase,
    Metrics,
    NetState,
    Params,
    adam,
    apply,
    create_train_state,
    grad_step,
    prefix,
)
from valorl.data.dataset import Batch
from valorl.nets import tanh_gaussian_sample


class Temperature(nn.Module):
    """The entropy temperature α = exp(log α), one learned scalar (positive by construction)."""

    initial: float = 1.0

    @nn.compact
    def __call__(self) -> jax.Array:
        # float32, not a weak type: otherwise the first update changes its type and recompiles
        log_alpha = self.param("log_alpha", lambda _: jnp.log(jnp.float32(self.initial)))
        return jnp.exp(log_alpha)


def temperature_loss(alpha: jax.Array, entropy: jax.Array, target_entropy: float) -> jax.Array:
    """J(α) = α·(H − H̄) (Eq. 18 with H = −E[log π]): gradient H − H̄, so α shrinks while the
    policy's entropy is above the target and grows once it falls below."""
    return alpha * (jax.lax.stop_gradient(entropy) - target_entropy)


def init_temperature(initial: float, learning_rate: float, key: jax.Array) -> NetState:
    """The train state of α, starting at `initial`, optimised with Adam."""
    return create_train_state(Temperature(initial), key, (), adam(learning_rate))


def temperature_step(
    temperature: NetState, entropy: jax.Array, target_entropy: float | None, action_dim: int
) -> tuple[NetState, Metrics]:
    """One step on J(α) toward `target_entropy` (None: −action_dim), given the entropy the
    actor step just measured; metrics: loss, gradient norm and α before the step."""
    target = -float(action_dim) if target_entropy is None else target_entropy
    alpha = apply(temperature, temperature.params)
    return grad_step(
        temperature,
        lambda p: (temperature_loss(apply(temperature, p), entropy, target), {"alpha": alpha}),
    )


class MaxEntropyAgentBase(CriticAgentBase):
    """Base of the maximum-entropy actor-critics: a `TanhGaussianPolicy` in `state.actor`, the
    temperature in `state.temperature`, the Q-ensemble in `state.critic`, and a
    `target_entropy` field (None: −|A|)."""

    target_entropy: float | None

    def alpha(self, state: Any) -> jax.Array:
        """The entropy temperature α."""
        return apply(state.temperature, state.temperature.params)

    def q_for_actor(self, values: jax.Array, key: jax.Array) -> jax.Array:
        """Q̂ that the actor maximises, from the members' values (members, B): the ensemble's
        reduction (SAC: min of two)."""
        return self.ensemble.reduce(values, key)

    def actor_loss(
        self, params: Params, state: Any, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """J_π = E[α·log π(ã|s) − Q̂(s, ã)] (Eq. 7/9) at actions sampled from the actor."""
        key_sample, key_reduce = jax.random.split(key)
        mean, log_std = apply(state.actor, params, batch.observations)
        actions, log_prob = tanh_gaussian_sample(key_sample, mean, log_std)
        outputs = apply(state.critic, state.critic.params, batch.observations, actions)
        q = self.q_for_actor(self.critic.value(outputs), key_reduce)
        loss = (self.alpha(state) * log_prob - q).mean()
        return loss, {"entropy": -log_prob.mean(), "q_mean": q.mean()}

    def actor_step(
        self, state: Any, batch: Batch, key: jax.Array
    ) -> tuple[NetState, NetState, Metrics]:
        """One actor step on `actor_loss`, then one temperature step at the entropy it measured:
        the new actor and temperature states, and their metrics ("actor/...", "temperature/...")."""
        actor, actor_metrics = grad_step(
            state.actor, lambda p: self.actor_loss(p, state, batch, key)
        )
        temperature, temperature_metrics = temperature_step(
            state.temperature,
            actor_metrics["entropy"],
            self.target_entropy,
            batch.actions.shape[-1],
        )
        metrics = {**prefix("actor", actor_metrics), **prefix("temperature", temperature_metrics)}
        return actor, temperature, metrics

    def act(
        self, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """tanh of the mean when deterministic, else a squashed sample."""
        mean, log_std = apply(state.actor, state.actor.params, obs)
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(key, mean, log_std)[0]
