"""OGBench's goal-conditioned evaluation: each episode one of the environment's five tasks,
with the task's goal appended to every observation.

A goal-conditioned agent (`valorl.data.goals`) learns π(a | [s, g]); OGBench evaluates it on
five fixed tasks per environment, resetting with `options={"task_id": k}` and reading the goal
from the reset's `info["goal"]` (the goal state's observation, or its oracle representation
when the environment is made with `use_oracle_rep=True`), success from `info["success"]`
(Park et al., ICLR 2025, `impls/utils/evaluation.py`). Here the environments of an evaluation
round take the tasks in turn: the i-th environment made plays task i mod 5 + 1, so with
episodes a multiple of five every seed plays every task equally often.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from valorl.errors import ValorlError

TASKS = 5
"""Evaluation tasks per OGBench environment."""


class GoalTask(gym.Wrapper):
    """An OGBench environment that always resets to task `task` and observes [s, g], `obs_dim`
    numbers in all."""

    def __init__(self, env: gym.Env, task: int, obs_dim: int):
        super().__init__(env)
        self.task, self.goal_dim = task, obs_dim - env.observation_space.shape[0]
        if self.goal_dim < 1:
            raise ValorlError(
                f"the environment observes {env.observation_space.shape[0]} numbers, but the "
                f"goal-conditioned policy takes {obs_dim} in all: no room for a goal"
            )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.goal = np.zeros(self.goal_dim, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options={"task_id": self.task, **(options or {})})
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


def goal_task_envs(make: Callable[[], gym.Env], obs_dim: int) -> Callable[[], gym.Env]:
    """A factory of `GoalTask` environments over `make`'s, observing `obs_dim` numbers [s, g],
    that takes the tasks in turn."""
    made = 0

    def make_next() -> gym.Env:
        nonlocal made
        task = made % TASKS + 1
        made += 1
        return GoalTask(make(), task, obs_dim)

    return make_next
