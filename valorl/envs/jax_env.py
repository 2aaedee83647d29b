"""Environments written in JAX: valorl's small protocol, and stepping many of them at once.

A `JaxEnv` is a frozen (hashable) object with two pure functions, so that it steps inside the
same compiled `lax.scan` as the agent's updates and `vmap`s over parallel environments and
seeds:

    reset(key)                      -> (obs, state)
    step(key, state, action)        -> (obs, state, reward, terminated, truncated)

`step` does not reset: `obs` is the real next observation even at the end of an episode, which
the replay needs for bootstrapping (a truncated episode still bootstraps from it). `auto_reset`
starts a new episode where one ended. Observations come in the environment's storage dtype
(`obs_dtype`: uint8 for MinAtar's boolean frames), which networks convert at their input.

Any JAX environment with a discrete action space plugs in by implementing this protocol
(gymnax_envs.py adapts gymnax's; gridworlds.py implements it directly; xminigrid or navix would
be further adapters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp


class JaxEnv(Protocol):
    id: str
    """The name runs record (e.g. "Breakout-MinAtar")."""
    obs_shape: tuple[int, ...]
    obs_dtype: Any
    num_actions: int
    max_episode_steps: int
    """Length at which an episode is truncated."""

    def for_training(self) -> JaxEnv:
        """The environment the training loops step (the gridworlds drop their time limit
        there, as their paper trains)."""
        ...

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(
        self, key: jax.Array, state: Any, action: jax.Array
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array]: ...


@flax.struct.dataclass
class Transition:
    """What one step of a (vector of) environment(s) produced, before any reset."""

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminated: jax.Array
    truncated: jax.Array


def auto_reset(
    env: JaxEnv, key: jax.Array, state: Any, obs: jax.Array, action: jax.Array
) -> tuple[Transition, jax.Array, Any]:
    """Step one environment; where the episode ended, start a new one.

    Returns the transition (with the real last observation) and the observation and state the
    next step starts from. Both branches are computed and one is selected, as under `vmap`."""
    step_key, reset_key = jax.random.split(key)
    next_obs, next_state, reward, terminated, truncated = env.step(step_key, state, action)
    reset_obs, reset_state = env.reset(reset_key)
    done = terminated | truncated
    pick = lambda fresh, cont: jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, cont)
    transition = Transition(obs, action, reward, next_obs, terminated, truncated)
    return transition, pick(reset_obs, next_obs), pick(reset_state, next_state)


def reset_many(env: JaxEnv, key: jax.Array, count: int) -> tuple[jax.Array, Any]:
    """`count` environments reset with independent keys: leading axis `count`."""
    return jax.vmap(env.reset)(jax.random.split(key, count))


def step_many(
    env: JaxEnv, key: jax.Array, states: Any, obs: jax.Array, actions: jax.Array
) -> tuple[Transition, jax.Array, Any]:
    """`auto_reset` on every environment of a vector (leading axis), independent keys."""
    keys = jax.random.split(key, actions.shape[0])
    return jax.vmap(lambda k, s, o, a: auto_reset(env, k, s, o, a))(keys, states, obs, actions)


def episode_returns(
    env: JaxEnv, policy: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array, episodes: int
) -> jax.Array:
    """Undiscounted returns of `episodes` episodes run to their end in parallel, shape
    (episodes,): `policy(obs, key) -> actions` acts on all of them at once. Compiles to one
    `lax.while_loop` of at most `max_episode_steps` steps (finished episodes stop counting)."""
    reset_key, run_key = jax.random.split(key)
    obs, states = reset_many(env, reset_key, episodes)

    def body(carry):
        obs, states, returns, active, key, t = carry
        key, act_key, step_key = jax.random.split(key, 3)
        actions = policy(obs, act_key)
        keys = jax.random.split(step_key, episodes)
        next_obs, states, rewards, terminated, truncated = jax.vmap(env.step)(keys, states, actions)
        returns = returns + jnp.where(active, rewards, 0.0)
        active = active & ~(terminated | truncated)
        return next_obs, states, returns, active, key, t + 1

    def running(carry):
        return carry[3].any() & (carry[5] < env.max_episode_steps)

    start = (obs, states, jnp.zeros(episodes), jnp.ones(episodes, bool), run_key, 0)
    return jax.lax.while_loop(running, body, start)[2]
