"""A JAX environment as a Gymnasium environment, stepped from Python one call at a time.

This is how the host loop (`--host-loop`), Gymnasium tools (Minari's DataCollector) and the
host evaluator run the same gymnax games that the compiled loop steps inside `lax.scan`: each
`reset`/`step` is one jitted call. The JAX environments are registered with Gymnasium under
their valorl ids (`valorl.envs` does this on import), so `gym.make("Breakout-MinAtar")` works.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import jax
import numpy as np

from valorl.envs.gridworlds import PAPER_SMALL
from valorl.envs.gymnax_envs import JAX_ENVS, default_sticky_actions, make_jax_env


class HostEnv(gym.Env):
    """`gym.Env` over a JAX environment (gymnax's or a gridworld): Discrete actions,
    observations in the storage dtype. `training=True` steps the world the training loops
    learn in (`JaxEnv.for_training`: the gridworlds without their time limit)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(self, env_id: str, sticky_actions: float | None = None, training: bool = False):
        env = make_jax_env(env_id, sticky_actions)
        self.jax_env = env = env.for_training() if training else env
        if env.frames:
            self.observation_space = gym.spaces.Box(0, 1, env.obs_shape, np.uint8)
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, env.obs_shape, np.float32)
        self.action_space = gym.spaces.Discrete(env.num_actions)
        self._reset = jax.jit(lambda key: (jax.random.split(key)[0], *env.reset(key)))
        self._step = jax.jit(
            lambda key, state, a: (jax.random.split(key)[0], *env.step(key, state, a))
        )
        self._key = jax.random.key(0)
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._key = jax.random.key(seed)
        self._key, obs, self._state = self._reset(self._key)
        return np.asarray(obs), {}

    def step(self, action):
        # One compiled call per step: the key advances inside it (a second dispatch for
        # splitting keys on the host would double the cost of a step).
        self._key, obs, self._state, reward, terminated, truncated = self._step(
            self._key, self._state, np.int32(action)
        )
        obs, reward, terminated, truncated = jax.device_get((obs, reward, terminated, truncated))
        return obs, float(reward), bool(terminated), bool(truncated), {}


def register_gymnasium_ids(env_ids: tuple[str, ...] = (*JAX_ENVS, *PAPER_SMALL)) -> None:
    """Register JAX environments with Gymnasium under their valorl ids (each once): by default
    every named one; a gridworld of another size is registered when a run first needs it."""
    for env_id in env_ids:
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point="valorl.envs.host:HostEnv",
                kwargs={"env_id": env_id, "sticky_actions": default_sticky_actions(env_id)},
                max_episode_steps=None,
                disable_env_checker=True,
            )
