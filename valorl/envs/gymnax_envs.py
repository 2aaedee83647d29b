"""gymnax's environments behind valorl's `JaxEnv` protocol: MinAtar and CartPole; and the one
registry of valorl's JAX environments by id (`is_jax_env`, `make_jax_env`), which also names the
gridworlds of `valorl.envs.gridworlds`.

MinAtar (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible
Reinforcement Learning Experiments") as gymnax implements it in JAX: 10x10 boolean frames with
one channel per object kind (Breakout 4, Asterix 4, Freeway 7, SpaceInvaders 6), gymnax's
minimal action sets (3, 5, 3 and 4 actions), episodes truncated at 1000 steps (Freeway 2500).

Sticky actions: with probability `sticky_actions` the environment repeats the previous action
instead of the chosen one (Machado et al. 2018). The original MinAtar and Young & Tian's
published DQN results use 0.1; gymnax has none. valorl's default for MinAtar is 0.1, as the
original, and every run records the setting it used (`sticky_actions` in its data record).

Termination vs truncation: gymnax ends an episode when the game is over or the step limit is
reached, as one flag; valorl marks the end as a truncation (the value of the next state still
counts) when the step limit was reached, else as a termination.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.envs.gridworlds import GRIDWORLDS, GridWorld, gridworld, is_gridworld
from valorl.envs.jax_env import episode_returns
from valorl.errors import ValorlError

MINATAR = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar")
"""The MinAtar games valorl supports (gymnax ids)."""
CARTPOLE = "gymnax/CartPole-v1"
"""gymnax's JAX CartPole; plain "CartPole-v1" stays Gymnasium's (stepped on the host)."""
GYMNAX_ENVS = (*MINATAR, CARTPOLE)
JAX_ENVS = (*GYMNAX_ENVS, *GRIDWORLDS)
"""Every JAX environment valorl names by id: gymnax's and the gridworlds (at their default
sizes; any size of a gridworld is a JAX environment too, see `valorl.envs.gridworlds`)."""
MINATAR_STICKY_ACTIONS = 0.1
"""The original MinAtar's sticky-action probability, valorl's default for MinAtar games."""


def is_jax_env(env_id: str | None) -> bool:
    """Whether `env_id` names a JAX environment (stepped inside the compiled loop)."""
    return env_id in GYMNAX_ENVS or is_gridworld(env_id)


def default_sticky_actions(env_id: str) -> float:
    return MINATAR_STICKY_ACTIONS if env_id in MINATAR else 0.0


@functools.cache
def _gymnax(env_id: str) -> tuple[Any, Any]:
    import gymnax  # imported on first use: it pulls in seaborn and more

    # gymnax 0.0.9's MinAtar code writes ints into bool arrays and asks for int64; both are
    # harmless under JAX's defaults and would otherwise warn at every compilation.
    warnings.filterwarnings("ignore", "scatter inputs have incompatible types", FutureWarning)
    warnings.filterwarnings("ignore", "Explicitly requested dtype int64", UserWarning)
    return gymnax.make(env_id.removeprefix("gymnax/"))


@flax.struct.dataclass
class StickyState:
    """A gymnax state plus the action taken last (repeated by sticky actions)."""

    inner: Any
    last_action: jax.Array


@dataclasses.dataclass(frozen=True)
class GymnaxEnv:
    """A gymnax environment as a `JaxEnv`, with optional sticky actions."""

    id: str
    sticky_actions: float = 0.0
    """Probability of repeating the previous action instead of the chosen one."""

    def __post_init__(self) -> None:
        if self.id not in GYMNAX_ENVS:
            raise ValorlError(
                f"unknown JAX environment {self.id!r}; choose from {', '.join(JAX_ENVS)}"
            )
        if not 0.0 <= self.sticky_actions < 1.0:
            raise ValorlError(f"--sticky-actions must be in [0, 1), got {self.sticky_actions}")

    @property
    def _env(self) -> tuple[Any, Any]:
        return _gymnax(self.id)

    @property
    def frames(self) -> bool:
        return self.id in MINATAR

    @property
    def obs_shape(self) -> tuple[int, ...]:
        env, params = self._env
        return tuple(env.observation_space(params).shape)

    @property
    def obs_dtype(self) -> Any:
        return jnp.uint8 if self.frames else jnp.float32

    @property
    def num_actions(self) -> int:
        env, params = self._env
        return int(env.action_space(params).n)

    @property
    def max_episode_steps(self) -> int:
        return int(self._env[1].max_steps_in_episode)

    def for_training(self) -> GymnaxEnv:
        """Training steps the game as evaluation does (gymnax's time limit included)."""
        return self

    def reset(self, key: jax.Array) -> tuple[jax.Array, StickyState]:
        env, params = self._env
        obs, inner = env.reset_env(key, params)
        return obs.astype(self.obs_dtype), StickyState(inner, jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: StickyState, action: jax.Array):
        env, params = self._env
        sticky_key, step_key = jax.random.split(key)
        action = jnp.asarray(action, jnp.int32)
        if self.sticky_actions > 0:
            repeat = jax.random.uniform(sticky_key) < self.sticky_actions
            action = jnp.where(repeat, state.last_action, action)
        obs, inner, reward, done, _ = env.step_env(step_key, state.inner, action, params)
        truncated = done & (inner.time >= params.max_steps_in_episode)
        terminated = done & ~truncated
        reward = jnp.asarray(reward, jnp.float32)
        return obs.astype(self.obs_dtype), StickyState(inner, action), reward, terminated, truncated


def make_jax_env(env_id: str, sticky_actions: float | None = None) -> GymnaxEnv | GridWorld:
    """The JAX environment `env_id`; sticky actions at the game's default unless given (the
    gridworlds have none)."""
    if is_gridworld(env_id):
        if sticky_actions:
            raise ValorlError(
                f"{env_id} has no sticky actions, got --sticky-actions {sticky_actions}"
            )
        return gridworld(env_id)
    if sticky_actions is None:
        sticky_actions = default_sticky_actions(env_id)
    return GymnaxEnv(env_id, float(sticky_actions))


def random_returns(env: GymnaxEnv | GridWorld, episodes: int = 100, seed: int = 0) -> np.ndarray:
    """Returns of the uniform random policy (the 0 of normalised scores)."""

    def policy(obs, key):
        return jax.random.randint(key, obs.shape[:1], 0, env.num_actions)

    run = jax.jit(lambda key: episode_returns(env, policy, key, episodes))
    return np.asarray(run(jax.random.key(seed)))
