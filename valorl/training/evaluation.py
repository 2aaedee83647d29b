"""Evaluation rounds during training: every seed's deterministic policy, rolled out together."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from valorl.agents import Agent
from valorl.data import ogbench
from valorl.data.dataset import DatasetInfo
from valorl.data.goals import GoalSampling
from valorl.data.sources import make_env
from valorl.data.transforms import Normalizer
from valorl.envs import goal_tasks, token_games
from valorl.envs.rollouts import MAX_ENVS, Evaluator, episode_seeds
from valorl.training.fused import compiled_cache

_fold_in_seeds = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


def fresh_noise(
    act: Callable[[Any, jax.Array], jax.Array], keys: jax.Array
) -> Callable[[Any], jax.Array]:
    """`obs -> act(obs, keys')` with `keys'` the seeds' `keys` folded with a decision count, so
    that a policy that samples to act (a flow's noise, best-of-N's samples) draws new noise at
    every decision, as the flow papers' evaluations do, instead of the same noise all episode;
    the same `keys` give the same decisions again."""
    decisions = itertools.count()
    return lambda obs: act(obs, _fold_in_seeds(keys, next(decisions)))


@compiled_cache
def seed_policies(agent: Agent, deterministic: bool = True) -> Callable[..., jax.Array]:
    """jit(vmap over seeds) of `(states, normalizer, obs, keys) -> env actions`.

    `obs` has shape (seeds, batch, *obs_shape) in environment units; actions come back in
    environment units, shape (seeds, batch, action_dim), or integers of shape (seeds, batch)
    for a discrete agent.
    """

    def one_seed(state: Any, normalizer: Normalizer, obs: jax.Array, key: jax.Array):
        unit = agent.act(state, normalizer.observations(obs), key, deterministic)
        return normalizer.actions_to_env(unit)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0, 0)))


def evaluation_round(
    evaluator: Evaluator,
    agent: Agent,
    states: Any,
    normalizer: Normalizer,
    eval_keys: jax.Array,
    seeds: list[int],
    round_index: int,
) -> np.ndarray:
    """Every seed's deterministic policy on this round's episode starts: (seeds, episodes)."""
    keys = _fold_in_seeds(eval_keys, round_index)
    act = seed_policies(agent)
    return evaluator.returns(
        fresh_noise(lambda obs, keys: act(states, normalizer, obs, keys), keys),
        [episode_seeds(s, round_index, evaluator.episodes) for s in seeds],
    )


def run_evaluator(
    info: DatasetInfo,
    env: str | None,
    goals: GoalSampling | None,
    obs_shape: tuple[int, ...],
    num_policies: int,
    episodes: int,
) -> Evaluator:
    """The evaluator of a run's policies: in the data's environment (or `env`), or for a
    goal-conditioned run (`goals`) in OGBench's goal-conditioned one, each seed's episodes
    taking its five tasks in turn with the task's goal appended to each observation
    (`valorl.envs.goal_tasks`); a multi-game run's episodes take its games in turn
    (`valorl.envs.token_games`). OGBench's environments are large, so fewer live at once."""
    games = token_games.games_in(info.env_spec_json) if env is None else None
    if games:
        make = lambda: make_env(info)
        return Evaluator(
            make, num_policies, episodes, reset_options=token_games.game_options(games)
        )
    if goals is None:
        make = lambda: make_env(info, env)
        max_envs = goal_tasks.MAX_ENVS if ogbench.is_ogbench(env or info.env_id) else MAX_ENVS
        return Evaluator(make, num_policies, episodes, max_envs)
    oracle = {"use_oracle_rep": True} if goals.representation == "oracle" else {}
    make = lambda: goal_tasks.GoalTask(make_env(info, env, **oracle), obs_shape[-1])
    return Evaluator(
        make, num_policies, episodes, goal_tasks.MAX_ENVS, reset_options=goal_tasks.task_options
    )
