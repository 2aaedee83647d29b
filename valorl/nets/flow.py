"""Flow-matching policies: a velocity field, its loss and the Euler sampler, and FQL's
one-step policy.

Flow matching (Lipman et al. 2023, "Flow Matching for Generative Modeling", Eq. 23, with the
linear path of Liu et al. 2023's rectified flow) learns a velocity field v(s, x_t, t) that
carries noise x_0 ~ N(0, I) to actions: on the straight path x_t = (1 − t)·x_0 + t·a the
field's target is a − x_0, so the loss is ‖v(s, x_t, t) − (a − x_0)‖² with t ~ U[0, 1].
Sampling integrates dx/dt = v from t = 0 to 1 with `steps` Euler steps. A flow policy
represents multimodal behaviour that a Gaussian averages away; FQL (Park, Li & Levine 2025,
"Flow Q-Learning", Sec. 4) and Q-chunking (Li, Zhou & Levine 2025) clone behaviour with one,
over single actions or flattened chunks of h actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.nets.mlp import ACTIVATIONS, MLP, Activation

Velocity = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""(observations, x_t, t) -> v, with t of shape (batch, 1)."""


class VelocityField(nn.Module):
    """v(s, x_t, t): an MLP on [s, x_t, t] with `action_dim` outputs."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    """LayerNorm after each hidden layer's activation, as in DQC's reference actor."""
    activation: Activation = "gelu"
    obs_features: int | None = None
    """Read only the first `obs_features` features of each observation (a policy that ignores
    the goal of [s, g] observations); None: all of them."""

    @nn.compact
    def __call__(self, observations: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        observations = observations[..., : self.obs_features]
        inputs = jnp.concatenate([observations, x, t], axis=-1)
        return MLP(
            self.hidden_dims,
            self.action_dim,
            ACTIVATIONS[self.activation],
            layer_norm=self.layer_norm,
            norm_after_activation=True,
        )(inputs)


class OneStepPolicy(nn.Module):
    """FQL's one-step policy μ(s, z): an MLP on [s, z] mapping noise z ~ N(0, I) straight to
    an action, with no ODE to integrate when acting (Park et al. 2025, Sec. 4.2)."""

    hidden_dims: Sequence[int]
    action_dim: int
    activation: Activation = "gelu"

    @nn.compact
    def __call__(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observations, noise], axis=-1)
        return MLP(self.hidden_dims, self.action_dim, ACTIVATIONS[self.activation])(inputs)


def flow_matching_loss(
    velocity: Velocity, observations: jax.Array, actions: jax.Array, key: jax.Array
) -> jax.Array:
    """Squared error of the velocity field against a − x_0 at a random point of the straight
    path from noise to each action, per action dimension: shape of `actions` (batch, dims),
    so a caller can mask the dimensions of chunk steps past an episode's end."""
    key_noise, key_time = jax.random.split(key)
    noise = jax.random.normal(key_noise, actions.shape)
    t = jax.random.uniform(key_time, (*actions.shape[:-1], 1))
    x_t = (1.0 - t) * noise + t * actions
    return (velocity(observations, x_t, t) - (actions - noise)) ** 2


def euler_sample(
    velocity: Velocity, observations: jax.Array, noise: jax.Array, steps: int
) -> jax.Array:
    """x_1 from x_0 = `noise` by `steps` Euler steps of dx/dt = v(s, x, t), unclipped."""

    def step(x: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t = jnp.full((*x.shape[:-1], 1), i / steps, x.dtype)
        return x + velocity(observations, x, t) / steps, None

    x, _ = jax.lax.scan(step, noise, jnp.arange(steps, dtype=noise.dtype))
    return x
