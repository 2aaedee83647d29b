"""The learned entropy temperature of maximum-entropy agents (SAC, CQL, DSAC-T).

Haarnoja et al., *Soft Actor-Critic Algorithms and Applications* (2018), Sec. 5 and Eq. 18:
α is tuned so that the policy's entropy tracks a target H̄, by gradient steps on
J(α) = E[−α·log π(a|s) − α·H̄] = α·(H − H̄). The default target is −|A| (one nat below zero per
action dimension), the paper's and every reference implementation's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.agents.base import Metrics, NetState, adam, apply, create_train_state, grad_step


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
