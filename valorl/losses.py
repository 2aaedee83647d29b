"""Loss terms shared by agents: pure functions of arrays, each tested on hand-computed values."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """Asymmetric squared loss L2^τ(u) = |τ − 1(u < 0)| · u² (IQL, Kostrikov et al. 2021, Eq. 5).

    With `diff = target − prediction`, minimising it makes the prediction the τ-expectile of
    the target: τ = 0.5 is the mean, τ → 1 approaches the maximum.
    """
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def awr_weights(advantages: jax.Array, beta: float, max_weight: float) -> jax.Array:
    """exp(β · A) clipped at `max_weight`: advantage-weighted regression (Peng et al. 2019;
    IQL Eq. 7). Larger β imitates only the best actions; the clip keeps one outlier advantage
    from dominating a batch."""
    return jnp.minimum(jnp.exp(beta * advantages), max_weight)


def td3_bc_actor_loss(
    q: jax.Array, policy_actions: jax.Array, data_actions: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array]:
    """TD3+BC's actor loss −λ·mean Q(s, π(s)) + mean (π(s) − a)², with λ = α / mean|Q|
    treated as a constant (Fujimoto & Gu 2021, Eq. 3–4). Returns (loss, λ)."""
    lmbda = jax.lax.stop_gradient(alpha / jnp.abs(q).mean())
    bc = jnp.mean((policy_actions - data_actions) ** 2)
    return -lmbda * q.mean() + bc, lmbda


def cql_logsumexp(
    q_random: jax.Array,
    q_policy: jax.Array,
    log_probs: jax.Array,
    action_dim: int,
    temperature: float = 1.0,
) -> jax.Array:
    """CQL(H)'s soft maximum of Q over actions, T·log Σ_j exp((Q(s, a_j) − log p(a_j)) / T),
    estimated by importance sampling (Kumar et al. 2020, Eq. 4 and App. F; as in the reference
    code): `q_random` (..., N) at actions drawn uniformly on [−1, 1]^d (density 2^−d), and
    `q_policy` (..., M) at actions drawn from the policies whose log-densities are `log_probs`.

    With T = 1 and every group of proposals equally large, this minus log(N + M) is an unbiased
    importance-sampling estimate (inside the log) of log ∫ exp Q(s, a) da over the action box;
    the constant is left out, as the reference code does, since it has no gradient.
    """
    log_uniform = -action_dim * jnp.log(2.0)
    weighted = jnp.concatenate([q_random - log_uniform, q_policy - log_probs], axis=-1)
    return temperature * jax.scipy.special.logsumexp(weighted / temperature, axis=-1)


def discrete_cql_gap(q_all: jax.Array, actions: jax.Array) -> jax.Array:
    """CQL(H)'s conservative gap for a discrete action space, per sample: log Σ_a exp Q(s, a)
    − Q(s, a_data) (Kumar et al. 2020, Eq. 4, with the soft maximum exact over the actions
    instead of sampled). `q_all` (..., num_actions), integer `actions` broadcastable to its
    leading axes (an ensemble's (members, B, A) with the batch's (B,)) -> (...). Positive:
    the log-sum-exp exceeds every single Q(s, a)."""
    q_data = jnp.sum(q_all * jax.nn.one_hot(actions, q_all.shape[-1], dtype=q_all.dtype), -1)
    return jax.scipy.special.logsumexp(q_all, axis=-1) - q_data
