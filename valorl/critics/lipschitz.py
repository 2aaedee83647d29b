"""Keeping a critic's Lipschitz constant small: an adversarial robust loss, and an estimate.

Zheng et al. ("Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz
Regularized Value Function", ICLR 2023) bound the value-aware model error by the value
function's Lipschitz constant times the model error, and argue that a model ensemble helps
mainly by keeping that constant small. They regularise it directly, by spectral normalisation
of the critic (`QEnsemble(spectral_norm=True)`) or by a robust loss on model-generated states,
which this module implements in the form of SA-MDP-style smoothness regularisers (the paper's
exact radius and attack are not public, so they are hyperparameters):

    L_robust = E_(s,a) [ max_{‖δ‖∞ ≤ ε} Σ_i (Q_i(s + σ⊙δ, a) − Q_i(s, a))² ]

δ lives in standardised state units (σ: the states' standard deviations) and is found by k
steps of projected sign-gradient ascent from a uniform random start (Madry et al. 2018), with
step 2.5·ε/k; one δ per sample serves every ensemble member. The loss then trains Q at that δ.

`lipschitz_estimate` is the diagnostic the paper plots: the largest ‖∇_s Q_i(s, a)‖₂ over a
batch and the members (a lower bound on the critic's Lipschitz constant in s).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

QFunction = Callable[[jax.Array, jax.Array], jax.Array]
"""(observations (B, S), actions (B, ...)) -> values (members, B)."""


def worst_perturbation(
    q: QFunction,
    obs: jax.Array,
    actions: jax.Array,
    radius: float,
    steps: int,
    scale: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """δ (B, S) with ‖δ‖∞ ≤ `radius` that (approximately) maximises Σ_i (Q_i(s + scale·δ, a) −
    Q_i(s, a))², by `steps` steps of projected sign-gradient ascent."""
    reference = jax.lax.stop_gradient(q(obs, actions))

    def change(delta):
        return jnp.square(q(obs + scale * delta, actions) - reference).sum()

    def ascend(delta, _):
        step = 2.5 * radius / steps
        delta = delta + step * jnp.sign(jax.grad(change)(delta))
        return jnp.clip(delta, -radius, radius), None

    start = jax.random.uniform(key, obs.shape, minval=-radius, maxval=radius)
    delta, _ = jax.lax.scan(ascend, start, None, length=steps)
    return jax.lax.stop_gradient(delta)


def robust_loss(
    q: QFunction,
    obs: jax.Array,
    actions: jax.Array,
    radius: float,
    steps: int,
    scale: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """L_robust: the mean over the batch of Σ_i (Q_i(s + scale·δ*, a) − Q_i(s, a))² at the
    worst perturbation δ* found by `worst_perturbation` (differentiable in Q's parameters)."""
    delta = worst_perturbation(q, obs, actions, radius, steps, scale, key)
    values, perturbed = q(obs, actions), q(obs + scale * delta, actions)
    return jnp.square(perturbed - values).sum(axis=0).mean()


def lipschitz_estimate(q: QFunction, obs: jax.Array, actions: jax.Array) -> jax.Array:
    """max over members and rows of ‖∇_s Q_i(s, a)‖₂."""
    # Row b's value depends on row b's state only, so the gradient of the batch sum of member
    # i's values holds every row's gradient.
    grads = jax.jacrev(lambda s: q(s, actions).sum(axis=1))(obs)  # (members, B, S)
    return jnp.sqrt(jnp.square(grads).reshape(*grads.shape[:2], -1).sum(axis=-1)).max()
