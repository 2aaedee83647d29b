"""Rolling policies out in a Gymnasium environment to measure their returns."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

ActFn = Callable[[np.ndarray], np.ndarray]


def episode_seeds(seed: int, round_index: int, episodes: int) -> list[int]:
    """Environment reset seeds for one evaluation round of one training seed: reproducible, and
    different across rounds, seeds and episodes."""
    return np.random.SeedSequence([seed, round_index]).generate_state(episodes).tolist()


class Evaluator:
    """Runs `episodes` episodes for each of several policies in lockstep.

    The policies act together: `act(obs)` receives observations of shape
    `(policies, episodes, *obs_shape)` and returns actions `(policies, episodes, action_dim)`,
    so one jitted call serves every seed of a run. Environments are made once and reused.
    In a `Discrete` action space actions are integers of shape `(policies, episodes)`, passed
    to `env.step` as Python ints. A policy that acts in chunks returns
    `(policies, episodes, h, action_dim)`: each chunk is executed open-loop, and `act` is asked
    again once an episode's chunk is used up (Q-chunking's evaluation, Li et al. 2025).

    Environments that report `info["success"]` (OGBench's, goal-reaching tasks) are also scored
    by it: after each round, `successes` holds whether each episode's last step reported
    success, shape (policies, episodes); it is None for environments that never report it.
    """

    def __init__(self, make_env: Callable[[], gym.Env], num_policies: int, episodes: int):
        self.num_policies, self.episodes = num_policies, episodes
        self.envs = [make_env() for _ in range(num_policies * episodes)]
        self.discrete = isinstance(self.envs[0].action_space, gym.spaces.Discrete)
        self.successes: np.ndarray | None = None

    def returns(self, act: ActFn, reset_seeds: list[list[int]]) -> np.ndarray:
        """Undiscounted returns, shape (policies, episodes)."""
        seeds = [s for per_policy in reset_seeds for s in per_policy]
        obs = np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, seeds, strict=True)])
        obs = obs.astype(np.float32)
        returns = np.zeros(len(self.envs))
        success = np.zeros(len(self.envs), bool)
        reported = False
        active = np.ones(len(self.envs), bool)
        chunk, used = None, np.zeros(len(self.envs), int)  # each episode's chunk, steps used
        while active.any():
            if chunk is None or (used[active] == chunk.shape[1]).any():
                shape = (self.num_policies, self.episodes, *obs.shape[1:])
                fresh = self._chunks(np.asarray(act(obs.reshape(shape))))
                replan = np.ones_like(used, bool) if chunk is None else used == chunk.shape[1]
                chunk = fresh if chunk is None else np.where(_rows(replan, fresh), fresh, chunk)
                used[replan] = 0
            actions = chunk[np.arange(len(self.envs)), used]
            used += 1
            for i in np.flatnonzero(active):
                action = int(actions[i]) if self.discrete else actions[i]
                next_obs, reward, terminated, truncated, info = self.envs[i].step(action)
                obs[i] = next_obs
                returns[i] += reward
                active[i] = not (terminated or truncated)
                if "success" in info:
                    reported = True
                    success[i] = bool(info["success"])
        shape = (self.num_policies, self.episodes)
        self.successes = success.reshape(shape) if reported else None
        return returns.reshape(shape)

    def _chunks(self, actions: np.ndarray) -> np.ndarray:
        """Actions as (environments, h, *action_shape), h = 1 for one action per call."""
        per_env = actions.reshape(len(self.envs), *actions.shape[2:])
        one_action_rank = 0 if self.discrete else 1
        return per_env[:, None] if per_env.ndim == 1 + one_action_rank else per_env

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _rows(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`mask` (rows,) broadcastable against `like` (rows, ...)."""
    return mask.reshape(-1, *([1] * (like.ndim - 1)))
