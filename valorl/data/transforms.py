"""The fixed transforms between the environment's units and the units an agent learns in.

Agents always see actions in [-1, 1]; some also want observations standardised (TD3+BC,
Fujimoto & Gu 2021, Sec. 5) or rewards rescaled by the dataset's return range (IQL,
Kostrikov et al. 2021, App. B: r * 1000 / (max return - min return)). The library fits one
`Normalizer` from the dataset, applies it to the data once before training, and stores it in
the checkpoint, so a saved policy maps raw observations to environment actions on its own.
"""

from __future__ import annotations

from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.data.dataset import Batch, Dataset

RewardNormalization = Literal["none", "return_range"]
OBS_STD_EPS = 1e-3  # TD3+BC's epsilon in (s - mu) / (sigma + eps)


@flax.struct.dataclass
class Normalizer:
    """Affine maps: observations to standard units, actions to [-1, 1], rewards by a scale.

    Discrete actions (bounds of width 0: `action_low.shape[-1] == 0`) pass through unchanged."""

    obs_mean: jax.Array
    obs_std: jax.Array
    action_low: jax.Array
    action_high: jax.Array
    reward_scale: jax.Array

    @classmethod
    def identity(cls, obs_shape: tuple[int, ...], action_dim: int) -> Normalizer:
        """No change to observations or rewards; actions already in [-1, 1]."""
        return cls(
            obs_mean=jnp.zeros(obs_shape),
            obs_std=jnp.ones(obs_shape),
            action_low=-jnp.ones(action_dim),
            action_high=jnp.ones(action_dim),
            reward_scale=jnp.asarray(1.0),
        )

    def observations(self, obs: jax.Array) -> jax.Array:
        return (obs - self.obs_mean) / self.obs_std

    def observations_to_env(self, obs: jax.Array) -> jax.Array:
        """The inverse of `observations`: agent units back to the environment's."""
        return obs * self.obs_std + self.obs_mean

    @property
    def discrete(self) -> bool:
        return self.action_low.shape[-1] == 0

    def actions_to_unit(self, actions: jax.Array) -> jax.Array:
        if self.discrete:
            return actions
        return 2.0 * (actions - self.action_low) / (self.action_high - self.action_low) - 1.0

    def actions_to_env(self, unit_actions: jax.Array) -> jax.Array:
        if self.discrete:
            return unit_actions
        unit = jnp.clip(unit_actions, -1.0, 1.0)
        return self.action_low + 0.5 * (unit + 1.0) * (self.action_high - self.action_low)

    def batch(self, batch: Batch, observations: bool = True) -> Batch:
        """`batch` in agent units; `observations=False` leaves the observations as they are
        (compact uint8 frames of an agent that does not standardise them stay uint8)."""
        obs = self.observations if observations else lambda x: x
        return batch.replace(
            observations=obs(batch.observations),
            next_observations=obs(batch.next_observations),
            actions=self.actions_to_unit(batch.actions),
            next_actions=(
                None if batch.next_actions is None else self.actions_to_unit(batch.next_actions)
            ),
            rewards=batch.rewards * self.reward_scale,
            returns_to_go=(
                None if batch.returns_to_go is None else batch.returns_to_go * self.reward_scale
            ),
        )


def action_bounds(dataset: Dataset, action_space=None) -> tuple[np.ndarray, np.ndarray]:
    """The environment's action bounds; without an environment, [-1, 1] when the data fit in it,
    else the per-dimension range of the data. Discrete actions have none (width-0 bounds)."""
    if dataset.discrete:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    if action_space is not None:
        return (np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32))
    low, high = dataset.actions.min(axis=0), dataset.actions.max(axis=0)
    if np.all(low >= -1.0) and np.all(high <= 1.0):
        return -np.ones_like(low), np.ones_like(high)
    return low, np.where(high > low, high, low + 1.0)


def fit_normalizer(
    dataset: Dataset,
    *,
    normalize_observations: bool,
    reward_normalization: RewardNormalization,
    action_space=None,
) -> Normalizer:
    """Fit the transforms an agent asked for (identity where it asked for none)."""
    obs_shape = dataset.obs_shape
    if normalize_observations:
        mean = dataset.observations.mean(axis=0)
        std = dataset.observations.std(axis=0) + OBS_STD_EPS
    else:
        mean, std = np.zeros(obs_shape, np.float32), np.ones(obs_shape, np.float32)
    scale = 1.0
    if reward_normalization == "return_range":
        returns = dataset.episode_returns()
        span = float(returns.max() - returns.min())
        scale = 1000.0 / span if span > 0 else 1.0
    low, high = action_bounds(dataset, action_space)
    return Normalizer(
        obs_mean=jnp.asarray(mean, jnp.float32),
        obs_std=jnp.asarray(std, jnp.float32),
        action_low=jnp.asarray(low, jnp.float32),
        action_high=jnp.asarray(high, jnp.float32),
        reward_scale=jnp.asarray(scale, jnp.float32),
    )


def with_goal_features(
    normalizer: Normalizer, features: np.ndarray, standardise: bool
) -> Normalizer:
    """`normalizer` over observations [s, g] with goal features `features` (N, goal_dim)
    appended: the goal part standardised by the features' own statistics when `standardise`
    (the agent standardises observations), left as it is otherwise."""
    features = np.asarray(features, np.float32)
    if standardise:
        mean, std = features.mean(axis=0), features.std(axis=0) + OBS_STD_EPS
    else:
        mean, std = (
            np.zeros(features.shape[1:], np.float32),
            np.ones(features.shape[1:], np.float32),
        )
    return normalizer.replace(
        obs_mean=jnp.concatenate([normalizer.obs_mean, jnp.asarray(mean, jnp.float32)]),
        obs_std=jnp.concatenate([normalizer.obs_std, jnp.asarray(std, jnp.float32)]),
    )
