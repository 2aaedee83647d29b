"""The validated host-side Dataset and the device-side Batch."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_dataset

from valorl.data.dataset import Batch, Dataset, DatasetInfo, sample_batch
from valorl.errors import ValorlError

PENDULUM_OBS = gym.spaces.Box(np.array([-1, -1, -8]), np.array([1, 1, 8]), dtype=np.float32)
PENDULUM_ACT = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def _fields(**overrides) -> dict:
    """A well-formed 4-row dataset as keyword arguments: two chained rows ending in a
    termination, one row ending in a timeout, one final row with no done flag.
    Row i has observation [i, 10 i] and reward i + 1, so rows can be recognised after sampling."""
    obs = np.array([[0, 0], [1, 10], [2, 20], [3, 30]], np.float64)
    fields = dict(
        observations=obs,
        actions=np.array([[0.5], [-0.5], [1.0], [-1.0]]),
        rewards=np.array([1.0, 2.0, 3.0, 4.0]),
        next_observations=obs + 1,
        terminals=np.array([0, 1, 0, 0]),
        timeouts=np.array([0, 0, 1, 0]),
    )
    return fields | overrides


def _with(name: str, index, value) -> dict:
    """_fields() with one element of one field replaced (as float64 so it can hold nan/inf)."""
    array = _fields()[name].astype(np.float64)
    array[index] = value
    return _fields(**{name: array})


def _raises(fields: dict) -> str:
    with pytest.raises(ValorlError) as exc:
        Dataset(**fields)
    return str(exc.value)


def test_masks_and_dones():
    """masks = 1 - terminals (bootstrapping stops only at true terminations) and
    dones = terminals | timeouts (episode boundaries include truncations)."""
    ds = Dataset(**_fields())
    np.testing.assert_array_equal(ds.masks, [1.0, 0.0, 1.0, 1.0])
    assert ds.masks.dtype == np.float32
    np.testing.assert_array_equal(ds.dones, [False, True, True, False])
    assert len(ds) == 4
    assert ds.obs_shape == (2,)
    assert ds.action_dim == 1


def test_episode_slices_and_returns():
    """Episodes end after each done flag, and a final episode without one still counts."""
    ds = Dataset(**_fields())
    assert ds.episode_slices() == [slice(0, 2), slice(2, 3), slice(3, 4)]
    # rewards [1, 2 | 3 | 4] -> returns [3, 3, 4]
    np.testing.assert_array_equal(ds.episode_returns(), [3.0, 3.0, 4.0])


def test_episode_slices_without_any_done_flag():
    """Data with no done flag at all is one episode covering every row."""
    ds = Dataset(**_fields(terminals=np.zeros(4), timeouts=np.zeros(4)))
    assert ds.episode_slices() == [slice(0, 4)]
    np.testing.assert_array_equal(ds.episode_returns(), [10.0])  # 1 + 2 + 3 + 4


def test_dtype_conversion():
    """Floats of any width become float32 and 0/1 integer flags become bool."""
    ds = Dataset(**_fields())
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert getattr(ds, name).dtype == np.float32, name
    for name in ("terminals", "timeouts"):
        assert getattr(ds, name).dtype == np.bool_, name
    np.testing.assert_array_equal(ds.terminals, [False, True, False, False])


def test_lists_are_accepted_and_converted():
    """Nested Python lists are validated and converted like arrays."""
    fields = {k: v.tolist() for k, v in _fields().items()}
    ds = Dataset(**fields)
    assert isinstance(ds.rewards, np.ndarray)
    assert ds.fingerprint() == Dataset(**_fields()).fingerprint()


def test_from_episodes_round_trip():
    """from_episodes(ds.episodes()) rebuilds the same data, and its episodes are the same:
    this is the path every Minari write and read takes."""
    ds = synthetic_dataset(n=120, episode_len=50)
    episodes = list(ds.episodes())
    assert [len(ep["rewards"]) for ep in episodes] == [50, 50, 20]
    for ep in episodes:
        assert len(ep["observations"]) == len(ep["actions"]) + 1
    rebuilt = Dataset.from_episodes(episodes, ds.info)
    assert rebuilt.fingerprint() == ds.fingerprint()
    for name in ("observations", "actions", "rewards", "next_observations"):
        np.testing.assert_array_equal(getattr(rebuilt, name), getattr(ds, name))
    for before, after in zip(episodes, rebuilt.episodes(), strict=True):
        assert before.keys() == after.keys()
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
            assert before[key].dtype == after[key].dtype


def test_episodes_layout_by_hand():
    """Minari layout by hand: observations gain the episode's last next_observation, and the
    termination and truncation flags carry over row for row."""
    next_obs = np.array([[1, 10], [9, 9], [3, 30], [7, 7]])
    ds = Dataset(**_fields(next_observations=next_obs, timeouts=np.array([0, 0, 0, 1])))
    first, second = ds.episodes()
    np.testing.assert_array_equal(first["observations"], [[0, 0], [1, 10], [9, 9]])
    np.testing.assert_array_equal(first["actions"], [[0.5], [-0.5]])
    np.testing.assert_array_equal(first["rewards"], [1, 2])
    np.testing.assert_array_equal(first["terminations"], [False, True])
    np.testing.assert_array_equal(first["truncations"], [False, False])
    np.testing.assert_array_equal(second["observations"], [[2, 20], [3, 30], [7, 7]])
    np.testing.assert_array_equal(second["terminations"], [False, False])
    np.testing.assert_array_equal(second["truncations"], [False, True])


def test_episodes_cut_where_observations_do_not_chain():
    """A row whose next observation is not the following row's observation (skipped steps)
    ends an episode, marked as a truncation, so the rebuilt observation sequence is exact."""
    obs = np.arange(10.0).reshape(5, 2)
    next_obs = obs + 2  # chains: next_obs[t] == obs[t + 1] ...
    next_obs[1] = [-1, -1]  # ... except after row 1
    ds = Dataset(
        observations=obs,
        actions=np.zeros((5, 1)),
        rewards=np.arange(5.0),
        next_observations=next_obs,
        terminals=np.zeros(5),
        timeouts=np.zeros(5),
    )
    first, second = ds.episodes()
    np.testing.assert_array_equal(first["observations"], [[0, 1], [2, 3], [-1, -1]])
    np.testing.assert_array_equal(first["truncations"], [False, True])
    np.testing.assert_array_equal(first["terminations"], [False, False])
    np.testing.assert_array_equal(second["observations"], [[4, 5], [6, 7], [8, 9], [10, 11]])
    np.testing.assert_array_equal(second["rewards"], [2, 3, 4])
    np.testing.assert_array_equal(second["truncations"], [False, False, False])
    rebuilt = Dataset.from_episodes([first, second])
    np.testing.assert_array_equal(rebuilt.next_observations, ds.next_observations)
    np.testing.assert_array_equal(rebuilt.timeouts, [False, True, False, False, False])


def test_episodes_with_single_step_episodes():
    """One-step episodes (a termination right after a reset) convert to Minari layout too.

    Fails before the fix to `Dataset.episodes`: reshape(0, -1) of the empty gap mask raises."""
    chained = np.array([[1, 10], [2, 20], [3, 30], [4, 40]])
    ds = Dataset(
        **_fields(next_observations=chained, terminals=np.array([1, 0, 1, 0]), timeouts=np.zeros(4))
    )
    episodes = list(ds.episodes())
    assert [len(ep["rewards"]) for ep in episodes] == [1, 2, 1]
    np.testing.assert_array_equal(episodes[0]["observations"], [[0, 0], [1, 10]])
    np.testing.assert_array_equal(episodes[2]["observations"], [[3, 30], [4, 40]])
    assert Dataset.from_episodes(episodes).fingerprint() == ds.fingerprint()


def test_from_episodes_errors():
    """An empty episode list and an observation count that is not T + 1 are user errors."""
    with pytest.raises(ValorlError) as exc:
        Dataset.from_episodes([])
    assert str(exc.value) == "no episodes: a dataset needs at least one transition"
    episode = dict(
        observations=np.zeros((3, 2)),
        actions=np.zeros((3, 1)),
        rewards=np.zeros(3),
        terminations=np.zeros(3, bool),
        truncations=np.zeros(3, bool),
    )
    with pytest.raises(ValorlError) as exc:
        Dataset.from_episodes([episode])
    assert (
        str(exc.value) == "episode 0: observations has 3 rows, expected 4 (one more than rewards)"
    )


def test_fingerprint():
    """Equal data gives equal fingerprints; one changed reward changes it."""
    a, b = Dataset(**_fields()), Dataset(**_fields())
    assert a.fingerprint() == b.fingerprint()
    assert Dataset(**_with("rewards", 2, 3.5)).fingerprint() != a.fingerprint()
    assert Dataset(**_fields(timeouts=np.array([0, 0, 1, 1]))).fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            _fields(actions=np.zeros((3, 1))),
            "actions has 3 rows but rewards has 4; all fields need one row per transition",
        ),
        (
            _fields(timeouts=np.array(0)),
            "timeouts has a scalar but rewards has 4; all fields need one row per transition",
        ),
        (_fields(rewards=np.ones((4, 1))), "rewards has shape (4, 1); expected (N,)"),
        (_fields(rewards=np.array(1.0)), "rewards has shape (); expected (N,)"),
        (_fields(actions=np.zeros(4)), "actions has shape (4,); expected (N, action_dim)"),
        (_fields(terminals=np.zeros((4, 1))), "terminals has shape (4, 1); expected (N,)"),
        (
            _fields(next_observations=np.zeros((4, 3))),
            "next_observations has shape (4, 3) but observations has (4, 2)",
        ),
        (
            _fields(observations=np.zeros(4), next_observations=np.zeros(4)),
            "observations has shape (4,); expected (N, *observation_shape)",
        ),
        (
            _fields(rewards=np.array(["a", "b", "c", "d"])),
            "rewards has dtype <U1; expected numbers",
        ),
        (
            _fields(observations=np.array([None] * 4)),
            "observations has dtype object; expected numbers",
        ),
        (_with("rewards", 3, np.nan), "rewards[3] is nan: all values must be finite"),
        (_with("rewards", 0, -np.inf), "rewards[0] is -inf: all values must be finite"),
        (_with("actions", (2, 0), np.inf), "actions[2, 0] is inf: all values must be finite"),
        (
            _with("observations", (1, 1), np.nan),
            "observations[1, 1] is nan: all values must be finite",
        ),
        (
            _with("next_observations", (3, 0), np.inf),
            "next_observations[3, 0] is inf: all values must be finite",
        ),
        (_with("terminals", 2, 2), "terminals[2] is 2.0: flags must be 0/1 or bool"),
        (_fields(timeouts=np.array([0, 2, 0, 0])), "timeouts[1] is 2: flags must be 0/1 or bool"),
        (
            _fields(terminals=np.array([0, 0.5, 0, 0])),
            "terminals[1] is 0.5: flags must be 0/1 or bool",
        ),
        (
            {k: v[:0] for k, v in _fields().items()},
            "the dataset is empty: it needs at least one transition",
        ),
    ],
)
def test_validation_errors(fields, message):
    """Each malformed input raises one ValorlError naming the field, the first bad index and
    what was expected, at construction rather than mid-training."""
    assert _raises(fields) == message


def test_nan_reports_first_bad_index():
    """With several bad values, the message names the first one in row-major order."""
    rewards = np.array([0.0, 1.0, np.inf, np.nan])
    assert _raises(_fields(rewards=rewards)) == "rewards[2] is inf: all values must be finite"


def test_check_env_accepts_matching_data():
    """Data with Pendulum's shapes and actions on the bounds (inclusive) passes."""
    ds = Dataset(
        **_fields(
            observations=np.zeros((4, 3)),
            next_observations=np.zeros((4, 3)),
            actions=np.array([[-2.0], [2.0], [0.0], [2.0003]]),  # within tol = 1e-4 * 4
        )
    )
    ds.check_env(PENDULUM_OBS, PENDULUM_ACT, "Pendulum-v1")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (_fields(), "observations have shape (2,) per step but Pendulum-v1 expects (3,)"),
        (
            _fields(
                observations=np.zeros((4, 3)),
                next_observations=np.zeros((4, 3)),
                actions=np.zeros((4, 2)),
            ),
            "actions have shape (2,) per step but Pendulum-v1 expects (1,)",
        ),
        (
            _fields(
                observations=np.zeros((4, 3)),
                next_observations=np.zeros((4, 3)),
                actions=np.array([[0.0], [1.5], [2.5], [-3.0]]),
            ),
            "actions[2, 0] = 2.5 is outside the action space [-2, 2] of Pendulum-v1",
        ),
        (
            _fields(
                observations=np.zeros((4, 3)),
                next_observations=np.zeros((4, 3)),
                actions=np.array([[0.0], [-2.01], [0.0], [0.0]]),
            ),
            "actions[1, 0] = -2.01 is outside the action space [-2, 2] of Pendulum-v1",
        ),
    ],
)
def test_check_env_errors(fields, message):
    """Shape and bound mismatches against the environment are reported before training."""
    with pytest.raises(ValorlError) as exc:
        Dataset(**fields).check_env(PENDULUM_OBS, PENDULUM_ACT, "Pendulum-v1")
    assert str(exc.value) == message


def test_check_env_against_gymnasium_pendulum(pendulum_env):
    """The real Pendulum-v1 spaces: obs dim 3 and actions in [-2, 2]."""
    fields = _fields(
        observations=np.zeros((4, 3)),
        next_observations=np.zeros((4, 3)),
        actions=np.array([[0.0], [3.0], [0.0], [0.0]]),
    )
    with pytest.raises(ValorlError) as exc:
        Dataset(**fields).check_env(
            pendulum_env.observation_space, pendulum_env.action_space, "Pendulum-v1"
        )
    assert str(exc.value) == "actions[1, 0] = 3 is outside the action space [-2, 2] of Pendulum-v1"


def test_no_revalidation_on_device_arrays_and_tracers():
    """Inside jit and jax.tree.map the pytree is rebuilt with tracers or device arrays: those
    are trusted, so even NaN values pass; host arrays are validated again."""
    ds = Dataset(**_fields())
    poisoned = jax.jit(lambda d: jax.tree.map(lambda x: x * jnp.nan, d))(ds)
    assert bool(jnp.isnan(poisoned.rewards).all())
    on_device = jax.tree.map(jnp.asarray, ds)
    assert isinstance(on_device.rewards, jax.Array)
    assert on_device.info == ds.info
    doubled = jax.tree.map(lambda x: x * 2, on_device)  # flags become 0/2: not validated
    assert int(doubled.terminals[1]) == 2
    with pytest.raises(ValorlError, match=r"^observations\[0, 0\] is nan"):
        jax.tree.map(lambda x: x * np.nan, ds)


def test_info_is_static_under_jit():
    """DatasetInfo is static pytree metadata: it survives jit and is not a leaf."""
    info = DatasetInfo(name="x", env_id="Pendulum-v1")
    ds = Dataset(**_fields(), info=info)
    assert len(jax.tree.leaves(ds)) == 6
    assert jax.jit(lambda d: d)(ds).info == info


def test_to_batch():
    """to_batch gives float32 device arrays with masks and dones as floats."""
    batch = Dataset(**_fields()).to_batch()
    assert isinstance(batch, Batch)
    assert len(batch) == 4
    for name in ("observations", "actions", "rewards", "next_observations", "masks", "dones"):
        assert getattr(batch, name).dtype == jnp.float32, name
    assert batch.observations.shape == (4, 2)
    assert batch.actions.shape == (4, 1)
    np.testing.assert_array_equal(batch.masks, [1, 0, 1, 1])
    np.testing.assert_array_equal(batch.dones, [0, 1, 1, 0])


@pytest.mark.parametrize(("num_batches", "lead"), [(1, (5,)), (3, (3, 5))])
def test_sample_batch_shapes_and_rows(num_batches, lead):
    """sample_batch draws whole rows: (batch_size, ...) or (num_batches, batch_size, ...),
    every field of a sample coming from the same row."""
    batch = Dataset(**_fields()).to_batch()
    sample = sample_batch(batch, jax.random.key(0), 5, num_batches)
    assert sample.observations.shape == (*lead, 2)
    assert sample.next_observations.shape == (*lead, 2)
    assert sample.actions.shape == (*lead, 1)
    for name in ("rewards", "masks", "dones"):
        assert getattr(sample, name).shape == lead
    row = sample.observations[..., 0].astype(int)  # row i has observation [i, 10 i]
    np.testing.assert_array_equal(sample.rewards, row + 1)
    np.testing.assert_array_equal(sample.observations[..., 1], 10 * row)
    np.testing.assert_array_equal(sample.masks, np.array([1, 0, 1, 1])[row])


def test_sample_batch_covers_all_rows():
    """Uniform sampling reaches every row (and only valid rows) given enough draws."""
    batch = Dataset(**_fields()).to_batch()
    rows = sample_batch(batch, jax.random.key(1), 400).observations[:, 0]
    assert set(np.asarray(rows).astype(int).tolist()) == {0, 1, 2, 3}


def test_normalized_score():
    """D4RL score: 0 at the random reference, 100 at the best; None without references."""
    info = DatasetInfo(ref_min_score=-1200.0, ref_max_score=-200.0)
    # (-700 + 1200) / 1000 * 100 = 50; (-1200 + 1200) -> 0; (-200 + 1200) / 1000 * 100 = 100
    np.testing.assert_allclose(info.normalized_score([-700.0, -1200.0, -200.0]), [50, 0, 100])
    assert DatasetInfo(ref_min_score=0.0).normalized_score(1.0) is None
