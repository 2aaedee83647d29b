"""OGBench's goal-conditioned evaluation: each episode one of the environment's five tasks,
with the task's goal appended to every observation.

A goal-conditioned agent (`valorl.data.goals`) learns π(a | [s, g]); OGBench evaluates it on
five fixed tasks per environment, resetting with `options={"task_id": k}` and reading the goal
from the reset's `info["goal"]` (the goal state's observation, or its oracle representation
when the environment is made with `use_oracle_rep=True`), success from `info["success"]`
(Park et al., ICLR 2025, `impls/utils/evaluation.py`). Here episode e of every seed plays task
e mod 5 + 1 (`task_options`, the `Evaluator`'s reset options), so with episodes a multiple of
five every seed plays every task equally often.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from valorl.errors import ValorlError

TASKS = 5
"""Evaluation tasks per OGBench environment."""
MAX_ENVS = 16
"""Environments an evaluation keeps at once: each OGBench manipulation environment holds about
200 MB (its compiled MuJoCo model), so 3 seeds x 20 episodes at once would take 12 GB."""


def check_episodes(episodes: int, flag: str) -> None:
    """Every seed plays every task equally often only if `episodes` is a multiple of five."""
    if episodes % TASKS:
        raise ValorlError(
            f"goal-conditioned evaluation plays OGBench's {TASKS} tasks in turn, so {flag} "
            f"must be a multiple of {TASKS} (got {episodes})"
        )


def task_options(episode: int) -> dict[str, Any]:
    """The reset options of a seed's evaluation episode `episode`: its task."""
    return {"task_id": episode % TASKS + 1}


class GoalTask(gym.Wrapper):
    """An OGBench environment observing [s, g], `obs_dim` numbers in all, g the goal of the
    task it was last reset to (`options={"task_id": k}`)."""

    def __init__(self, env: gym.Env, obs_dim: int):
        super().__init__(env)
        self.goal_dim = obs_dim - env.observation_space.shape[0]
        if self.goal_dim < 1:
            raise ValorlError(
                f"the environment observes {env.observation_space.shape[0]} numbers, but the "
                f"goal-conditioned policy takes {obs_dim} in all: no room for a goal"
            )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.goal = np.zeros(self.goal_dim, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if "goal" not in info:
            raise ValorlError(
                f"{self.env.spec.id if self.env.spec else 'the environment'} reports no "
                "info['goal'] on reset; goal-conditioned runs evaluate in OGBench's "
                "goal-conditioned environments"
            )
        goal = np.asarray(info["goal"], np.float32).reshape(-1)
        if goal.shape != (self.goal_dim,):
            raise ValorlError(
                f"the environment's goals have {goal.size} features; the policy was trained "
                f"on goals of {self.goal_dim}"
            )
        self.goal = goal
        return self._observe(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, np.float32), self.goal])
