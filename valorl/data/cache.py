"""A flat-array cache of a loaded Minari dataset, beside it, so a large dataset loads in seconds.

Minari's HDF5 layout keeps one group per episode, and reading a group costs h5py a fixed
overhead however short the episode: hopper-random-v0's 1M transitions sit in ~45k groups and
take minutes to read, where the same rows as six flat arrays load in well under a second. So
the first load of a Minari dataset writes its `Dataset`'s arrays to `DATASET/CACHE_FILE`
(beside `DATASET/data/`), and later loads read that instead. Deleting the file is always
safe: the next load writes it again.

The cache is keyed by what the arrays are made from: the data's content checksum
(`data/checksum.py`, remembered against the data file's size and modification time, so
checking it costs a `stat` unless the file changed) and a SHA-256 of `metadata.json` (the
loader reads it too). A cache whose key differs is rebuilt. The zoo records the checksum when
it builds a dataset; for any other dataset the first load computes it, reading the episodes a
second time, once. Nothing in it is trusted that was
not checked: it is read with `allow_pickle=False` (loading never runs code), each array's
CRC-32 in the `.npz` (a zip archive) is checked as it is read, and the arrays are validated
again by `Dataset`; a damaged file is reported with a warning and rebuilt.

Writes are atomic (`data/files.py`): an interrupted write leaves no cache, and two processes
that load the same dataset at once both write a complete one (the last rename wins; both hold
the same data). A cache is written only when the data file is the one that was hashed before
reading (same inode, size and time), so a dataset replaced mid-load is not cached under the
old key.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from valorl.data.checksum import DATA_FILE, checksum
from valorl.data.dataset import FLAG_FIELDS, FLOAT_FIELDS, Dataset, DatasetInfo
from valorl.data.files import atomic_file
from valorl.errors import ValorlError

CACHE_FILE = ".valorl-cache.npz"
"""Beside a Minari dataset's `data/`: its rows as flat arrays, with the key they belong to."""

FORMAT = 1
"""Part of the key: raise it when the cached arrays' meaning changes, so old caches rebuild."""

FIELDS = FLOAT_FIELDS + FLAG_FIELDS
KEY = "valorl_cache_key"
NUM_ACTIONS = "num_actions"
"""Present only in the cache of a discrete dataset (so continuous caches stay as they were)."""


def load_cached(
    data_dir: Path,
    info: DatasetInfo,
    read: Callable[[], Dataset],
    num_actions: int | None = None,
) -> Dataset:
    """`read()`, or the same rows from the cache when it was written from the same data.

    `num_actions` is the size of the dataset's discrete action space (None: continuous); a
    cache that records another is not used.

    `data_dir` holds the dataset's `metadata.json` and `main_data.hdf5`; in Minari's layout it
    is named `data`, and its parent holds the cache. `info` is the dataset's info, which the
    cache does not hold (its `source` is where this load came from). A dataset stored another
    way is read without a cache.
    """
    root = data_dir.parent
    data_file = root / DATA_FILE
    if data_dir.name != "data" or not data_file.is_file():
        return read()
    before = _identity(data_file)
    try:
        key = json.dumps(
            {
                "format": FORMAT,
                "sha256": checksum(root),
                "metadata": hashlib.sha256((data_dir / "metadata.json").read_bytes()).hexdigest(),
            }
        )
    except (ValorlError, OSError):  # unreadable: `read` says what is wrong with it
        return read()
    file = root / CACHE_FILE
    arrays = _read(file, key)
    if arrays is not None:
        try:
            cached_n = arrays.pop(NUM_ACTIONS, None)
            cached_n = None if cached_n is None else int(cached_n)
            if cached_n != num_actions:
                raise ValorlError(f"it records {cached_n} actions, the dataset {num_actions}")
            return Dataset(**arrays, info=info, num_actions=cached_n)
        except (ValorlError, TypeError, ValueError) as exc:
            _warn(f"ignoring the damaged dataset cache {file} ({exc}); rebuilding it")
    dataset = read()
    if _identity(data_file) == before:
        _write(file, key, dataset)
    return dataset


def _identity(data_file: Path) -> tuple[int, int, int]:
    stat = data_file.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _read(file: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if `file` holds a complete cache for `key`; None otherwise."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            names = sorted(archive.files)
            if names not in (sorted((*FIELDS, KEY)), sorted((*FIELDS, KEY, NUM_ACTIONS))):
                raise ValueError(f"it holds {', '.join(names)}")
            if str(archive[KEY]) != key:
                return None  # written from other data: rebuild silently
            return {name: archive[name] for name in names if name != KEY}
    except FileNotFoundError:
        return None
    # np.load raises many types for a damaged file (BadZipFile, ValueError, EOFError, OSError)
    except Exception as exc:
        _warn(f"ignoring the damaged dataset cache {file} ({exc!r}); rebuilding it")
        return None


def _write(file: Path, key: str, dataset: Dataset) -> None:
    try:
        with atomic_file(file) as f:
            arrays = {name: getattr(dataset, name) for name in FIELDS} | {KEY: key}
            if dataset.discrete:
                arrays[NUM_ACTIONS] = np.int64(dataset.num_actions)
            np.savez(f, **arrays)
    except OSError as exc:  # a read-only or full disk: loading still works, only slower
        _warn(f"could not write the dataset cache {file}: {exc.strerror or exc}")


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=2)
