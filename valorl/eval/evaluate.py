"""Re-evaluating a trained run: fresh episodes for every seed's latest policy."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from valorl.envs import token_games
from valorl.envs.goal_tasks import check_episodes
from valorl.envs.rollouts import episode_seeds
from valorl.errors import ValorlError
from valorl.eval.policy import load_policy
from valorl.eval.steering import DEFAULT_BETA, DEFAULT_SAMPLES, Reduction, steer
from valorl.training.evaluation import fresh_noise, run_evaluator, seed_policies

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
    steering: dict | None = None
    """How the policies were steered (`steer_with`, `samples`, `beta`, `reduction`); None:
    the run's own deterministic policies."""
    successes: np.ndarray | None = None
    """Same shape, whether each episode ended in success (environments that report it)."""


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    episodes: int = 10,
    env: str | None = None,
    seed: int = 0,
    steer_with: str | os.PathLike | None = None,
    samples: int | None = None,
    beta: float | None = None,
    reduction: Reduction = "min",
    plan: tuple[int, int] | None = None,
) -> Evaluation:
    """Roll out each seed's policy for `episodes` episodes on fresh, seeded starts.

    With `steer_with` (a run with a critic), each seed's policy is steered by that critic
    (V-GPS, `valorl.eval.steering`): `samples` draws per decision (default `DEFAULT_SAMPLES`,
    10), a draw from softmax(Q / beta) (default `DEFAULT_BETA`, 1) or the argmax (`beta` 0).
    `plan` (width, depth): act by that beam search in the run's learned model instead of as it
    trained (JOWA)."""
    if episodes < 1:
        raise ValorlError(f"--episodes must be at least 1, got {episodes}")
    if steer_with is None and (samples is not None or beta is not None):
        raise ValorlError("--samples and --beta steer a policy: give the critic with --steer-with")
    policy = load_policy(run_dir)
    if plan is not None:
        if not hasattr(policy.agent, "plan_depth"):
            raise ValorlError(f"--plan: {policy.agent.name} has no learned model to plan in")
        agent = dataclasses.replace(policy.agent, plan_width=plan[0], plan_depth=plan[1])
        policy = dataclasses.replace(policy, agent=agent)
    steered, steering = None, None
    if steer_with is not None:
        samples = DEFAULT_SAMPLES if samples is None else samples
        beta = DEFAULT_BETA if beta is None else beta
        steered = steer(policy, steer_with, samples=samples, beta=beta, reduction=reduction)
        steering = dict(steer_with=str(steer_with), samples=samples, beta=beta, reduction=reduction)
    if policy.goals is not None:
        check_episodes(episodes, "--episodes")
    token_games.check_episodes(policy.info.env_spec_json, env, episodes, "--episodes")
    evaluator = run_evaluator(
        policy.info, env, policy.goals, policy.obs_shape, len(policy.seeds), episodes
    )
    if evaluator.discrete != policy.agent.discrete:
        evaluator.close()
        kind = lambda discrete: "discrete" if discrete else "continuous"
        raise ValorlError(
            f"{run_dir} acts with {kind(policy.agent.discrete)} actions, but the environment "
            f"has {kind(evaluator.discrete)} ones"
        )
    if steered is not None:
        act = steered.episode_act(seed)
    else:
        deterministic = seed_policies(policy.agent)
        keys = jax.random.split(jax.random.key(seed), len(policy.seeds))
        act = fresh_noise(
            lambda obs, keys: deterministic(policy.states, policy.normalizer, obs, keys), keys
        )
    try:
        returns = evaluator.returns(
            act, [episode_seeds(s, FRESH_ROUNDS + seed, episodes) for s in policy.seeds]
        )
    finally:
        evaluator.close()
    return Evaluation(
        run=str(run_dir),
        step=policy.step,
        seeds=policy.seeds,
        returns=returns,
        scores=policy.info.normalized_score(returns),
        steering=steering,
        successes=evaluator.successes,
    )
