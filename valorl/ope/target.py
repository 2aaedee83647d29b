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
With a `temperature` T the evaluated policy is instead the softmax over the candidate's own
Q-values (critic agents; the mean over the ensemble, in the run's scaled reward units),
π_e(a|s) ∝ exp(Q(s, a)/T), a Boltzmann policy that approaches the greedy one as T → 0.
A discrete policy is handled through its action probabilities (candidates, N, n).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

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
        temperature: float | None = None,
    ):
        self.runs = runs
        self.noise, self.num_actions, self.temperature = noise, num_actions, temperature
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
        for discrete actions, of integer actions (N,) given every candidate's action
        probabilities (K, N, n) (`probabilities`)."""
        if self.num_actions is not None:
            picked = np.take_along_axis(means, np.asarray(actions)[None, :, None], axis=-1)
            with np.errstate(divide="ignore"):
                return np.log(picked[..., 0])
        return clipped_gaussian_log_prob(actions[None], means, self.std, self.low, self.high)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sampled actions for observations of shape (candidates, episodes, *obs_shape)."""
        means, offset = [], 0
        for policy in self.runs.values():
            means.append(_run_means(policy, obs[offset : offset + len(policy.seeds)]))
            offset += len(policy.seeds)
        means = np.concatenate(means)
        if self.num_actions is not None:  # inverse-CDF samples of π_e(·|s)
            probs = self._discrete_probabilities(obs, means)
            u = rng.random((*probs.shape[:-1], 1))
            actions = (np.cumsum(probs, axis=-1) < u).sum(axis=-1)
            return np.minimum(actions, self.num_actions - 1).astype(np.int32)
        noise = self.std * rng.standard_normal(means.shape)
        return np.clip(means + noise, self.low, self.high).astype(np.float32)

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """π_e(·|s) of every candidate at each observation (discrete actions):
        (candidates, N, num_actions)."""
        greedy = self.means(obs)
        return self._discrete_probabilities(
            np.broadcast_to(obs, (len(self), *np.shape(obs))), greedy
        )

    def _discrete_probabilities(self, obs: np.ndarray, greedy: np.ndarray) -> np.ndarray:
        """Action probabilities from each candidate's greedy actions `greedy` (K, B), or, with a
        temperature, from its Q-values at `obs` (K, B, *obs_shape)."""
        if self.temperature is None:
            return epsilon_greedy_probs(greedy, self.noise, self.num_actions)
        parts, offset = [], 0
        for policy in self.runs.values():
            seeds = len(policy.seeds)
            rows = [
                _run_q_values(policy, obs[offset : offset + seeds, start : start + CHUNK])
                for start in range(0, obs.shape[1], CHUNK)
            ]
            parts.append(np.concatenate(rows, axis=1))
            offset += seeds
        logits = np.concatenate(parts).astype(np.float64) / self.temperature
        return np.exp(logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True))

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


def epsilon_greedy_probs(greedy: np.ndarray, epsilon: float, num_actions: int) -> np.ndarray:
    """Action probabilities of the ε-greedy policy around `greedy`: shape (*greedy.shape, n)."""
    one_hot = np.asarray(greedy)[..., None] == np.arange(num_actions)
    return (1.0 - epsilon) * one_hot + epsilon / num_actions


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


def _run_q_values(policy: Policy, obs: np.ndarray) -> np.ndarray:
    """Q(s, a) of every action for each of a run's seeds (mean over the critic's ensemble, the
    run's scaled reward units): obs (seeds, B, *obs_shape) -> (seeds, B, num_actions)."""
    q = _q_function(policy.agent, int(policy.num_actions))
    return np.asarray(q(policy.states, policy.normalizer, jnp.asarray(obs, jnp.float32)))


@functools.cache
def _q_function(agent, num_actions: int):
    def one_seed(state, normalizer, obs):
        norm = normalizer.observations(obs)
        every = [jnp.full(obs.shape[0], a, jnp.int32) for a in range(num_actions)]
        return jnp.stack([agent.q_values(state, norm, a).mean(axis=0) for a in every], axis=-1)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0)))


def _run_means(policy: Policy, obs: np.ndarray) -> np.ndarray:
    """Deterministic actions of each of a run's seeds: obs (seeds, B, *obs_shape)."""
    keys = jax.random.split(jax.random.key(0), len(policy.seeds))  # unused: deterministic
    actions = seed_policies(policy.agent)(policy.states, policy.normalizer, jnp.asarray(obs), keys)
    return np.asarray(actions)
