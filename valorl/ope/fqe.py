"""Fitted Q evaluation (Le, Voloshin & Yue 2019): the evaluated policy's Q from logged data.

FQE regresses Q(s, a) onto the Bellman target of the evaluated policy π_e,

    y = r + γ · m · E_{a'~π_e(·|s')} Q'(s', a'),

with Q' a Polyak-averaged target network (the soft-update variant of the iterated regressions
in the paper) and a' drawn from π_e, here the candidate's action plus Gaussian noise, clipped
(see `target.py`): one sample per transition and step, which regresses Q to the expectation.

Finite episodes. When the environment has a time limit H, the value of a state depends on the
steps left, and a stationary Q would extrapolate past the limit and disagree with the rollouts
that measure true values. So the time limit is part of the state: Q sees t / H next to the
(standardised) observation, and m = 0 both at terminations and at the last step before the
limit; an episode cut earlier (data that ran out) still bootstraps. Without a time limit, Q is
stationary and m = 1 − terminal, the usual target.

Discrete actions (Dataset.num_actions = n): the network maps s to Q(s, ·), one output per
action (as DQN's), and the evaluated policy is given by its action probabilities π_e(·|s)
(`target.py`: ε-greedy, or a softmax over the candidate's Q), so the expectation over its
actions is exact instead of sampled: E_{a~π_e} Q(s, a) = Σ_a π_e(a|s)·Q(s, a).

All candidates train together: the network is the same, only the evaluated policy's actions at
the next states differ, so they are precomputed per candidate and the candidates are `vmap`ped
over `scan_updates`, many updates fused into one compiled call. Rewards are divided by the
largest discounted return they allow, max|r| · Σ_{t<H} γ^t, so Q is at most one in size
whatever the reward scale.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.agents.base import (
    Metrics,
    NetState,
    Params,
    Spec,
    adam,
    apply,
    create_train_state,
    grad_step,
    polyak,
    prefix,
)
from valorl.data.dataset import Dataset
from valorl.data.transforms import Normalizer
from valorl.nets import MLP, StateActionValue
from valorl.training.fused import init_seeds, scan_updates
from valorl.training.sources import DATASET_ROWS
from valorl.ui import progress_bar

CHUNK = 1 << 14
"""Rows per call when evaluating Q and V over the whole dataset."""


class FQEData(flax.struct.PyTreeNode):
    """Transitions as FQE sees them; `next_means` has a leading candidate axis."""

    observations: jax.Array
    """Standardised observations, plus t / H when there is a time limit H."""
    actions: jax.Array
    """Logged actions in [-1, 1] (integers for discrete actions)."""
    rewards: jax.Array
    """Rewards divided by the value scale."""
    next_observations: jax.Array
    masks: jax.Array
    """0 where the episode ends for good (termination or time limit), else 1."""
    next_means: jax.Array
    """The evaluated policy's deterministic action at s', in [-1, 1] (for discrete actions, its
    action probabilities π_e(·|s'))."""


class FQEState(flax.struct.PyTreeNode):
    q: NetState
    target: Params


@dataclasses.dataclass(frozen=True)
class FQE:
    """Fitted Q evaluation of a clipped-Gaussian policy around each candidate's actions (for
    discrete actions, of a policy given by its action probabilities)."""

    batches_per_update: ClassVar[int] = 1

    discount: float = 0.99
    """Discount factor γ of the estimated value."""
    noise: float = 0.2
    """Target-policy noise σ in [-1, 1] action units (unused for discrete actions, whose
    probabilities are given)."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the Q-network."""
    lr: float = 3e-4
    """Adam learning rate."""
    tau: float = 0.005
    """Polyak rate of the target network."""
    batch_size: int = 256
    """Transitions per gradient step."""
    steps: int = 10_000
    """Gradient steps."""
    value_samples: int = 16
    """Actions sampled from π_e to average Q into V(s) = E_a Q(s, a) after training
    (continuous actions; the discrete expectation is exact)."""
    num_actions: int | None = None
    """Size of a discrete action space (Q(s, ·) has one output per action); None: continuous."""

    def init(self, key: jax.Array, spec: Spec) -> FQEState:
        if self.num_actions is not None:
            module, inputs = (
                MLP(self.hidden_dims, self.num_actions),
                (jnp.zeros((1, *spec.obs_shape)),),
            )
        else:
            module = StateActionValue(self.hidden_dims)
            inputs = (jnp.zeros((1, *spec.obs_shape)), jnp.zeros((1, spec.action_dim)))
        q = create_train_state(module, key, inputs, adam(self.lr))
        return FQEState(q=q, target=q.params)

    def sample_actions(self, key: jax.Array, means: jax.Array) -> jax.Array:
        """a ~ π_e: clip(μ + σ·ε, −1, 1) in [-1, 1] units."""
        return jnp.clip(means + self.noise * jax.random.normal(key, means.shape), -1.0, 1.0)

    def q(self, state: FQEState, params: Params, obs: jax.Array, actions: jax.Array) -> jax.Array:
        if self.num_actions is not None:
            values = apply(state.q, params, obs)
            return jnp.take_along_axis(values, actions[:, None], axis=-1)[:, 0]
        return apply(state.q, params, obs, actions)[..., 0]

    def discrete_value(
        self, state: FQEState, params: Params, obs: jax.Array, probs: jax.Array
    ) -> jax.Array:
        """E_{a~π_e} Q(s, a) = Σ_a π_e(a|s)·Q(s, a), exact over the actions."""
        return (apply(state.q, params, obs) * probs).sum(axis=-1)

    def loss(
        self, params: Params, state: FQEState, batch: FQEData, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        if self.num_actions is not None:
            next_q = self.discrete_value(
                state, state.target, batch.next_observations, batch.next_means
            )
        else:
            next_actions = self.sample_actions(key, batch.next_means)
            next_q = self.q(state, state.target, batch.next_observations, next_actions)
        target = jax.lax.stop_gradient(batch.rewards + self.discount * batch.masks * next_q)
        q = self.q(state, params, batch.observations, batch.actions)
        return ((q - target) ** 2).mean(), {"q_mean": q.mean()}

    def update(self, state: FQEState, batch: FQEData, key: jax.Array) -> tuple[FQEState, Metrics]:
        q, metrics = grad_step(state.q, lambda p: self.loss(p, state, batch, key))
        target = polyak(q.params, state.target, self.tau)
        return state.replace(q=q, target=target), prefix("fqe", metrics)

    def values(
        self, state: FQEState, obs: jax.Array, actions: jax.Array, means: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(Q(s, a) at the given actions, V(s) as the mean of Q over `value_samples` actions
        drawn from π_e around `means`)."""
        q = self.q(state, state.q.params, obs, actions)
        if self.num_actions is not None:
            return q, self.discrete_value(state, state.q.params, obs, means)
        samples = jax.vmap(lambda k: self.sample_actions(k, means))(
            jax.random.split(key, self.value_samples)
        )
        v = jax.vmap(lambda a: self.q(state, state.q.params, obs, a))(samples).mean(axis=0)
        return q, v


def time_index(dataset: Dataset) -> np.ndarray:
    """Each row's step within its episode (0 at the first transition)."""
    return np.concatenate([np.arange(s.stop - s.start) for s in dataset.episode_slices()])


def fit_fqe(
    fqe: FQE,
    dataset: Dataset,
    normalizer: Normalizer,
    means: np.ndarray,
    next_means: np.ndarray,
    horizon: int | None,
    key: jax.Array,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Train one FQE per candidate and return (Q(s_t, a_t), V(s_t)) at every row of the data,
    each (candidates, rows) in the data's reward units.

    `means` and `next_means` are each candidate's deterministic actions (environment units) at
    the observations and next observations, (candidates, rows, action_dim); for discrete
    actions (then `fqe.num_actions` must be set) the evaluated policies' action probabilities
    there, (candidates, rows, num_actions).
    """
    t = time_index(dataset)
    features = _features(normalizer.observations(jnp.asarray(dataset.observations)), t, horizon)
    next_features = _features(
        normalizer.observations(jnp.asarray(dataset.next_observations)), t + 1, horizon
    )
    masks = dataset.masks * (1.0 if horizon is None else (t + 1 < horizon))
    scale = _value_scale(dataset, fqe.discount, horizon)
    actions = normalizer.actions_to_unit(jnp.asarray(dataset.actions))
    data = FQEData(
        observations=features,
        actions=actions,
        rewards=jnp.asarray(dataset.rewards / scale),
        next_observations=next_features,
        masks=jnp.asarray(masks, jnp.float32),
        next_means=_unit_actions(normalizer, next_means),
    )
    init_key, train_key, value_key = jax.random.split(key, 3)
    candidates = len(next_means)
    states = init_seeds(fqe, Spec((features.shape[1],), dataset.action_dim))(
        jax.random.split(init_key, candidates)
    )
    keys = jax.random.split(train_key, candidates)
    chunk = min(1000, fqe.steps)
    with progress_bar(progress) as bar:
        task = bar.add_task(f"FQE × {candidates}", total=fqe.steps, rate="", note="")
        for done in range(0, fqe.steps, chunk):
            n = min(chunk, fqe.steps - done)
            states, keys, metrics = _train_chunk(fqe, n)(states, keys, data)
            loss = float(np.mean(metrics["fqe/loss"]))
            bar.update(task, advance=n, note=f"td loss {loss:.2e}")
    unit_means = _unit_actions(normalizer, means)
    value_keys = jax.random.split(value_key, candidates)
    q, v = [], []
    for start in range(0, len(dataset), CHUNK):
        rows = slice(start, start + CHUNK)
        chunk_keys = jax.vmap(lambda k: jax.random.fold_in(k, start))(value_keys)  # noqa: B023
        q_part, v_part = _values(fqe)(
            states, features[rows], actions[rows], unit_means[:, rows], chunk_keys
        )
        q.append(np.asarray(q_part, np.float64))
        v.append(np.asarray(v_part, np.float64))
    return scale * np.concatenate(q, axis=1), scale * np.concatenate(v, axis=1)


def _unit_actions(normalizer: Normalizer, actions: np.ndarray) -> jax.Array:
    """Actions in [-1, 1] units, or a discrete policy's action probabilities as they are."""
    if normalizer.discrete:
        return jnp.asarray(actions, jnp.float32)
    return normalizer.actions_to_unit(jnp.asarray(actions, jnp.float32))


def _value_scale(dataset: Dataset, discount: float, horizon: int | None) -> float:
    """max|r| · Σ_{t<L} γ^t: the largest discounted return the rewards allow. L is the time
    limit; without one it is infinite (γ < 1) or the longest episode in the data (γ = 1)."""
    largest = float(np.abs(dataset.rewards).max()) or 1.0
    if horizon is None and discount == 1.0:
        horizon = max(s.stop - s.start for s in dataset.episode_slices())
    if discount == 1.0:
        return largest * horizon
    tail = 0.0 if horizon is None else discount**horizon
    return largest * (1.0 - tail) / (1.0 - discount)


def _features(obs: jax.Array, t: np.ndarray, horizon: int | None) -> jax.Array:
    if horizon is None:
        return obs
    return jnp.concatenate([obs, jnp.asarray(t / horizon, jnp.float32)[:, None]], axis=1)


@functools.cache
def _train_chunk(fqe: FQE, num_updates: int) -> Any:
    """jit(vmap over candidates (scan of updates)); the data is shared except `next_means`."""
    axes = FQEData(None, None, None, None, None, 0)

    def chunk(state, key, data):
        return scan_updates(fqe, DATASET_ROWS, num_updates, state, key, None, data)

    return jax.jit(jax.vmap(chunk, in_axes=(0, 0, axes)), donate_argnums=(0, 1))


@functools.cache
def _values(fqe: FQE) -> Any:
    return jax.jit(jax.vmap(fqe.values, in_axes=(0, None, None, 0, 0)))
