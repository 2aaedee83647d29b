"""Reference returns for normalised scores: 0 = uniform random actions, 100 = the expert.

Both are mean undiscounted returns over seeded episodes (`collect.mean_return`, the same
measurement `valorl collect` records), the expert acting without noise. The recipes store the
numbers `reference_returns` gives with 100 episodes and seed 0, so every score valorl shows
for a zoo dataset is on the same scale.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from valorl.collection import Behaviour, mean_return


def policy_return(
    env_id: str, policy: Callable[[np.ndarray], np.ndarray], episodes: int = 100, seed: int = 0
) -> float:
    """Mean return of a deterministic `policy` (observation -> action) in `env_id`."""
    env = gym.make(env_id)
    try:
        return mean_return(env, lambda obs, rng: (policy(obs), 0.0), episodes, seed)
    finally:
        env.close()


def reference_returns(
    env_id: str, expert: Callable[[np.ndarray], np.ndarray], episodes: int = 100, seed: int = 0
) -> tuple[float, float]:
    """(random, expert) mean returns in `env_id`."""
    env = gym.make(env_id)
    try:
        random = mean_return(env, Behaviour("random").build(env), episodes, seed)
    finally:
        env.close()
    return random, policy_return(env_id, expert, episodes, seed)
