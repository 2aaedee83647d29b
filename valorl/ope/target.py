"""The policies off-policy evaluation scores: each seed of each run, made stochastic.

Importance sampling needs the evaluated policy's action probabilities, and a trained policy
acts deterministically. valorl therefore evaluates, for each candidate, the policy

    π_e(·|s) = clip(μ(s) + σ·h·ε, low, high),   ε ~ N(0, I),

where μ(s) is the candidate's deterministic action, h half the action range and σ the target
noise (a fraction of half the range, i.e. a standard deviation in [-1, 1] action units, as
collection's `noise=`). Its probabilities are `clipped_gaussian_log_prob`, the same function
that scores collection behaviours, and its true value is measured by rolling out exactly this
stochastic policy.

In a discrete action space (`num_actions` = n) the candidate's deterministic action g(s) is
its greedy action, and the evaluated policy is ε-greedy around it, with ε the target noise:

    π_e(a|s) = (1 − ε)·1[a = g(s)] + ε/n.

ε = 0 evaluates the greedy policy itself: π_e is one-hot, so an episode's importance weight
is zero as soon as the data took another action (exact, but few episodes keep any weight).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from valorl.collection import clipped_gaussian_log_prob
from valorl.envs.rollouts import Evaluator, episode_seeds
from valorl.eval.policy import Policy
from valorl.training.evaluation import seed_policies
from valorl.ui import progress_bar

ROLLOUT_ROUND = 2_000_000
"""Offset of the episode-seed stream for true values, apart from training and `valorl eval`."""

CHUNK = 1 << 15
"""Observations per policy call when computing actions for a whole dataset."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One evaluated policy: seed `seed_index` of the run in `run`."""

    run: str
    seed_index: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.run}:index={self.seed_index}"  # as `valorl collect --policy` spells it


class TargetPolicies:
    """Every seed of every run as a stochastic evaluation policy (see the module docstring)."""

    def __init__(
        self,
        runs: dict[str, Policy],
        noise: float,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
        num_actions: int | None = None,
    ):
        self.runs = runs
        self.noise, self.num_actions = noise, num_actions
        if num_actions is not None:  # bounds of width 0, as a discrete normaliser's
            low = high = np.zeros(0)
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.std = noise * 0.5 * (self.high - self.low)
        self.candidates = [
            Candidate(path, i, seed)
            for path, policy in runs.items()
            for i, seed in enumerate(policy.seeds)
        ]

    def __len__(self) -> int:
        return len(self.candidates)

    def means(self, obs: np.ndarray) -> np.ndarray:
        """μ(s) of every candidate at each observation: (candidates, N, action_dim), env units."""
        parts = []
        for start in range(0, len(obs), CHUNK):
            batch = np.asarray(obs[start : start + CHUNK], np.float32)
            per_run = [
                _run_means(policy, np.broadcast_to(batch, (len(policy.seeds), *batch.shape)))
                for policy in self.runs.values()
            ]
            parts.append(np.concatenate(per_run))
        return np.concatenate(parts, axis=1)

    def log_probs(self, actions: np.ndarray, means: np.ndarray) -> np.ndarray:
        """log π_e(a|s) of `actions` (N, action_dim) given every candidate's means (K, N, A);
        for discrete actions, of integer actions (N,) given greedy actions (K, N)."""
        if self.num_actions is not None:
            return epsilon_greedy_log_prob(actions[None], means, self.noise, self.num_actions)
        return clipped_gaussian_log_prob(actions[None], means, self.std, self.low, self.high)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sampled actions for observations of shape (candidates, episodes, *obs_shape)."""
        means, offset = [], 0
        for policy in self.runs.values():
            means.append(_run_means(policy, obs[offset : offset + len(policy.seeds)]))
            offset += len(policy.seeds)
        means = np.concatenate(means)
        if self.num_actions is not None:
            explore = rng.random(means.shape) < self.noise
            uniform = rng.integers(0, self.num_actions, means.shape)
            return np.where(explore, uniform, means).astype(np.int32)
        noise = self.std * rng.standard_normal(means.shape)
        return np.clip(means + noise, self.low, self.high).astype(np.float32)

    def true_values(
        self,
        make_env: Callable[[], gym.Env],
        episodes: int,
        discount: float,
        seed: int,
        horizon: int | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Discounted returns of `episodes` rollouts per candidate, (candidates, episodes).

        Every candidate starts from the same seeded states (common random numbers make the
        comparison between candidates sharper); the action noise comes from `seed`. The
        progress bar counts steps of the longest episode (`horizon` if known).
        """
        rng = np.random.default_rng(np.random.SeedSequence([seed, ROLLOUT_ROUND]))
        starts = episode_seeds(seed, ROLLOUT_ROUND, episodes)
        with (
            progress_bar(progress) as bar,
            Evaluator(lambda: DiscountedReward(make_env(), discount), len(self), episodes) as ev,
        ):
            task = bar.add_task(
                f"rollouts × {len(self)}", total=horizon, rate="", note=f"{episodes} episodes each"
            )

            def act(obs: np.ndarray) -> np.ndarray:
                bar.advance(task)
                return self.act(obs, rng)

            return ev.returns(act, [starts] * len(self))


def epsilon_greedy_log_prob(
    actions: np.ndarray, greedy: np.ndarray, epsilon: float, num_actions: int
) -> np.ndarray:
    """log π(a|s) of the ε-greedy policy around `greedy` (broadcast with `actions`):
    log((1 − ε)·1[a = g] + ε/n); −inf where ε = 0 and a ≠ g."""
    probs = (1.0 - epsilon) * (np.asarray(actions) == np.asarray(greedy)) + epsilon / num_actions
    with np.errstate(divide="ignore"):
        return np.log(probs)


class DiscountedReward(gym.Wrapper):
    """Rewards multiplied by γ^t (t counted from reset), so undiscounted sums of the wrapped
    environment's rewards are discounted returns."""

    def __init__(self, env: gym.Env, discount: float):
        super().__init__(env)
        self.discount, self.scale = discount, 1.0

    def reset(self, **kwargs):
        self.scale = 1.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward, self.scale = self.scale * float(reward), self.scale * self.discount
        return obs, reward, terminated, truncated, info


def _run_means(policy: Policy, obs: np.ndarray) -> np.ndarray:
    """Deterministic actions of each of a run's seeds: obs (seeds, B, *obs_shape)."""
    keys = jax.random.split(jax.random.key(0), len(policy.seeds))  # unused: deterministic
    actions = seed_policies(policy.agent)(policy.states, policy.normalizer, jnp.asarray(obs), keys)
    return np.asarray(actions)
