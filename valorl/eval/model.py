"""A run's learned dynamics models, as functions of raw observations and actions."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.models import DynamicsModel, ModelState
from valorl.training.restore import load_checkpoint


@dataclasses.dataclass
class LearnedModel:
    """Every seed's dynamics model from a model-based run (MBPO, MOPO, MOBILE).

    `model.predict(obs, actions)` gives every member's predicted next observation and reward
    (means and standard deviations) in the environment's units; `seed_index` picks the seed."""

    model: DynamicsModel
    states: Any
    """The seed-stacked `ModelState`."""
    normalizer: Normalizer
    seeds: list[int]
    step: int

    def state(self, seed_index: int = 0) -> ModelState:
        if not -len(self.seeds) <= seed_index < len(self.seeds):
            raise ValorlError(
                f"seed_index {seed_index} is out of range: the run has {len(self.seeds)} seeds"
            )
        return jax.tree.map(lambda x: x[seed_index], self.states)

    def predict(self, obs: Any, actions: Any, seed_index: int = 0) -> dict[str, np.ndarray]:
        """Every member's prediction at a batch of (obs (B, S), actions (B, A)) in environment
        units: next_obs_mean/std (members, B, S), reward_mean/std and terminal_prob
        (members, B); the elites' indices under "elites"."""
        n = self.normalizer
        obs = np.asarray(obs, np.float32)
        actions = np.asarray(actions, np.float32)
        if obs.ndim != 2 or actions.ndim != 2 or len(obs) != len(actions):
            raise ValorlError(
                f"predict takes a batch of observations (B, S) and actions (B, A); got "
                f"{obs.shape} and {actions.shape}"
            )
        state = self.state(seed_index)
        p = self.model.predict(state, n.observations(obs), n.actions_to_unit(actions))
        scale = float(n.reward_scale)
        return {
            "next_obs_mean": np.asarray(n.observations_to_env(p.next_obs_mean)),
            "next_obs_std": np.asarray(p.next_obs_std * n.obs_std),
            "reward_mean": np.asarray(p.reward_mean) / scale,
            "reward_std": np.asarray(p.reward_std) / scale,
            "terminal_prob": np.asarray(p.terminal_prob),
            "elites": np.asarray(state.elites),
        }


def load_model(run_dir: str | os.PathLike, step: int | None = None) -> LearnedModel:
    """The dynamics models of a model-based run's latest checkpoint (or the one kept at
    `step`)."""
    plan, ckpt = load_checkpoint(run_dir, step)
    if not plan.agent.model_based:
        raise ValorlError(f"{os.fspath(run_dir)} trained {plan.agent.name}, which learns no model")
    return LearnedModel(
        model=plan.agent.model,
        states=ckpt.states.model,
        normalizer=ckpt.normalizer,
        seeds=list(plan.seeds),
        step=ckpt.step,
    )
