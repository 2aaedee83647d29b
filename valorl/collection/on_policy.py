"""A run's critic judged on its own policy's episodes (`valorl diagnose RUN --episodes N`).

Each seed's deterministic policy plays the same seeded starts in the run's environment; its critic
is then read at every state-action it visited and set against the discounted return it really
collected from there (`valorl.training.diagnostics.policy_value_check`). It lives here, above
training and evaluation, because it plays episodes as collection does.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from valorl.collection.run import run_episode
from valorl.data import ogbench
from valorl.data.dataset import Dataset
from valorl.data.sources import make_env
from valorl.errors import ValorlError
from valorl.eval.policy import Policy, load_policy
from valorl.training.diagnostics import policy_value_check, require_diagnosable

STARTS = 15_485_863
"""Stream of the episodes' reset seeds, apart from collection's and evaluation's."""


def play(
    policy: Policy,
    seed_index: int,
    episodes: int,
    env_id: str | None = None,
    seed: int = 0,
    bar: tqdm | None = None,
) -> Dataset:
    """`episodes` episodes of one seed's deterministic policy in the run's environment (or
    `env_id`), from reset seeds that depend on `seed` only, as a dataset. A policy of action
    chunks acts each chunk open-loop; a flow policy draws fresh noise at every decision, as
    evaluation does. The rewards are those the run trained on: the environment's, or the
    sparse ones for a sparse OGBench single-task dataset."""
    env = make_env(policy.info, env_id)
    rng = np.random.default_rng(0)  # unused: the policy is deterministic
    starts = np.random.SeedSequence([seed, STARTS]).generate_state(episodes)
    played = []
    try:
        for episode, reset_seed in enumerate(starts):
            key = jax.random.fold_in(jax.random.key(seed), episode)
            played.append(
                run_episode(env, _open_loop(policy, seed_index, key), rng, int(reset_seed))
            )
            if bar is not None:
                bar.update()
    finally:
        env.close()
    if ogbench.sparse_task(policy.info.name):
        played = [ep | {"rewards": ogbench.sparse_rewards(ep["rewards"])} for ep in played]
    return Dataset.from_episodes(played, info=policy.info, num_actions=policy.num_actions)


def _open_loop(policy: Policy, seed_index: int, key: jax.Array):
    """`run_episode`'s act for one episode: a decision (with noise key `key` folded with its
    count) whenever the last chunk is spent, its actions one per step; no log-probability."""
    chunk: list[np.ndarray] = []
    decisions = itertools.count()

    def act(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        if not chunk:
            actions = policy(obs, seed_index, jax.random.fold_in(key, next(decisions)))
            chunk.extend(actions if policy.agent.action_chunk > 1 else [actions])
        return chunk.pop(0), 0.0

    return act


def prepare_on_policy_check(
    run_dir: str | os.PathLike,
    episodes: int = 5,
    env_id: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Callable[[], dict[str, Any]]:
    """The check of every seed's critic on `episodes` episodes of its own policy, as a
    function to call (`diagnose_run`'s `on_policy`): the arguments, the run and its agent are
    checked now, the episodes played when it is called. It returns the per-seed lists of
    `policy_value_check`, with the environment and the seed of the starts."""
    if episodes < 1:
        raise ValorlError(f"--episodes must be at least 1, got {episodes}")
    policy = load_policy(run_dir)
    if policy.goals is not None:
        raise ValorlError(
            f"{run_dir} is goal-conditioned: the on-policy check plays episodes without a goal"
        )
    require_diagnosable(policy.agent)

    def check() -> dict[str, Any]:
        seeds = len(policy.seeds)
        with tqdm(total=seeds * episodes, desc="on-policy episodes", disable=not progress) as bar:
            played = [play(policy, i, episodes, env_id, seed, bar) for i in range(seeds)]
        checked = policy_value_check(policy.agent, policy.states, policy.normalizer, played)
        return {"env": env_id or policy.info.env_id, "seed": seed, **checked}

    return check
