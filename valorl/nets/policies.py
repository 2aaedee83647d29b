"""Policy networks. Actions live in [-1, 1]; the library maps them to environment units."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from valorl.nets.mlp import MLP, default_init
from valorl.nets.torsos import Torso


class DeterministicPolicy(nn.Module):
    """a = tanh(MLP(s)) (TD3, Fujimoto et al. 2018)."""

    hidden_dims: Sequence[int]
    action_dim: int
    output_scale: float = 1.0
    """Initial scale of the output layer (small: actions start near 0, not near ±1)."""

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        mlp = MLP(self.hidden_dims, self.action_dim, output_scale=self.output_scale)
        return jnp.tanh(mlp(observations))


class GaussianPolicy(nn.Module):
    """A diagonal Gaussian with mean tanh(MLP(s)) and a learned, state-independent log-std.

    This is the policy of the IQL reference implementation: the mean is squashed, the
    distribution is not, so the log-likelihood of dataset actions is exact and cheap.
    Returns (mean, log_std), both of shape (..., action_dim).
    """

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = jnp.tanh(MLP(self.hidden_dims, self.action_dim)(observations))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, jnp.broadcast_to(log_std, mean.shape)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
    """log N(x; mean, exp(log_std)^2), summed over the action dimension."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


class TanhGaussianPolicy(nn.Module):
    """a = tanh(u), u ~ N(μ(s), σ(s)²): SAC's squashed Gaussian (Haarnoja et al. 2018,
    arXiv:1812.05905, App. C), with a state-dependent log σ clipped to
    [log_std_min, log_std_max] as in the RLPD reference code.

    Returns (mean, log_std) of the Gaussian *before* the tanh, both (..., action_dim); sample
    with `tanh_gaussian_sample`, score actions with `tanh_gaussian_log_prob`.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        outputs = MLP(self.hidden_dims, 2 * self.action_dim)(observations)
        mean, log_std = jnp.split(outputs, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


def tanh_log_det(u: jax.Array) -> jax.Array:
    """Σ_i log(1 − tanh(u_i)²), the log-Jacobian of a = tanh(u), summed over the last axis.

    Written as 2·(log 2 − u − softplus(−2u)), which equals it exactly and stays finite where
    tanh(u) rounds to ±1 (|u| beyond about 9 in float32).
    """
    return jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_sample(
    key: jax.Array, mean: jax.Array, log_std: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A reparameterised sample a = tanh(μ + σ·ε) and its log-density
    log π(a|s) = log N(u; μ, σ²) − Σ_i log(1 − tanh(u_i)²) (SAC, App. C), computed from the
    pre-squash u so that it stays exact near the bounds."""
    u = gaussian_sample(key, mean, log_std)
    return jnp.tanh(u), gaussian_log_prob(mean, log_std, u) - tanh_log_det(u)


def tanh_gaussian_log_prob(
    mean: jax.Array, log_std: jax.Array, actions: jax.Array, eps: float = 1e-6
) -> jax.Array:
    """log π(a|s) of given actions in (−1, 1) under the squashed Gaussian; actions are clipped
    to ±(1 − eps) first, so actions on the bounds get a finite (very low) density."""
    u = jnp.arctanh(jnp.clip(actions, -1.0 + eps, 1.0 - eps))
    return gaussian_log_prob(mean, log_std, u) - tanh_log_det(u)


class CategoricalPolicy(nn.Module):
    """π(a|s) = softmax(logits(s)) over `num_actions` discrete actions; returns the logits,
    (..., num_actions). The observation goes through a `Torso` (a CNN for frames)."""

    hidden_dims: Sequence[int]
    num_actions: int
    obs_rank: int = 1

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        features = Torso(self.hidden_dims, self.obs_rank)(observations)
        return nn.Dense(self.num_actions, kernel_init=default_init())(features)


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log π(a|s) of integer actions (...,) under logits (..., num_actions)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_probs, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]
