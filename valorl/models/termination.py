"""Known termination rules of environments, for imagined steps.

MBPO (its `static_fns`) and OfflineRL-Kit end an imagined rollout with the environment's own
termination rule applied to the predicted next observation wherever the rule is a function of
the observation, rather than learning it. These are Gymnasium's v5 rules (observations in the
environment's units); an environment without an entry here gets the model's learned termination
classifier, whose probability is sampled (`valorl.models.rollouts.termination_test`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

TerminationFn = Callable[[jax.Array], jax.Array]
"""Next observations (B, S) in the environment's units -> terminated (B,) bool."""


def _never(next_obs: jax.Array) -> jax.Array:
    return jnp.zeros(next_obs.shape[:1], bool)


def _hopper(next_obs: jax.Array) -> jax.Array:
    """Hopper-v5: healthy while z > 0.7, |angle| < 0.2 and every other state |x| < 100."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (
        jnp.isfinite(next_obs).all(axis=-1)
        & (jnp.abs(next_obs[:, 1:]) < 100.0).all(axis=-1)
        & (z > 0.7)
        & (jnp.abs(angle) < 0.2)
    )
    return ~healthy


def _walker2d(next_obs: jax.Array) -> jax.Array:
    """Walker2d-v5: healthy while 0.8 < z < 2.0 and −1 < angle < 1."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def _inverted_pendulum(next_obs: jax.Array) -> jax.Array:
    """InvertedPendulum-v5: ends when the pole angle leaves [−0.2, 0.2]."""
    return ~(jnp.isfinite(next_obs).all(axis=-1) & (jnp.abs(next_obs[:, 1]) <= 0.2))


def _inverted_double_pendulum(next_obs: jax.Array) -> jax.Array:
    """InvertedDoublePendulum-v5: ends when the tip's height 0.6·cos θ1 + 0.6·cos(θ1 + θ2)
    falls to 1 (the observation holds sin θ1, sin θ2, cos θ1, cos θ2 at 1..4; checked against
    MuJoCo's site position to 1e-5)."""
    s1, s2, c1, c2 = next_obs[:, 1], next_obs[:, 2], next_obs[:, 3], next_obs[:, 4]
    return 0.6 * c1 + 0.6 * (c1 * c2 - s1 * s2) <= 1.0


RULES: dict[str, TerminationFn] = {
    "Hopper": _hopper,
    "Walker2d": _walker2d,
    "HalfCheetah": _never,
    "Swimmer": _never,
    "Pendulum": _never,
    "InvertedPendulum": _inverted_pendulum,
    "InvertedDoublePendulum": _inverted_double_pendulum,
}
"""Rules by environment name (the id without its version)."""


def termination_rule(env_id: str | None) -> TerminationFn | None:
    """The known rule of `env_id` ("Hopper-v5"), or None: use the learned classifier."""
    if env_id is None:
        return None
    return RULES.get(env_id.split("/")[-1].rsplit("-v", 1)[0])
