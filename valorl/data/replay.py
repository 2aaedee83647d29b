"""Replay buffers on the device, and mixing them with offline data.

A `ReplayBuffer` is a pytree: a `Batch` of `capacity` rows, the row the next transition goes to
and how many rows are filled. `init`, `add` and `sample` are pure functions, so a buffer lives
inside jitted code next to the agent's state, and `jax.vmap` over a leading seed axis gives
every seed its own buffer (each with its own position and size) in one computation.

`mixed_sample` draws a batch with an exact share of rows from offline data and the rest from
the buffer: RLPD's symmetric sampling (Ball et al. 2023, "Efficient Online Reinforcement
Learning with Offline Data", Sec. 4.1) is a share of one half. `OfflineMix` says what that share
is over an online phase: constant, annealed linearly to zero, or "uniform": the share the
offline data would have if it had been loaded into the replay buffer, as IQL's and AWAC's
fine-tuning code does (Kostrikov et al. 2022; Nair et al. 2020).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp

from valorl.data import nstep
from valorl.data.dataset import Batch, sample_batch
from valorl.errors import ValorlError


@flax.struct.dataclass
class ReplayBuffer:
    """`capacity` rows of transitions in agent units, filled in order and then overwritten
    oldest first."""

    data: Batch
    """The store: every field has a leading axis of `capacity` rows."""
    position: jax.Array
    """Row the next transition is written to (int32)."""
    size: jax.Array
    """Rows that hold transitions, at most `capacity` (int32)."""

    @property
    def capacity(self) -> int:
        """Rows of an unbatched buffer (under a seed axis, the last axis of `size`'s shape
        does not apply: use `data.rewards.shape`)."""
        return int(self.data.rewards.shape[-1])


def init(
    capacity: int,
    obs_shape: tuple[int, ...],
    action_dim: int,
    *,
    returns_to_go: bool = False,
    discrete: bool = False,
    obs_dtype: jnp.dtype = jnp.float32,
) -> ReplayBuffer:
    """An empty buffer of `capacity` rows (zeros, float32; discrete actions as int32;
    observations in `obs_dtype`: uint8 keeps image frames compact).

    `returns_to_go=True` also stores each transition's discounted Monte-Carlo return, for
    agents that need it (Cal-QL); it needs a `Batch` with a `returns_to_go` field.
    """
    if capacity < 1:
        raise ValorlError(f"--buffer-size must be at least 1, got {capacity}")
    scalar = jnp.zeros((capacity,), jnp.float32)
    fields = dict(
        observations=jnp.zeros((capacity, *obs_shape), obs_dtype),
        actions=(
            jnp.zeros((capacity,), jnp.int32)
            if discrete
            else jnp.zeros((capacity, action_dim), jnp.float32)
        ),
        rewards=scalar,
        next_observations=jnp.zeros((capacity, *obs_shape), obs_dtype),
        masks=scalar,
        dones=scalar,
    )
    if returns_to_go:
        if "returns_to_go" not in Batch.__dataclass_fields__:
            raise ValorlError(
                "this agent needs Monte-Carlo returns-to-go in its replay buffer, but "
                "valorl.data.dataset.Batch has no returns_to_go field"
            )
        fields["returns_to_go"] = scalar
    return ReplayBuffer(
        data=Batch(**fields),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def add(
    buffer: ReplayBuffer, transitions: Batch, count: int | jax.Array | None = None
) -> ReplayBuffer:
    """The buffer with `transitions` (rows of a Batch) written after the last one added,
    wrapping around to overwrite the oldest rows once full.

    With `count`, only the first `count` rows are added and the rest is padding: a fixed-size
    array carries a varying number of transitions without recompiling. Adding more rows than
    the capacity keeps the last `capacity` of them, as adding them one at a time would.
    """
    capacity = buffer.data.rewards.shape[0]
    n = transitions.rewards.shape[0]
    count = jnp.asarray(n if count is None else count, jnp.int32)
    i = jnp.arange(n, dtype=jnp.int32)
    # Row i lands at (position + i) mod capacity; rows beyond `count`, and rows that a later
    # row of the same call overwrites, are dropped (index `capacity` is out of bounds).
    kept = (i < count) & (i >= count - capacity)
    rows = jnp.where(kept, (buffer.position + i) % capacity, capacity)
    data = jax.tree.map(
        lambda store, new: store.at[rows].set(new.astype(store.dtype), mode="drop"),
        buffer.data,
        transitions,
    )
    return ReplayBuffer(
        data=data,
        position=(buffer.position + count) % capacity,
        size=jnp.minimum(buffer.size + count, capacity),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int, num_batches: int = 1) -> Batch:
    """Rows drawn uniformly with replacement from the filled part of the buffer; shape
    `(batch_size, ...)`, or `(num_batches, batch_size, ...)`. An empty buffer gives its
    (zero) first row: callers sample only once something has been added."""
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    idx = jax.random.randint(key, shape, 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda x: x[idx], buffer.data)


def sample_recent(
    buffer: ReplayBuffer,
    key: jax.Array,
    batch_size: int,
    window: jax.Array | int,
    num_batches: int = 1,
) -> Batch:
    """Rows drawn uniformly with replacement from the newest `window` rows added (all filled
    rows when there are fewer): the buffer as a first-in-first-out pool of `window` rows, which
    may change between calls without reallocating (MBPO's model pool, resized as h grows)."""
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    count = jnp.maximum(jnp.minimum(buffer.size, window), 1)
    back = jax.random.randint(key, shape, 0, count)
    idx = (buffer.position - 1 - back) % buffer.data.rewards.shape[0]
    return jax.tree.map(lambda x: x[idx], buffer.data)


def sample_n_step(
    buffer: ReplayBuffer,
    key: jax.Array,
    batch_size: int,
    n: int,
    discount: float,
    num_batches: int = 1,
    stride: int = 1,
) -> Batch:
    """n-step transitions (`valorl.data.nstep`) starting at rows drawn as `sample` draws them.
    A window continues into the rows written after its first (in ring order), never past the
    newest row: the window's step k is the row k·`stride` rows on, and exists when at least
    that many rows were written after the first. `stride` is the number of environments that
    add one row each per step, in the same order every step (1: one environment per buffer;
    E for E environments stepped together, as the compiled environment phase adds them)."""
    capacity = buffer.data.rewards.shape[0]
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    start = jax.random.randint(key, shape, 0, jnp.maximum(buffer.size, 1))
    written_after = jnp.mod(buffer.position - 1 - start, capacity)
    offsets = nstep.window_rows(jnp.zeros_like(start), n) * stride
    available = offsets <= written_after[..., None]
    steps = jax.tree.map(lambda x: x[(start[..., None] + offsets) % capacity], buffer.data)
    return nstep.batched_transitions(steps, available, discount, num_batches)


def mixed_sample(
    offline: Batch,
    buffer: ReplayBuffer,
    key: jax.Array,
    batch_size: int,
    offline_fraction: float | jax.Array,
    num_batches: int = 1,
    n_step: int = 1,
    discount: float = 1.0,
    stride: int = 1,
) -> Batch:
    """A batch whose first round(f·B) rows come from `offline` and the other B − round(f·B)
    from the buffer (each uniformly with replacement), for every one of `num_batches`
    batches. f may be traced (a schedule), so the split is a mask, not a shape. With
    `n_step` > 1 both parts are n-step transitions at `discount` (`valorl.data.nstep`), the
    buffer's with its environments' `stride` (see `sample_n_step`)."""
    key_offline, key_online = jax.random.split(key)
    if n_step == 1:
        from_offline = sample_batch(offline, key_offline, batch_size, num_batches)
        from_buffer = sample(buffer, key_online, batch_size, num_batches)
    else:
        from_offline = nstep.sample_n_step(
            offline, key_offline, batch_size, n_step, discount, num_batches
        )
        from_buffer = sample_n_step(
            buffer, key_online, batch_size, n_step, discount, num_batches, stride
        )
    count = jnp.round(jnp.asarray(offline_fraction, jnp.float32) * batch_size)
    take = jnp.arange(batch_size) < count  # (B,), broadcast over batches and features

    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        rows_axis = 1 if num_batches > 1 else 0
        mask = take.reshape((1,) * rows_axis + (batch_size,) + (1,) * (a.ndim - rows_axis - 1))
        return jnp.where(mask, a, b)

    return jax.tree.map(pick, from_offline, from_buffer)


OfflineRatio = float | Literal["uniform"]


@dataclasses.dataclass(frozen=True)
class OfflineMix:
    """The share f of each batch drawn from offline data during an online phase.

    ratio "uniform": f = N / (N + n) with N offline transitions and n in the buffer, which is
    sampling uniformly from their union (the offline data loaded into the replay buffer, as
    in IQL's fine-tuning); a number: f itself, held (`schedule="constant"`, RLPD's 0.5) or
    decayed linearly to 0 at the end of the online phase (`schedule="linear"`).
    """

    ratio: OfflineRatio = 0.5
    schedule: Literal["constant", "linear"] = "constant"
    online_steps: int = 1
    """Length of the online phase in environment steps (for the linear schedule)."""
    offline_size: int = 0
    """Offline transitions N (for the uniform ratio)."""

    def __post_init__(self) -> None:
        if self.ratio == "uniform":
            if self.schedule != "constant":
                raise ValorlError("--offline-ratio uniform cannot be annealed; use a number")
        elif not isinstance(self.ratio, int | float) or not 0.0 <= self.ratio <= 1.0:
            raise ValorlError(
                f"--offline-ratio must be a number in [0, 1] or 'uniform', got {self.ratio!r}"
            )
        if self.schedule not in ("constant", "linear"):
            raise ValorlError(
                f"--offline-ratio-schedule must be constant or linear, got {self.schedule!r}"
            )

    def fraction(self, step: int | jax.Array, buffer_size: int | jax.Array) -> jax.Array:
        """f after `step` environment steps of the online phase with `buffer_size` rows filled."""
        if self.ratio == "uniform":
            offline = jnp.float32(self.offline_size)
            return offline / (offline + jnp.asarray(buffer_size, jnp.float32))
        if self.schedule == "linear":
            left = 1.0 - jnp.asarray(step, jnp.float32) / max(self.online_steps, 1)
            return jnp.float32(self.ratio) * jnp.clip(left, 0.0, 1.0)
        return jnp.float32(self.ratio)
