"""Dataset sources and writers: Minari by id and by path, D4RL-layout HDF5, .npz, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
from conftest import synthetic_dataset

from valorl.data import sources
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.sources import load_dataset, make_env, minari_root, save_minari, save_npz
from valorl.errors import ValorlError

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
PENDULUM_INFO = DatasetInfo(
    name="pendulum-test", env_id="Pendulum-v1", ref_min_score=-1250.5, ref_max_score=-140.25
)


def pendulum_like(n: int = 30, episode_len: int = 12, seed: int = 0) -> Dataset:
    """Transitions with Pendulum-v1's real shapes and ranges: observations (cos, sin, theta
    dot), actions in [-2, 2], chained within episodes; episodes alternate termination and
    timeout, and the last one ends without a done flag."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i, start in enumerate(range(0, n, episode_len)):
        steps = min(episode_len, n - start)
        theta = rng.uniform(-np.pi, np.pi, steps + 1)
        obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, steps + 1)], axis=1)
        last = np.arange(steps) == steps - 1
        final = start + steps == n
        episodes.append(
            dict(
                observations=obs.astype(np.float32),
                actions=rng.uniform(-2, 2, (steps, 1)).astype(np.float32),
                rewards=-rng.uniform(0, 16, steps).astype(np.float32),
                terminations=last & (i % 2 == 1) & (not final),
                truncations=last & (i % 2 == 0) & (not final),
            )
        )
    return Dataset.from_episodes(episodes, PENDULUM_INFO)


def assert_same_data(a: Dataset, b: Dataset) -> None:
    """Every field equal, with the same shapes and dtypes."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def error_of(source) -> str:
    """The one-line ValorlError message that loading `source` raises."""
    with pytest.raises(ValorlError) as exc:
        load_dataset(source)
    message = str(exc.value)
    assert "\n" not in message
    return message


def write_hdf5(path: Path, arrays: dict, attrs: dict | None = None) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def write_npz(path: Path, arrays: dict, attrs: dict | None = None) -> Path:
    extra = {"valorl_info": np.array(json.dumps(attrs))} if attrs else {}
    np.savez(path, **arrays, **extra)
    return path


def d4rl_six_rows() -> dict:
    """Six D4RL rows without next_observations: a termination at row 1 and a timeout at row 3.
    Row i has observation [i, -i] and reward 10 i."""
    return dict(
        observations=np.stack([np.arange(6.0), -np.arange(6.0)], axis=1),
        actions=np.linspace(-1, 1, 6)[:, None],
        rewards=10.0 * np.arange(6.0),
        terminals=np.array([0, 1, 0, 0, 0, 0], bool),
        timeouts=np.array([0, 0, 0, 1, 0, 0], bool),
    )


# --- Minari -------------------------------------------------------------------------------


def test_minari_round_trip_by_id():
    """save_minari then load_dataset by id returns identical arrays and dtypes."""
    ds = synthetic_dataset(n=60, episode_len=25)
    target = save_minari(ds, "valorl/test-v0")
    assert target == minari_root() / "valorl" / "test-v0"
    loaded = load_dataset("valorl/test-v0")
    assert_same_data(loaded, ds)
    assert loaded.fingerprint() == ds.fingerprint()
    assert loaded.info.name == "valorl/test-v0"
    assert loaded.info.env_id is None


def test_a_registered_resolver_names_datasets_before_the_minari_root(tmp_path, monkeypatch):
    """load_dataset asks each registered resolver (as the zoo is) before the Minari root, passes
    on a name every resolver declines, and registering one twice asks it once."""
    ds = synthetic_dataset(n=30, episode_len=10)
    elsewhere = save_minari(ds, "valorl/elsewhere-v0", tmp_path / "elsewhere")
    save_minari(synthetic_dataset(n=20, episode_len=10), "valorl/shadowed-v0")
    asked = []

    def resolver(name: str) -> Path | None:
        asked.append(name)
        return elsewhere if name == "valorl/shadowed-v0" else None

    monkeypatch.setattr(sources, "_RESOLVERS", [])
    sources.register_dataset_resolver(resolver)
    sources.register_dataset_resolver(resolver)
    assert_same_data(load_dataset("valorl/shadowed-v0"), ds)
    assert asked == ["valorl/shadowed-v0"]
    assert "nobody/nothing-v0" in error_of("nobody/nothing-v0")
    assert asked == ["valorl/shadowed-v0", "nobody/nothing-v0"]


def test_minari_own_api_reads_what_valorl_writes():
    """minari.load_dataset (what d3rlpy and TorchRL call) sees the same episodes, steps and
    metadata: valorl's output is a genuine Minari dataset."""
    ds = pendulum_like()
    save_minari(ds, "valorl/test-v0")
    assert "valorl/test-v0" in minari.list_local_datasets()
    mds = minari.load_dataset("valorl/test-v0")
    assert mds.total_episodes == 3
    assert mds.total_steps == 30
    assert mds.env_spec.id == "Pendulum-v1"
    assert mds.action_space.shape == (1,)
    assert float(mds.action_space.low[0]) == -2.0
    assert mds.observation_space.shape == (3,)
    ours = list(ds.episodes())
    theirs = list(mds.iterate_episodes())
    assert len(theirs) == len(ours)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(b.observations, a["observations"])
        np.testing.assert_array_equal(b.actions, a["actions"])
        np.testing.assert_array_equal(b.rewards, a["rewards"])
        np.testing.assert_array_equal(b.terminations, a["terminations"])
        np.testing.assert_array_equal(b.truncations, a["truncations"])


def test_minari_round_trip_by_path(tmp_path):
    """save_minari(path=dir) writes a self-contained dataset that load_dataset(dir) reads,
    and that nothing is written under the Minari root."""
    ds = synthetic_dataset(n=40, episode_len=20)
    target = save_minari(ds, "valorl/test-v0", path=tmp_path / "out" / "mine")
    assert target == tmp_path / "out" / "mine"
    assert (target / "data" / "metadata.json").is_file()
    assert not minari_root().exists()
    assert_same_data(load_dataset(target), ds)
    assert_same_data(load_dataset(str(target / "data")), ds)  # the data/ folder works too


def test_minari_keeps_env_and_reference_scores():
    """env id, full env spec and reference scores survive the round trip, so evaluation and
    normalised scores work on a reloaded dataset."""
    ds = pendulum_like()
    save_minari(ds, "valorl/pendulum-v0")
    info = load_dataset("valorl/pendulum-v0").info
    assert info.env_id == "Pendulum-v1"
    assert json.loads(info.env_spec_json)["max_episode_steps"] == 200
    assert info.ref_min_score == -1250.5
    assert info.ref_max_score == -140.25
    env = make_env(info)
    try:
        assert env.spec.id == "Pendulum-v1"
        load_dataset("valorl/pendulum-v0").check_env(
            env.observation_space, env.action_space, "Pendulum-v1"
        )
    finally:
        env.close()


@pytest.mark.parametrize("by_path", [False, True])
def test_minari_never_overwrites(tmp_path, by_path):
    """Writing to an existing id or path raises and leaves the existing dataset intact."""
    first, second = synthetic_dataset(n=40, seed=1), synthetic_dataset(n=40, seed=2)
    path = tmp_path / "ds" if by_path else None
    target = save_minari(first, "valorl/test-v0", path=path)
    with pytest.raises(ValorlError) as exc:
        save_minari(second, "valorl/test-v0", path=path)
    assert str(exc.value) == f"{target} already exists; choose another id or path, or delete it"
    assert load_dataset(target).fingerprint() == first.fingerprint()


@pytest.mark.parametrize("bad_id", ["bad id", "valorl/no-version", "noversion"])
def test_minari_invalid_id(bad_id):
    """A malformed id is a user error with a one-line hint, whatever Minari's parser raises.

    'valorl/no-version' and 'noversion' fail before the fix: Minari's parse_dataset_id raises
    TypeError (int(None)) rather than ValueError when the -v<version> suffix is missing."""
    with pytest.raises(ValorlError) as exc:
        save_minari(synthetic_dataset(n=10), bad_id)
    assert str(exc.value) == (
        f"invalid Minari dataset id {bad_id!r}: use [namespace/]name-v<version>, "
        "e.g. valorl/pendulum-mixed-v0"
    )
    assert not minari_root().exists()


def fail_after_first_episode(monkeypatch) -> None:
    """Make Dataset.episodes raise after yielding one episode, as a crash mid-write would."""
    original = Dataset.episodes

    def episodes(self):
        yield next(original(self))
        raise RuntimeError("disk full")

    monkeypatch.setattr(Dataset, "episodes", episodes)


@pytest.mark.parametrize("by_path", [False, True])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, by_path):
    """A write that fails midway leaves no dataset and no temporary directory, and the same
    id can then be written successfully."""
    ds = synthetic_dataset(n=60, episode_len=20)
    path = tmp_path / "out" / "ds" if by_path else None
    with monkeypatch.context() as patch:
        fail_after_first_episode(patch)
        with pytest.raises(RuntimeError, match="disk full"):
            save_minari(ds, "valorl/test-v0", path=path)
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name == "test-v0"]
    assert leftovers == []
    assert not (path or minari_root() / "valorl" / "test-v0").exists()
    assert_same_data(load_dataset(save_minari(ds, "valorl/test-v0", path=path)), ds)


# --- D4RL layout (HDF5 and .npz) ---------------------------------------------------------


@pytest.mark.parametrize("writer", [write_hdf5, write_npz])
def test_d4rl_with_next_observations(tmp_path, writer):
    """With next_observations stored, every row is kept as is (float64 -> float32)."""
    ds = synthetic_dataset(n=30, episode_len=10)
    arrays = {name: getattr(ds, name).astype(np.float64) for name in FIELDS[:4]}
    arrays |= dict(terminals=ds.terminals, timeouts=ds.timeouts)
    suffix = ".hdf5" if writer is write_hdf5 else ".npz"
    assert_same_data(load_dataset(writer(tmp_path / f"d{suffix}", arrays)), ds)


@pytest.mark.parametrize("writer", [write_hdf5, write_npz])
def test_d4rl_without_next_observations(tmp_path, writer):
    """Without next_observations the next row is the next observation; the timeout row and
    the last row are dropped (their successor is not stored), and a kept row whose
    successor was dropped becomes a timeout (d4rl.qlearning_dataset semantics)."""
    suffix = ".h5" if writer is write_hdf5 else ".npz"
    ds = load_dataset(writer(tmp_path / f"d{suffix}", d4rl_six_rows()))
    # keep = ~timeouts, minus the last row    -> rows 0, 1, 2, 4 (row 3: timeout, row 5: last)
    # next observation of row i is row i + 1  -> rows 1, 2, 3, 5
    # row 2 precedes dropped row 3 and row 4 precedes dropped row 5, neither terminal
    #   -> timeouts at kept rows 2 and 4; row 1 keeps its termination
    np.testing.assert_array_equal(ds.observations, [[0, 0], [1, -1], [2, -2], [4, -4]])
    np.testing.assert_array_equal(ds.next_observations, [[1, -1], [2, -2], [3, -3], [5, -5]])
    np.testing.assert_array_equal(ds.rewards, [0, 10, 20, 40])
    np.testing.assert_allclose(ds.actions[:, 0], [-1, -0.6, -0.2, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(ds.terminals, [False, True, False, False])
    np.testing.assert_array_equal(ds.timeouts, [False, False, True, True])
    assert ds.episode_slices() == [slice(0, 2), slice(2, 3), slice(3, 4)]


def test_d4rl_without_timeouts_key(tmp_path):
    """`timeouts` is optional: absent, only the last row is dropped and the one before it
    becomes a truncation."""
    arrays = d4rl_six_rows()
    del arrays["timeouts"]
    ds = load_dataset(write_hdf5(tmp_path / "d.hdf5", arrays))
    assert len(ds) == 5
    np.testing.assert_array_equal(ds.timeouts, [False, False, False, False, True])
    np.testing.assert_array_equal(ds.next_observations[:, 0], [1, 2, 3, 4, 5])


def test_d4rl_rewards_column_vector(tmp_path):
    """Some D4RL exports store rewards as (N, 1); they are read as (N,)."""
    arrays = d4rl_six_rows() | {"rewards": 10.0 * np.arange(6.0)[:, None]}
    ds = load_dataset(write_hdf5(tmp_path / "d.hdf5", arrays))
    np.testing.assert_array_equal(ds.rewards, [0, 10, 20, 40])


@pytest.mark.parametrize("as_bytes", [False, True])
def test_hdf5_attrs_are_read(tmp_path, as_bytes):
    """env_id and reference scores come from the file's attributes (str or bytes)."""
    env_id = np.bytes_(b"Pendulum-v1") if as_bytes else "Pendulum-v1"
    attrs = dict(env_id=env_id, ref_min_score=-1200.0, ref_max_score=np.float32(-150.5))
    info = load_dataset(write_hdf5(tmp_path / "pend.hdf5", d4rl_six_rows(), attrs)).info
    assert info == DatasetInfo(
        name="pend",
        source=str(tmp_path / "pend.hdf5"),
        env_id="Pendulum-v1",
        ref_min_score=-1200.0,
        ref_max_score=-150.5,
    )


def test_save_npz_round_trip(tmp_path):
    """save_npz then load_dataset keeps every array and the name, env id and scores."""
    ds = pendulum_like()
    path = save_npz(ds, tmp_path / "p.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]  # no temp file left
    loaded = load_dataset(path)
    assert_same_data(loaded, ds)
    assert loaded.info.name == "pendulum-test"
    assert loaded.info.env_id == "Pendulum-v1"
    assert (loaded.info.ref_min_score, loaded.info.ref_max_score) == (-1250.5, -140.25)


def test_save_npz_replaces_existing_file(tmp_path):
    """save_npz atomically replaces an existing file (unlike Minari, a single file)."""
    path = save_npz(synthetic_dataset(n=20, seed=1), tmp_path / "d.npz")
    second = synthetic_dataset(n=20, seed=2)
    assert load_dataset(save_npz(second, path)).fingerprint() == second.fingerprint()


# --- errors -------------------------------------------------------------------------------


def test_missing_id():
    """An unknown source names itself and where Minari datasets were looked for."""
    assert error_of("nobody/nothing-v0") == (
        "dataset 'nobody/nothing-v0' not found: no such file or directory, and no local "
        f"Minari dataset with that id under {minari_root()} (see `valorl datasets list`)"
    )


def test_unsupported_suffix(tmp_path):
    """A file that is not .npz/.hdf5/.h5 is rejected by its suffix."""
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    assert error_of(path) == (
        f"{path}: unsupported file type '.csv'; expected a Minari dataset directory, "
        ".hdf5/.h5 (D4RL layout) or .npz"
    )


def test_directory_that_is_not_minari(tmp_path):
    """A directory without Minari metadata is rejected with the place it looked."""
    (tmp_path / "empty").mkdir()
    assert error_of(tmp_path / "empty") == (
        f"{tmp_path / 'empty'} is not a Minari dataset: no metadata.json in {tmp_path / 'empty'}"
    )


def test_truncated_hdf5(tmp_path):
    """A half-written HDF5 file gives a one-line 'could not read' error, not an h5py trace."""
    path = write_hdf5(tmp_path / "d.hdf5", d4rl_six_rows())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = error_of(path)
    assert message.startswith(f"could not read {path} as HDF5: ")
    assert f"eof = {len(data) // 2}" in message


def test_foreign_hdf5(tmp_path):
    """An HDF5 file with other keys lists what is missing and what was found."""
    arrays = dict(observations=np.zeros((3, 2)), acts=np.zeros((3, 1)), reward=np.zeros(3))
    path = write_hdf5(tmp_path / "other.hdf5", arrays)
    assert error_of(path) == (
        f"{path} is not in D4RL layout: missing actions, rewards, terminals "
        "(found: acts, observations, reward)"
    )
    empty = write_hdf5(tmp_path / "empty.h5", {})
    assert error_of(empty) == (
        f"{empty} is not in D4RL layout: missing observations, actions, rewards, terminals "
        "(found: nothing)"
    )


def test_d4rl_length_mismatch(tmp_path):
    """Arrays of different lengths are named with their row counts."""
    arrays = d4rl_six_rows() | {"actions": np.zeros((5, 1))}
    path = write_hdf5(tmp_path / "d.hdf5", arrays)
    assert error_of(path) == f"{path}: actions has 5 rows but rewards has 6"


def test_d4rl_single_row_without_next_observation(tmp_path):
    """One row and no next_observations leaves no usable transition: a clear error."""
    arrays = {k: v[:1] for k, v in d4rl_six_rows().items()}
    path = write_hdf5(tmp_path / "d.hdf5", arrays)
    assert error_of(path) == f"{path}: no transition has a stored next observation"


def test_corrupt_npz(tmp_path):
    """A truncated .npz archive gives a one-line 'could not read' error."""
    path = write_npz(tmp_path / "d.npz", d4rl_six_rows())
    path.write_bytes(path.read_bytes()[:100])
    assert error_of(path) == f"could not read {path} as .npz: File is not a zip file"
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"not an archive" * 8)
    assert error_of(garbage).startswith(f"could not read {garbage} as .npz: ")


@pytest.mark.parametrize("writer", [write_hdf5, write_npz])
def test_nan_reward_in_file(tmp_path, writer):
    """Dataset validation runs on file data too: the file and the NaN's index are reported."""
    arrays = d4rl_six_rows()
    arrays["rewards"][2] = np.nan
    suffix = ".hdf5" if writer is write_hdf5 else ".npz"
    path = writer(tmp_path / f"d{suffix}", arrays)
    assert error_of(path) == f"{path}: rewards[2] is nan: all values must be finite"


def test_minari_episode_file_passed_directly():
    """Passing Minari's main_data.hdf5 points the user to the dataset directory."""
    target = save_minari(synthetic_dataset(n=20), "valorl/test-v0")
    path = target / "data" / "main_data.hdf5"
    assert path.is_file()
    assert error_of(path) == (
        f"{path} is a Minari episode file; pass the dataset directory "
        "(the one holding data/metadata.json) instead"
    )


def test_make_env_without_environment():
    """A dataset that names no environment cannot be evaluated: say how to proceed."""
    with pytest.raises(ValorlError) as exc:
        make_env(DatasetInfo(name="mine"))
    assert str(exc.value) == (
        "dataset 'mine' names no environment; pass --env ENV_ID, or --eval-episodes 0 "
        "to train without evaluation"
    )


def test_make_env_unknown_environment():
    """An environment id Gymnasium does not know is a one-line ValorlError."""
    with pytest.raises(ValorlError) as exc:
        make_env(DatasetInfo(env_id="NoSuchEnv-v9"))
    assert str(exc.value).startswith("cannot make environment 'NoSuchEnv-v9': ")


def test_make_env_override():
    """An explicit env_id wins over the one the dataset names."""
    env = make_env(DatasetInfo(env_id="NoSuchEnv-v9"), "Pendulum-v1")
    try:
        assert env.spec.id == "Pendulum-v1"
    finally:
        env.close()
