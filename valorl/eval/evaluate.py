"""Re-evaluating a trained run: fresh episodes for every seed's latest policy."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from valorl.data.sources import make_env
from valorl.envs.rollouts import Evaluator, episode_seeds
from valorl.errors import ValorlError
from valorl.eval.policy import load_policy
from valorl.training.evaluation import seed_policies

FRESH_ROUNDS = 1_000_000
"""Offset of the episode-seed streams used here, far from those of training-time rounds."""


@dataclasses.dataclass
class Evaluation:
    run: str
    step: int
    seeds: list[int]
    returns: np.ndarray
    """(seeds, episodes) undiscounted returns."""
    scores: np.ndarray | None
    """Same shape, normalised (0 = random, 100 = reference best); None without references."""
    successes: np.ndarray | None = None
    """Same shape, whether each episode ended in success (environments that report it)."""


def evaluate_run(
    run_dir: str | os.PathLike, *, episodes: int = 10, env: str | None = None, seed: int = 0
) -> Evaluation:
    """Roll out each seed's policy for `episodes` episodes on fresh, seeded starts."""
    if episodes < 1:
        raise ValorlError(f"--episodes must be at least 1, got {episodes}")
    policy = load_policy(run_dir)
    evaluator = Evaluator(lambda: make_env(policy.info, env), len(policy.seeds), episodes)
    if evaluator.discrete != policy.agent.discrete:
        evaluator.close()
        kind = lambda discrete: "discrete" if discrete else "continuous"
        raise ValorlError(
            f"{run_dir} acts with {kind(policy.agent.discrete)} actions, but the environment "
            f"has {kind(evaluator.discrete)} ones"
        )
    act = seed_policies(policy.agent)
    keys = jax.random.split(jax.random.key(seed), len(policy.seeds))
    try:
        returns = evaluator.returns(
            lambda obs: act(policy.states, policy.normalizer, obs, keys),
            [episode_seeds(s, FRESH_ROUNDS + seed, episodes) for s in policy.seeds],
        )
    finally:
        evaluator.close()
    return Evaluation(
        run=str(run_dir),
        step=policy.step,
        seeds=policy.seeds,
        returns=returns,
        scores=policy.info.normalized_score(returns),
        successes=evaluator.successes,
    )
