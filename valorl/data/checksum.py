"""The content checksum of a Minari dataset: a name for its data that ignores how it is stored.

It is a SHA-256 over every array of every episode in the Minari HDF5 file (observations,
actions, rewards, terminations, truncations, and whatever `infos` holds, such as behaviour
log-probabilities), with each array's name, dtype and shape, episodes in order. It ignores
metadata and the HDF5 container's own bytes (which hold write times), so two builds of the same
data have the same checksum. The zoo compares it with its recipes' recorded checksums, and the
dataset cache (`data/cache.py`) is keyed by it.

Hashing reads every episode's group, which takes minutes for a D4RL-sized dataset of many
short episodes, so `checksum` remembers the result beside the data (`STAMP`) with the data
file's size and modification time, and hashes again only when either changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from valorl.data.files import atomic_file
from valorl.errors import ValorlError

DATA_FILE = Path("data") / "main_data.hdf5"
"""A Minari HDF5 dataset's episodes, relative to its directory."""

STAMP = ".valorl-checksum.json"
"""Beside `data/`: the content checksum and the data file's size and time it belongs to."""


def content_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of the data in the Minari dataset at `path` (the directory holding `data/`)."""
    file = Path(path) / DATA_FILE
    digest = hashlib.sha256()
    try:
        with h5py.File(file, "r") as f:
            names = sorted(f, key=lambda n: int(n.removeprefix("episode_")))
            for name in names:
                digest.update(name.encode())
                _hash_group(f[name], digest)
    except (OSError, ValueError, KeyError) as exc:
        raise ValorlError(f"could not read {file}: {exc}") from None
    return digest.hexdigest()


def _hash_group(group: h5py.Group, digest) -> None:
    for key in sorted(group):
        item = group[key]
        if isinstance(item, h5py.Group):
            digest.update(f"{key}/".encode())
            _hash_group(item, digest)
        else:
            array = np.ascontiguousarray(item[()])
            digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())


def checksum(path: str | os.PathLike) -> str:
    """`content_checksum(path)`, remembered in `path/STAMP` against the data file's size and
    modification time (any write changes the time). A stamp that cannot be written (a
    read-only directory) only costs hashing again next time."""
    path = Path(path)
    stamp, state = path / STAMP, _file_state(path)
    try:
        saved = json.loads(stamp.read_text())
        if saved["file"] == state:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = content_checksum(path)
    try:
        with atomic_file(stamp, durable=True) as f:
            f.write(json.dumps({"file": state, "sha256": digest}).encode())
    except OSError:
        pass
    return digest


def _file_state(path: str | os.PathLike) -> dict[str, int]:
    """The data file's size and modification time (ns): what a write to it changes."""
    try:
        stat = (Path(path) / DATA_FILE).stat()
    except OSError as exc:
        raise ValorlError(f"could not read {Path(path) / DATA_FILE}: {exc.strerror}") from None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
