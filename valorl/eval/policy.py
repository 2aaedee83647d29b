"""Trained policies as functions from raw observations to environment actions."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from valorl.agents import Agent
from valorl.data.dataset import DatasetInfo
from valorl.data.goals import GoalSampling
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.training.evaluation import seed_policies
from valorl.training.restore import load_checkpoint


@dataclasses.dataclass
class Policy:
    """Every seed's policy from a run: `policy(obs)` returns actions for environment units.

    `obs` may be one observation or a batch; `seed_index` picks the seed (default: the first).
    A discrete agent's actions are int32 (one per observation).
    """

    agent: Agent
    states: Any
    normalizer: Normalizer
    seeds: list[int]
    info: DatasetInfo
    step: int
    num_actions: int | None = None
    """Size of a discrete action space (the run's `RunPlan.num_actions`); None: continuous."""
    goals: GoalSampling | None = None
    """A goal-conditioned run's goals (`RunPlan.goals`): its observations are [s, g]."""

    def __call__(
        self,
        obs: Any,
        seed_index: int = 0,
        key: jax.Array | None = None,
        deterministic: bool = True,
    ) -> np.ndarray:
        batch, single, seed_index = observation_batch(obs, self.obs_shape, seed_index, self.seeds)
        if key is None and not deterministic:
            raise ValorlError("a stochastic action needs a key")
        key = key if key is not None else jax.random.key(0)  # unused when deterministic
        state = jax.tree.map(lambda x: x[seed_index : seed_index + 1], self.states)
        actions = seed_policies(self.agent, deterministic)(
            state, self.normalizer, batch[None], key[None]
        )[0]
        return np.asarray(actions[0] if single else actions)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.normalizer.obs_mean.shape)


def observation_batch(
    obs: Any, obs_shape: tuple[int, ...], seed_index: int, seeds: list[int]
) -> tuple[np.ndarray, bool, int]:
    """One observation or a batch as a float32 batch, whether it was one, and `seed_index` in
    range; ValorlError for a wrong shape or seed."""
    obs = np.asarray(obs, np.float32)
    if obs.shape[max(obs.ndim - len(obs_shape), 0) :] != obs_shape:
        raise ValorlError(
            f"observations have shape {obs.shape}; this policy expects {obs_shape} "
            "or a batch of them"
        )
    if not -len(seeds) <= seed_index < len(seeds):
        raise ValorlError(f"seed_index {seed_index} is out of range: there are {len(seeds)} seeds")
    single = obs.ndim == len(obs_shape)
    return (obs[None] if single else obs), single, seed_index % len(seeds)


def load_policy(run_dir: str | os.PathLike, step: int | None = None) -> Policy:
    """The policies of a run's latest checkpoint (finished or not), or of the checkpoint kept
    at `step` (`keep_checkpoints`)."""
    plan, ckpt = load_checkpoint(run_dir, step)
    return Policy(
        agent=plan.agent,
        states=ckpt.states,
        normalizer=ckpt.normalizer,
        seeds=list(plan.seeds),
        info=plan.info,
        step=ckpt.step,
        num_actions=plan.num_actions,
        goals=plan.goals,
    )
