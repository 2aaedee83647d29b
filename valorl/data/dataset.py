"""Logged transitions: the validated host-side `Dataset` and the device-side `Batch`.

A `Dataset` holds one row per transition, in the D4RL/Minari vocabulary: `terminals` mark
true environment terminations (no bootstrapping past them) and `timeouts` mark truncations
(the episode was cut, the value of the next state still counts). From those come the two
fields every agent uses: `masks = 1 - terminals` for bootstrapping and `dones = terminals |
timeouts` for episode boundaries.

Actions are continuous (float32 rows of `action_dim` numbers) or discrete: with `num_actions`
set, one integer per row in [0, num_actions) (Gymnasium's `Discrete` space); `action_dim` is
then 0. Image-like observations (bool or uint8, such as MinAtar's 10x10xC frames) stay uint8,
a quarter of float32's memory; networks convert them at their input.

Datasets are validated when built from host arrays: every error names the field, the first
bad index and what was expected, because a NaN reward found after an hour of training is an
hour lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.errors import ValorlError

FLOAT_FIELDS = ("observations", "actions", "rewards", "next_observations")
FLAG_FIELDS = ("terminals", "timeouts")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about where a dataset came from and how to score policies on it."""

    name: str = ""
    """Short name (a Minari id, or a file name)."""
    source: str = ""
    """Where it was loaded from."""
    env_id: str | None = None
    """Gymnasium id of the environment the data came from, if known."""
    env_spec_json: str | None = None
    """The full Gymnasium EnvSpec as JSON (keeps constructor kwargs), if known."""
    ref_min_score: float | None = None
    """Return of a random policy: normalised score 0."""
    ref_max_score: float | None = None
    """Return of the best reference policy: normalised score 100."""

    def normalized_score(self, returns: Any) -> np.ndarray | None:
        """D4RL-style score: 0 = random, 100 = reference best; None if references are unknown."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        span = self.ref_max_score - self.ref_min_score
        return 100.0 * (np.asarray(returns, np.float64) - self.ref_min_score) / span


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Dataset:
    """Transitions `(s, a, r, s', terminal, timeout)`, one row each, validated on construction.

    Validation runs whenever the fields are host arrays (numpy or lists), which is how every
    source builds a dataset; device arrays and tracers (inside `jax.tree.map` or `jit`) are
    trusted. Floats are stored as float32 and flags as bool.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    info: DatasetInfo = dataclasses.field(default_factory=DatasetInfo, metadata=dict(static=True))
    num_actions: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    """Size of a discrete action space (actions are integers in [0, num_actions)); None for
    continuous actions."""

    def __post_init__(self) -> None:
        # jax rebuilds the pytree with device arrays, tracers and abstract values: skip those.
        if not all(
            isinstance(getattr(self, f), np.ndarray | list | tuple)
            for f in FLOAT_FIELDS + FLAG_FIELDS
        ):
            return
        for name, array in _validated(self).items():
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def masks(self) -> np.ndarray:
        """1.0 where the target may bootstrap from the next state (not a true termination)."""
        return 1.0 - self.terminals.astype(np.float32)

    @property
    def dones(self) -> np.ndarray:
        """True at the last transition of an episode (terminated or truncated)."""
        return self.terminals | self.timeouts

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observations.shape[1:])

    @property
    def discrete(self) -> bool:
        return self.num_actions is not None

    @property
    def action_dim(self) -> int:
        """Numbers per continuous action; 0 for discrete actions (see `num_actions`)."""
        return 0 if self.discrete else int(self.actions.shape[1])

    def episode_slices(self) -> list[slice]:
        """Row ranges of each episode; a final episode without a done flag counts too."""
        ends = np.flatnonzero(self.dones) + 1
        if len(ends) == 0 or ends[-1] != len(self):
            ends = np.append(ends, len(self))
        starts = np.concatenate([[0], ends[:-1]])
        return [slice(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, in dataset order."""
        return np.array([self.rewards[s].sum(dtype=np.float64) for s in self.episode_slices()])

    def returns_to_go(self, discount: float) -> np.ndarray:
        """Discounted Monte-Carlo return from each transition to the end of its episode.

        G_t = r_t + γ·G_{t+1}. An episode that ends in a termination stops there; one that was
        truncated (or runs off the end of the data) continues with a geometric tail at its mean
        reward, γ·r̄ / (1 − γ), as an estimate of the return it would have gone on to collect
        (with γ = 1 that tail is unbounded, so only the observed rewards count).
        """
        out = np.empty(len(self), np.float64)
        for sl in self.episode_slices():
            rewards = self.rewards[sl].astype(np.float64)
            cut = not self.terminals[sl.stop - 1] and discount < 1.0
            tail = rewards.mean() / (1.0 - discount) if cut else 0.0
            g = tail
            for t in range(len(rewards) - 1, -1, -1):
                g = rewards[t] + discount * g
                out[sl.start + t] = g
        return out

    def split_rows(self) -> np.ndarray:
        """Rows inside an episode whose next observation is not the following row's observation
        (data that skipped steps, or corrupted observations): `episodes` ends a piece there."""
        if len(self) < 2:
            return np.zeros(0, np.int64)
        changed = self.next_observations[:-1] != self.observations[1:]
        changed = changed.reshape(len(self) - 1, -1).any(axis=1)
        return np.flatnonzero(changed & ~self.dones[:-1]).astype(np.int64)

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """Episodes in Minari's layout: `observations` has one more row than `actions`.

        An episode is also cut where `next_observations[t] != observations[t+1]` (data that
        skipped steps), so the rebuilt observation sequence is always exact; such a cut is
        marked as a truncation.
        """
        for sl in self.episode_slices():
            obs, next_obs = self.observations[sl], self.next_observations[sl]
            changed = next_obs[:-1] != obs[1:]
            gaps = np.flatnonzero(changed.any(axis=tuple(range(1, changed.ndim)))) + 1
            bounds = [0, *gaps.tolist(), len(obs)]
            for a, b in itertools.pairwise(bounds):
                rows = slice(sl.start + a, sl.start + b)
                truncations = self.timeouts[rows].copy()
                truncations[-1] |= b < len(obs)
                yield dict(
                    observations=np.concatenate(
                        [self.observations[rows], self.next_observations[rows][-1:]]
                    ),
                    actions=self.actions[rows],
                    rewards=self.rewards[rows],
                    terminations=self.terminals[rows],
                    truncations=truncations,
                )

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[dict[str, Any]],
        info: DatasetInfo | None = None,
        num_actions: int | None = None,
    ) -> Dataset:
        """Build from Minari-layout episodes (observations of length T+1, the rest length T);
        `num_actions` for a discrete action space."""
        if not episodes:
            raise ValorlError("no episodes: a dataset needs at least one transition")
        parts: dict[str, list[np.ndarray]] = {f: [] for f in FLOAT_FIELDS + FLAG_FIELDS}
        for i, ep in enumerate(episodes):
            obs = np.asarray(ep["observations"])
            steps = len(ep["rewards"])
            if len(obs) != steps + 1:
                raise ValorlError(
                    f"episode {i}: observations has {len(obs)} rows, expected "
                    f"{steps + 1} (one more than rewards)"
                )
            parts["observations"].append(obs[:-1])
            parts["next_observations"].append(obs[1:])
            parts["actions"].append(np.asarray(ep["actions"]))
            parts["rewards"].append(np.asarray(ep["rewards"]))
            parts["terminals"].append(np.asarray(ep["terminations"]))
            parts["timeouts"].append(np.asarray(ep["truncations"]))
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(**arrays, info=info or DatasetInfo(), num_actions=num_actions)

    def split_episodes(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
        """(kept, held out): a random `fraction` of whole episodes held out (at least one when
        the fraction is positive, and never all), for measuring generalisation such as the TD
        error on unseen transitions. The split depends only on the data and `seed`."""
        if not 0.0 <= fraction < 1.0:
            raise ValorlError(f"the held-out fraction must be in [0, 1), got {fraction}")
        if fraction == 0.0:
            return self, None
        slices = self.episode_slices()
        if len(slices) < 2:
            raise ValorlError("holding out episodes needs at least two episodes in the dataset")
        count = min(max(1, round(fraction * len(slices))), len(slices) - 1)
        chosen = np.random.default_rng(seed).choice(len(slices), count, replace=False)
        held = np.zeros(len(self), bool)
        for i in chosen:
            held[slices[i]] = True
        return self._rows(~held), self._rows(held)

    def first_episodes(self, count: int) -> Dataset:
        """The dataset's first `count` episodes (all of them if it has fewer)."""
        slices = self.episode_slices()
        if count >= len(slices):
            return self
        return self._rows(np.arange(slices[count - 1].stop))

    def _rows(self, rows: np.ndarray) -> Dataset:
        fields = {f: getattr(self, f)[rows] for f in FLOAT_FIELDS + FLAG_FIELDS}
        return Dataset(**fields, info=self.info, num_actions=self.num_actions)

    def fingerprint(self) -> str:
        """A short content hash: two datasets with equal fingerprints hold the same data."""
        digest = hashlib.blake2b(digest_size=12)
        for name in FLOAT_FIELDS + FLAG_FIELDS:
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
        if self.discrete:  # continuous datasets keep the fingerprints they always had
            digest.update(f"num_actions={self.num_actions}".encode())
        return digest.hexdigest()

    def to_batch(self, discount: float | None = None, next_actions: bool = False) -> Batch:
        """All transitions as a device-resident `Batch`, ready to be sampled inside a scan;
        with a `discount`, each row also carries its Monte-Carlo `returns_to_go(discount)`
        (for agents that need them, such as Cal-QL); with `next_actions`, the action taken at
        its next observation (ReBRAC), the row's own where its episode ends."""
        returns = None if discount is None else self.returns_to_go(discount)
        following = None
        if next_actions:
            following = np.concatenate([self.actions[1:], self.actions[-1:]])
            following = np.where(
                self.dones.reshape(-1, *[1] * (self.actions.ndim - 1)).astype(bool),
                self.actions,
                following,
            )
        return Batch(
            observations=jnp.asarray(self.observations),
            actions=jnp.asarray(self.actions),
            rewards=jnp.asarray(self.rewards),
            next_observations=jnp.asarray(self.next_observations),
            masks=jnp.asarray(self.masks),
            dones=jnp.asarray(self.dones, jnp.float32),
            returns_to_go=None if returns is None else jnp.asarray(returns, jnp.float32),
            next_actions=None if following is None else jnp.asarray(following),
        )

    def check_env(self, observation_space: Any, action_space: Any, env_name: str) -> None:
        """Check shapes and action bounds against a Gymnasium environment's spaces."""
        expected = tuple(observation_space.shape)
        if self.obs_shape != expected:
            raise ValorlError(
                f"observations have shape {self.obs_shape} per step but {env_name} "
                f"expects {expected}"
            )
        if self.discrete or hasattr(action_space, "n"):
            n = getattr(action_space, "n", None)
            if n is None or self.num_actions != int(n):
                mine = f"Discrete({self.num_actions})" if self.discrete else "continuous"
                theirs = f"Discrete({n})" if n is not None else "continuous"
                raise ValorlError(f"the dataset has {mine} actions but {env_name} has {theirs}")
            return
        act_shape = tuple(action_space.shape)
        if (self.action_dim,) != act_shape:
            raise ValorlError(
                f"actions have shape ({self.action_dim},) per step but {env_name} "
                f"expects {act_shape}"
            )
        low, high = np.asarray(action_space.low), np.asarray(action_space.high)
        tol = 1e-4 * np.maximum(1.0, np.abs(high - low))
        outside = (self.actions < low - tol) | (self.actions > high + tol)
        if outside.any():
            row, col = np.argwhere(outside)[0]
            raise ValorlError(
                f"actions[{row}, {col}] = {self.actions[row, col]:.6g} is outside "
                f"the action space [{low[col]:.6g}, {high[col]:.6g}] of {env_name}"
            )


@flax.struct.dataclass
class Batch:
    """Transitions as agents see them (device arrays, leading axis = rows)."""

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    masks: jax.Array
    """1 - terminal: multiply the bootstrapped next value by this."""
    dones: jax.Array
    """1 at episode ends (terminal or truncated)."""
    returns_to_go: jax.Array | None = None
    """Discounted Monte-Carlo return from each row to the end of its episode, for agents that
    set `needs_returns_to_go` (Cal-QL); None (an empty subtree) otherwise."""
    next_actions: jax.Array | None = None
    """The dataset's action at the next observation (the row's own action where its episode
    ends), for agents that set `needs_next_actions` (ReBRAC); None (an empty subtree)
    otherwise."""
    valid: jax.Array | None = None
    """Action-chunk batches only (`valorl.data.chunks`), shape (rows, h): whether step k of a
    row's chunk lies in the episode of its first step; None (an empty subtree) otherwise."""
    goals: jax.Array | None = None
    """Goal-conditioned batches only (`valorl.data.goals`), shape (rows, *goal_shape): the goal
    each row's reward and mask refer to; None (an empty subtree) otherwise."""
    actor_goals: jax.Array | None = None
    """Goal-conditioned batches with the actor's own goals (`GoalSampling.actor_goals`), shape
    (rows, *goal_shape); None otherwise."""
    actor_observations: jax.Array | None = None
    """What the actor learns from when it has goals of its own: [s, actor goal]; None (the
    actor reads `observations`) otherwise."""

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


def sample_batch(data: Batch, key: jax.Array, batch_size: int, num_batches: int = 1) -> Batch:
    """Rows drawn uniformly with replacement; shape `(batch_size, ...)`, or
    `(num_batches, batch_size, ...)` when an agent's update consumes several batches."""
    shape = (batch_size,) if num_batches == 1 else (num_batches, batch_size)
    idx = jax.random.randint(key, shape, 0, data.rewards.shape[0])
    return jax.tree.map(lambda x: x[idx], data)


def _validated(ds: Dataset) -> dict[str, np.ndarray]:
    """Converted arrays after checking shapes, dtypes and values; raises ValorlError."""
    out: dict[str, np.ndarray] = {}
    for name in FLOAT_FIELDS + FLAG_FIELDS:
        array = np.asarray(getattr(ds, name))
        if array.dtype.kind not in "biuf":
            raise ValorlError(f"{name} has dtype {array.dtype}; expected numbers")
        out[name] = array
    if out["rewards"].ndim != 1:
        raise ValorlError(f"rewards has shape {out['rewards'].shape}; expected (N,)")
    n = len(out["rewards"])
    if n == 0:
        raise ValorlError("the dataset is empty: it needs at least one transition")
    for name, array in out.items():
        if array.ndim == 0 or len(array) != n:
            got = "a scalar" if array.ndim == 0 else f"{len(array)} rows"
            raise ValorlError(
                f"{name} has {got} but rewards has {n}; all fields need one row per transition"
            )
    if ds.num_actions is not None:
        out["actions"] = _discrete_actions(out["actions"], ds.num_actions)
    expected_ndim = dict(rewards=1, terminals=1, timeouts=1, actions=1 if ds.num_actions else 2)
    for name, ndim in expected_ndim.items():
        if out[name].ndim != ndim:
            shape = "(N,)" if ndim == 1 else "(N, action_dim)"
            raise ValorlError(f"{name} has shape {out[name].shape}; expected {shape}")
    if out["observations"].shape != out["next_observations"].shape:
        raise ValorlError(
            f"next_observations has shape {out['next_observations'].shape} but "
            f"observations has {out['observations'].shape}"
        )
    if out["observations"].ndim < 2:
        raise ValorlError(
            f"observations has shape {out['observations'].shape}; expected (N, *observation_shape)"
        )
    compact = {out["observations"].dtype.kind, out["next_observations"].dtype.kind} <= {"b", "u"}
    if compact and out["observations"].max(initial=0) <= 255:
        for name in ("observations", "next_observations"):
            out[name] = out[name].astype(np.uint8)
    for name in FLOAT_FIELDS:
        if out[name].dtype == np.uint8 or (name == "actions" and ds.num_actions is not None):
            continue
        with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
            array = out[name].astype(np.float32)
        bad = ~np.isfinite(array)
        if bad.any():
            index = np.unravel_index(np.argmax(bad), bad.shape)
            where = ", ".join(map(str, index)) if array.ndim > 1 else str(index[0])
            raise ValorlError(f"{name}[{where}] is {array[index]}: all values must be finite")
        out[name] = array
    for name in FLAG_FIELDS:
        array = out[name]
        bad = (array != 0) & (array != 1)
        if bad.any():
            index = int(np.argmax(bad))
            raise ValorlError(f"{name}[{index}] is {array[index]}: flags must be 0/1 or bool")
        out[name] = array.astype(bool)
    return out


def _discrete_actions(actions: np.ndarray, num_actions: int) -> np.ndarray:
    """Actions of a Discrete(num_actions) space as int32 of shape (N,), or a one-line error."""
    if num_actions < 1:
        raise ValorlError(f"a discrete action space needs at least one action, got {num_actions}")
    if actions.ndim == 2 and actions.shape[1] == 1:
        actions = actions[:, 0]
    if actions.ndim != 1:
        raise ValorlError(
            f"actions has shape {actions.shape}; a Discrete({num_actions}) space expects (N,)"
        )
    if actions.dtype.kind not in "iu":
        raise ValorlError(
            f"actions are {actions.dtype} but the action space is Discrete({num_actions}): "
            "discrete actions must be integers"
        )
    bad = (actions < 0) | (actions >= num_actions)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValorlError(
            f"actions[{index}] = {actions[index]} is outside the action space "
            f"Discrete({num_actions}) (0 to {num_actions - 1})"
        )
    return actions.astype(np.int32)
