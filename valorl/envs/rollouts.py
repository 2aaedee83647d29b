"""Rolling policies out in a Gymnasium environment to measure their returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

ActFn = Callable[[np.ndarray], np.ndarray]
MAX_ENVS = 64
"""Environments an `Evaluator` keeps at most, by default."""


def episode_seeds(seed: int, round_index: int, episodes: int) -> list[int]:
    """Environment reset seeds for one evaluation round of one training seed: reproducible, and
    different across rounds, seeds and episodes."""
    return np.random.SeedSequence([seed, round_index]).generate_state(episodes).tolist()


class Evaluator:
    """Runs `episodes` episodes for each of several policies in lockstep.

    The policies act together: `act(obs)` receives observations of shape
    `(policies, n, *obs_shape)` and returns actions `(policies, n, action_dim)`, so one jitted
    call serves every seed of a run. In a `Discrete` action space actions are integers of shape
    `(policies, n)`, passed to `env.step` as Python ints. A policy that acts in chunks returns
    `(policies, n, h, action_dim)`: each chunk is executed open-loop, and `act` is asked again
    once an episode's chunk is used up (Q-chunking's evaluation, Li et al. 2025).

    Environments are made once and reused. At most `max_envs` live at once (some hold hundreds
    of megabytes: an OGBench manipulation environment about 200 MB), so the episodes run in
    waves of n = min(episodes, max_envs // policies) per policy; the results do not depend on
    the wave size. `reset_options(e)`, when given, are the reset options of each policy's
    episode e (OGBench's evaluation task, `valorl.envs.goal_tasks`).

    Environments that report `info["success"]` (OGBench's, goal-reaching tasks) are also scored
    by it: after each round, `successes` holds whether each episode's last step reported
    success, shape (policies, episodes); it is None for environments that never report it.
    """

    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        num_policies: int,
        episodes: int,
        max_envs: int = MAX_ENVS,
        reset_options: Callable[[int], dict[str, Any]] | None = None,
    ):
        self.num_policies, self.episodes = num_policies, episodes
        self.wave = max(1, min(episodes, max_envs // num_policies))
        self.envs = [make_env() for _ in range(num_policies * self.wave)]
        self.reset_options = reset_options
        self.discrete = isinstance(self.envs[0].action_space, gym.spaces.Discrete)
        self.successes: np.ndarray | None = None

    def returns(self, act: ActFn, reset_seeds: list[list[int]]) -> np.ndarray:
        """Undiscounted returns, shape (policies, episodes)."""
        seeds = np.asarray(reset_seeds, np.int64).reshape(self.num_policies, self.episodes)
        returns = np.zeros((self.num_policies, self.episodes))
        success = np.zeros((self.num_policies, self.episodes), bool)
        reported = False
        for start in range(0, self.episodes, self.wave):
            stop = min(start + self.wave, self.episodes)
            wave_returns, wave_success = self._wave(act, seeds[:, start:stop], start)
            returns[:, start:stop] = wave_returns
            if wave_success is not None:
                reported = True
                success[:, start:stop] = wave_success
        self.successes = success if reported else None
        return returns

    def _wave(
        self, act: ActFn, seeds: np.ndarray, first_episode: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Episodes `first_episode`.. of every policy, one per environment of the first
        `seeds.shape[1]` of each policy's: returns and successes, (policies, n)."""
        n = seeds.shape[1]
        envs = [self.envs[p * self.wave + e] for p in range(self.num_policies) for e in range(n)]
        obs = []
        for i, env in enumerate(envs):
            options = None
            if self.reset_options is not None:
                options = self.reset_options(first_episode + i % n)
            obs.append(env.reset(seed=int(seeds.flat[i]), options=options)[0])
        obs = np.stack(obs).astype(np.float32)
        returns = np.zeros(len(envs))
        success = np.zeros(len(envs), bool)
        reported = False
        active = np.ones(len(envs), bool)
        chunk, used = None, np.zeros(len(envs), int)  # each episode's chunk, steps used
        while active.any():
            if chunk is None or (used[active] == chunk.shape[1]).any():
                fresh = self._chunks(
                    np.asarray(act(obs.reshape(self.num_policies, n, *obs.shape[1:])))
                )
                replan = np.ones_like(used, bool) if chunk is None else used == chunk.shape[1]
                chunk = fresh if chunk is None else np.where(_rows(replan, fresh), fresh, chunk)
                used[replan] = 0
            actions = chunk[np.arange(len(envs)), used]
            used += 1
            for i in np.flatnonzero(active):
                action = int(actions[i]) if self.discrete else actions[i]
                next_obs, reward, terminated, truncated, info = envs[i].step(action)
                obs[i] = next_obs
                returns[i] += reward
                active[i] = not (terminated or truncated)
                if "success" in info:
                    reported = True
                    success[i] = bool(info["success"])
        shape = (self.num_policies, n)
        return returns.reshape(shape), success.reshape(shape) if reported else None

    def _chunks(self, actions: np.ndarray) -> np.ndarray:
        """Actions as (environments, h, *action_shape), h = 1 for one action per call."""
        per_env = actions.reshape(-1, *actions.shape[2:])
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
