"""Imagined rollouts: branched from real states, stepped by a learned model, kept in a buffer.

MBPO's model usage (Janner et al. 2019, Alg. 2): every round, start `rollout_batch` rollouts of
length h from states drawn from the real data, act with the current policy, step each with one
random elite of the model, stop a rollout where it terminates, and add the imagined transitions
to a model buffer that keeps the last `rollout_retain` rounds; the agent then learns from
batches with a `real_ratio` share of real rows and the rest from the model buffer. h may grow
linearly with environment steps (MBPO's rollout schedule: Hopper 1 → 15 over epochs 20 to 100,
an epoch being 1000 environment steps); offline (MOPO, MOBILE) it is fixed.

Rollouts are compiled at their longest length and the current length is a traced number, so a
growing schedule never recompiles (steps past the current length are skipped, not computed);
the model buffer is a `valorl.data.replay.ReplayBuffer` of `rollout_batch · rollout_length ·
rollout_retain` rows, of which batches see only the newest `rollout_retain` rounds' worth at
the current length (`kept_rows`), as MBPO's pool, which it resizes as h grows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from valorl.config import require_at_least_one
from valorl.data import replay
from valorl.data.dataset import Batch
from valorl.data.replay import ReplayBuffer
from valorl.errors import ValorlError
from valorl.models.dynamics import DynamicsModel, ModelState, Prediction
from valorl.models.termination import TerminationFn

Policy = Callable[[jax.Array, jax.Array], jax.Array]
"""(observations (B, S), key) -> actions (B, A): the current policy, sampling."""
Penalty = Callable[[Prediction], jax.Array]
"""Every member's prediction -> (B,) amount subtracted from the imagined rewards (MOPO)."""


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """How a model-based agent imagines data and mixes it with real data."""

    rollout_batch: int = 50_000
    """Rollouts started per round, from real states (MBPO 100k; OfflineRL-Kit 50k)."""
    rollout_length: int = 5
    """Steps per rollout (the end of the schedule when it grows)."""
    rollout_start_length: int | None = None
    """Length at the start of a growing schedule (MBPO's Hopper: 1); unset: fixed length."""
    rollout_schedule: tuple[int, int] = (20_000, 100_000)
    """Environment steps over which the length grows linearly from the start length to
    `rollout_length` (online runs; MBPO's Hopper: epochs 20 to 100)."""
    rollout_every: int = 1000
    """Offline: gradient steps between rounds of rollouts (OfflineRL-Kit: 1000). Online:
    environment steps between refitting the model and a round of rollouts (MBPO: 250)."""
    rollout_retain: int = 5
    """Rounds of rollouts the model buffer keeps."""
    real_ratio: float = 0.05
    """Share of real rows in every batch (MBPO and OfflineRL-Kit: 0.05)."""

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "rollout_batch", "rollout_length", "rollout_every", "rollout_retain"
        )
        start = self.rollout_start_length
        if start is not None and not 1 <= start <= self.rollout_length:
            raise ValorlError(
                f"--rollout-start-length must be between 1 and --rollout-length "
                f"({self.rollout_length}), got {start}"
            )
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValorlError(f"--real-ratio must be in [0, 1], got {self.real_ratio}")
        if self.rollout_schedule[1] < self.rollout_schedule[0]:
            raise ValorlError("--rollout-schedule must be START,END with START <= END")

    @property
    def capacity(self) -> int:
        """Rows of the model buffer: `rollout_retain` rounds at the longest length."""
        return self.rollout_batch * self.rollout_length * self.rollout_retain

    def kept_rows(self, env_step: jax.Array | int) -> jax.Array:
        """Rows of `rollout_retain` rounds at the length of the last round imagined before
        `env_step` environment steps were taken (rounds start every `rollout_every` steps):
        the newest part of the model buffer, which batches are drawn from (MBPO's pool)."""
        last_round = env_step - 1 - (env_step - 1) % self.rollout_every
        return self.rollout_batch * self.length_at(last_round) * self.rollout_retain

    def real_rows(self, batch_size: int) -> int:
        """Real rows in a batch of `batch_size`; they come first, the imagined rows after."""
        return round(self.real_ratio * batch_size)

    def length_at(self, env_step: jax.Array | int) -> jax.Array:
        """The rollout length at `env_step`: fixed, or MBPO's linear schedule (rounded down)."""
        if self.rollout_start_length is None:
            return jnp.int32(self.rollout_length)
        lo, hi = self.rollout_schedule
        progress = jnp.clip((env_step - lo) / max(hi - lo, 1), 0.0, 1.0)
        span = self.rollout_length - self.rollout_start_length
        return (self.rollout_start_length + jnp.floor(progress * span)).astype(jnp.int32)


def rollout(
    model: DynamicsModel,
    model_state: ModelState,
    policy: Policy,
    start_obs: jax.Array,
    key: jax.Array,
    length: jax.Array | int,
    max_length: int,
    terminated: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    penalty: Penalty | None = None,
) -> tuple[Batch, jax.Array, dict[str, jax.Array]]:
    """Rollouts of `length` (≤ `max_length`) steps from `start_obs` (B, S).

    `terminated(next_obs, terminal_prob, key)` decides where a rollout ends (a known rule, or a
    draw from the learned classifier: `termination_test`). Returns `max_length · B`
    transitions, step-major, with the imagined reward minus `penalty`, masks 1 − terminal and
    dones at terminations and at the last step; which rows are real steps of a rollout
    (`valid`: not past the length, not after a termination, not diverged to a non-finite
    prediction); and the mean rollout length, reward and penalty."""

    def step(carry, t):
        obs, alive, key = carry
        key, key_act, key_model, key_end = jax.random.split(key, 4)
        actions = policy(obs, key_act)
        next_obs, reward, terminal_prob, prediction = model.sample(
            model_state, obs, actions, key_model
        )
        terminal = terminated(next_obs, terminal_prob, key_end)
        cost = jnp.zeros_like(reward) if penalty is None else penalty(prediction)
        # a diverged prediction ends its rollout and is not kept
        finite = jnp.isfinite(next_obs).all(axis=-1) & jnp.isfinite(reward - cost)
        valid = alive & finite
        row = Batch(
            observations=obs,
            actions=actions,
            rewards=jnp.where(valid, reward - cost, 0.0),
            next_observations=jnp.where(valid[:, None], next_obs, obs),
            masks=1.0 - terminal.astype(jnp.float32),
            dones=(terminal | (t == length - 1)).astype(jnp.float32),
        )
        carry = (row.next_observations, valid & ~terminal, key)
        return carry, (row, valid, jnp.where(valid, cost, 0.0))

    def skip(carry, t):
        """A step past the current length: nothing computed, nothing kept (the length is the
        same for every seed, so this is a real branch under a seed vmap)."""
        obs, alive, key = carry
        actions = jax.eval_shape(policy, obs, key)
        zeros = jnp.zeros(obs.shape[:1])
        row = Batch(
            observations=obs,
            actions=jnp.zeros(actions.shape, actions.dtype),
            rewards=zeros,
            next_observations=obs,
            masks=zeros,
            dones=zeros,
        )
        return carry, (row, jnp.zeros_like(alive), zeros)

    def maybe_step(carry, t):
        return jax.lax.cond(t < length, step, skip, carry, t)

    alive = jnp.ones(start_obs.shape[:1], bool)
    start = (start_obs, alive, key)
    _, (rows, valid, cost) = jax.lax.scan(maybe_step, start, jnp.arange(max_length))
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    rows, valid = jax.tree.map(flat, rows), valid.reshape(-1)
    count = jnp.maximum(valid.sum(), 1)
    metrics = {
        "length": valid.sum() / start_obs.shape[0],
        "reward": (rows.rewards * valid).sum() / count,
        "penalty": (cost.reshape(-1) * valid).sum() / count,
    }
    return rows, valid, metrics


def add_valid(buffer: ReplayBuffer, rows: Batch, valid: jax.Array) -> ReplayBuffer:
    """The buffer with the `valid` rows of `rows` added in order (the rest dropped)."""
    order = jnp.argsort(~valid, stable=True)  # valid rows first, in their order
    return replay.add(buffer, jax.tree.map(lambda x: x[order], rows), valid.sum())


def termination_test(
    rule: TerminationFn | None, to_env_units: Callable[[jax.Array], jax.Array]
) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """`terminated(next_obs, terminal_prob, key)`: the environment's known `rule` on
    observations mapped back to the environment's units, or a draw from the learned
    classifier's probability. A draw, not a threshold: terminations are rare in the data, so a
    calibrated classifier's probability stays below one half almost everywhere, and a threshold
    would imagine no terminations at all."""
    if rule is None:
        return lambda next_obs, prob, key: jax.random.uniform(key, prob.shape) < prob
    return lambda next_obs, prob, key: rule(to_env_units(next_obs))
