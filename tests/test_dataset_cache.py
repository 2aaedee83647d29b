"""The flat-array cache beside a Minari dataset (`valorl/data/cache.py`): a load through it equals
a direct load exactly, it follows the data when the file changes, and a damaged or foreign cache
is never trusted."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import threading
import warnings
from pathlib import Path

import minari
import numpy as np
import pytest
from conftest import synthetic_dataset
from test_sources import PENDULUM_INFO, assert_same_data, pendulum_like

from valorl.data.cache import CACHE_FILE, KEY, load_cached
from valorl.data.checksum import DATA_FILE, STAMP, content_checksum
from valorl.data.dataset import Dataset
from valorl.data.sources import load_dataset, save_minari

README = Path(__file__).resolve().parents[1] / "README.md"


def _unexpected_read(self, episode_indices=None):
    raise AssertionError("read the episodes of a dataset whose cache is valid")


@contextlib.contextmanager
def from_cache_only():
    """Within this block, reading a Minari dataset's episodes fails: what loads came from the
    cache."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(minari.MinariDataset, "iterate_episodes", _unexpected_read)
        yield


def save(dataset: Dataset, path: Path) -> Path:
    return save_minari(dataset, "valorl/test-v0", path=path)


def assert_identical(a: Dataset, b: Dataset) -> None:
    """Same arrays (values, shapes, dtypes) and the same info."""
    assert_same_data(a, b)
    assert a.info == b.info


def cache_key(root: Path) -> dict:
    with np.load(root / CACHE_FILE, allow_pickle=False) as archive:
        return json.loads(str(archive[KEY]))


def test_a_cache_hit_equals_the_direct_load(tmp_path):
    """The first load writes the cache and the second reads only the cache; both equal a load
    with no cache, field for field, info included (the env spec and reference scores)."""
    data = pendulum_like(n=50, episode_len=8)
    root = save(data, tmp_path / "ds")
    first = load_dataset(root)
    assert (root / CACHE_FILE).is_file()
    with from_cache_only():
        second = load_dataset(root)
        through_data_dir = load_dataset(root / "data")
    (root / CACHE_FILE).unlink()
    direct = load_dataset(root)
    assert_identical(first, direct)
    assert_identical(second, direct)
    assert_same_data(direct, data)
    assert direct.info.env_spec_json is not None
    assert direct.info.ref_max_score == PENDULUM_INFO.ref_max_score
    assert through_data_dir.info.source == str(root / "data")  # the info is never cached
    assert_same_data(through_data_dir, data)
    assert cache_key(root)["sha256"] == content_checksum(root)
    assert sorted(os.listdir(root)) == sorted([CACHE_FILE, STAMP, "data"])  # no temp file


def test_a_load_by_id_is_cached_beside_the_dataset():
    data = synthetic_dataset(n=60, episode_len=25)
    root = save_minari(data, "valorl/test-v0")
    load_dataset("valorl/test-v0")
    with from_cache_only():
        assert_same_data(load_dataset("valorl/test-v0"), data)
    assert (root / CACHE_FILE).is_file()


def test_split_rows_are_restored_through_the_cache(tmp_path):
    """Rows whose next observation does not chain are stored as extra truncations that the
    loader removes again (`valorl_split_rows`): the cached rows have them removed too."""
    data = synthetic_dataset(n=40, episode_len=20)
    next_observations = data.next_observations.copy()
    next_observations[4] += 1.0  # row 4's successor is not row 5: the writer splits there
    data = dataclasses.replace(data, next_observations=next_observations)
    root = save(data, tmp_path / "ds")
    first = load_dataset(root)
    with from_cache_only():
        second = load_dataset(root)
    assert not second.timeouts[4]
    assert_identical(second, first)
    assert_same_data(second, data)


def test_the_cache_follows_the_data_file(tmp_path):
    """Data rewritten in place (other content, the same metadata) makes the cache stale: the
    load returns the new rows without a warning and rewrites the cache under the new checksum."""
    old, new = synthetic_dataset(n=60, seed=0), synthetic_dataset(n=60, seed=1)
    root, other = save(old, tmp_path / "old"), save(new, tmp_path / "new")
    assert_same_data(load_dataset(root), old)
    shutil.copyfile(other / DATA_FILE, root / DATA_FILE)  # the old cache and stamp stay
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_data(load_dataset(root), new)
    assert cache_key(root)["sha256"] == content_checksum(other)
    with from_cache_only():
        assert_same_data(load_dataset(root), new)


def test_a_new_file_time_with_the_same_content_keeps_the_cache(tmp_path):
    """The key is the content: a file touched (new time, so the checksum is computed again)
    but not changed still loads from the cache."""
    data = synthetic_dataset(n=60)
    root = save(data, tmp_path / "ds")
    load_dataset(root)
    stat = (root / DATA_FILE).stat()
    os.utime(root / DATA_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with from_cache_only():
        assert_same_data(load_dataset(root), data)
    assert json.loads((root / STAMP).read_text())["file"]["mtime_ns"] == stat.st_mtime_ns + 10**9


def test_metadata_is_read_on_every_load_and_keys_the_cache(tmp_path):
    data = pendulum_like()
    root = save(data, tmp_path / "ds")
    load_dataset(root)
    before = cache_key(root)
    metadata_file = root / "data" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata_file.write_text(json.dumps(metadata | {"ref_max_score": 7.5}))
    loaded = load_dataset(root)
    assert loaded.info.ref_max_score == 7.5
    assert_same_data(loaded, data)
    assert cache_key(root)["metadata"] != before["metadata"]
    assert cache_key(root)["sha256"] == before["sha256"]


class _Payload:
    """Unpickling this creates the directory `MARKER`: proof that loading ran code."""

    marker = ""

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _truncated(file: Path, data: Dataset) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _emptied(file: Path, data: Dataset) -> None:
    file.write_bytes(b"")


def _not_a_zip(file: Path, data: Dataset) -> None:
    file.write_text("not a cache\n")


def _garbled(file: Path, data: Dataset) -> None:
    """One byte flipped inside the stored observations (the zip's CRC-32 no longer matches)."""
    raw = bytearray(file.read_bytes())
    stored = data.observations.tobytes()
    start = raw.find(stored)
    assert start > 0
    raw[start + len(stored) // 2] ^= 0xFF
    file.write_bytes(bytes(raw))


def _missing_an_array(file: Path, data: Dataset) -> None:
    with np.load(file, allow_pickle=False) as archive:
        kept = {k: archive[k] for k in archive.files if k != "rewards"}
    with open(file, "wb") as f:
        np.savez(f, **kept)


def _rows_disagree(file: Path, data: Dataset) -> None:
    """A well-formed archive with the right key whose rewards lack a row."""
    with np.load(file, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["rewards"] = arrays["rewards"][:-1]
    with open(file, "wb") as f:
        np.savez(f, **arrays)


def _pickled(file: Path, data: Dataset) -> None:
    """The right key, but observations stored as a pickled object whose loading runs code."""
    with np.load(file, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["observations"] = np.array([_Payload()], dtype=object)
    with open(file, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "damage",
    [_truncated, _emptied, _not_a_zip, _garbled, _missing_an_array, _rows_disagree, _pickled],
)
def test_a_damaged_cache_is_ignored_and_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(_Payload, "marker", str(tmp_path / "code-ran"))
    data = pendulum_like(n=50, episode_len=8)
    root = save(data, tmp_path / "ds")
    first = load_dataset(root)
    damage(root / CACHE_FILE, data)
    with pytest.warns(RuntimeWarning, match="ignoring the damaged dataset cache .*rebuilding it"):
        loaded = load_dataset(root)
    assert_identical(loaded, first)
    assert not (tmp_path / "code-ran").exists()
    with from_cache_only():
        assert_identical(load_dataset(root), first)  # rebuilt, and valid again


def _partial_savez(error: BaseException):
    def savez(file, **arrays):
        file.write(b"PK\x03\x04 half a cache")
        raise error

    return savez


def test_an_interrupted_write_leaves_no_cache(tmp_path, monkeypatch):
    root = save(synthetic_dataset(n=60), tmp_path / "ds")
    monkeypatch.setattr(np, "savez", _partial_savez(RuntimeError("interrupted")))
    with pytest.raises(RuntimeError, match="interrupted"):
        load_dataset(root)
    assert sorted(os.listdir(root)) == sorted([STAMP, "data"])


def test_a_cache_that_cannot_be_written_is_only_a_warning(tmp_path, monkeypatch):
    data = synthetic_dataset(n=60)
    root = save(data, tmp_path / "ds")
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", _partial_savez(full))
    with pytest.warns(RuntimeWarning, match="could not write the dataset cache .*No space left"):
        assert_same_data(load_dataset(root), data)
    assert sorted(os.listdir(root)) == sorted([STAMP, "data"])


def test_concurrent_first_loads_agree_and_leave_one_cache(tmp_path):
    """Four loads at once of an uncached dataset: each writes the stamp and the cache through
    its own temporary file; all return the same rows and one valid cache remains."""
    data = synthetic_dataset(n=200, episode_len=10)
    root = save(data, tmp_path / "ds")
    start = threading.Barrier(4)
    results: list[Dataset] = []

    def load() -> None:
        start.wait()
        results.append(load_dataset(root))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        assert_identical(result, results[0])
    assert sorted(os.listdir(root)) == sorted([CACHE_FILE, STAMP, "data"])
    with from_cache_only():
        assert_identical(load_dataset(root), results[0])


def test_a_file_replaced_during_the_first_load_is_not_cached(tmp_path):
    """If the data file changes between hashing and reading, the rows read may not be the
    hashed ones: they are returned but not cached under the old key."""
    old, new = synthetic_dataset(n=60, seed=0), synthetic_dataset(n=60, seed=1)
    root, other = save(old, tmp_path / "old"), save(new, tmp_path / "new")

    def read_while_replaced() -> Dataset:
        shutil.copyfile(other / DATA_FILE, root / DATA_FILE)
        return load_dataset(other)

    load_cached(root / "data", old.info, read_while_replaced)
    assert not (root / CACHE_FILE).exists()
    assert_same_data(load_dataset(root), new)


def test_only_minari_layout_is_cached(tmp_path):
    """A dataset directory not named `data` is read without a cache, even inside another
    dataset's directory (whose cache and checksum are not its own)."""
    outer, inner = synthetic_dataset(n=60, seed=0), synthetic_dataset(n=40, seed=1)
    root = save(outer, tmp_path / "outer")
    shutil.copytree(save(inner, tmp_path / "inner") / "data", root / "inner")
    assert_same_data(load_dataset(root / "inner"), inner)
    assert not (root / CACHE_FILE).exists()
    assert_same_data(load_dataset(root), outer)


def test_the_readme_says_where_the_cache_lives_and_how_to_clear_it():
    text = " ".join(README.read_text().split())
    assert f"DATASET/{CACHE_FILE}" in text
