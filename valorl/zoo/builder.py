"""Building zoo datasets from their recipes, and checking that what is on disk is what the
recipe makes.

A build is deterministic: `valorl collect` with the recipe's behaviours (policy files run in
float64, see `collection/policy_file.py`), steps and seed, the concatenation of other recipes'
built data, or OGBench's scripted oracles in its environments (`ogbench_data.py`, in a child
process with the CPU-dependent numerical kernels fixed). The dataset is written beside its
final place, its content checksum compared with the one the recipe records, and only a
matching build is moved into place; a mismatch leaves nothing behind and says so, unless the
user accepts this machine's build (`accept_local`, for CPUs whose numerical kernels differ from
the recording machine's): it is kept with a record of both checksums beside it, and is "local"
from then on, trusted only while its data still match the record. The content
checksum (`data/checksum.py`) names the data alone and is remembered beside it, so listing or
loading a large dataset does not re-read it unless the file changed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from valorl.collection import LOG_PROB_KEY, collect
from valorl.data.checksum import DATA_FILE, checksum
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.sources import minari_root, save_minari
from valorl.errors import ValorlError
from valorl.zoo.recipe import Recipe, find, get

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
"""Arrays of a Minari episode (beside its `infos`)."""

Status = Literal["not built", "verified", "local", "modified", "unrecorded"]
"""A recipe's dataset: absent; present and matching the recipe's checksum; present, differing
from it, but accepted as this machine's build and unchanged since; present and not matching;
present, but the recipe records no checksum to compare with."""

LOCAL_BUILD = "valorl_local_build.json"
"""Beside an accepted local build's data: the recipe's recorded checksum and the build's."""


def dataset_path(recipe: Recipe) -> Path:
    """Where the recipe's dataset lives: the local Minari root, under its Minari id."""
    return minari_root() / recipe.dataset_id


def status(recipe: Recipe) -> Status:
    path = dataset_path(recipe)
    if not (path / DATA_FILE).is_file():
        return "not built"
    if recipe.sha256 is None:
        return "unrecorded"
    found = checksum(path)
    if found == recipe.sha256:
        return "verified"
    return (
        "local"
        if _local_record(path) == {"recorded": recipe.sha256, "built": found}
        else "modified"
    )


def reusable(found: Status, force: bool = False) -> bool:
    """Whether `build` uses a dataset in state `found` as it is (`force` rebuilds a local one)."""
    return found in ("verified", "unrecorded") or (found == "local" and not force)


def _local_record(path: Path) -> dict | None:
    """The record of an accepted local build, or None (absent or unreadable: not trusted)."""
    try:
        return json.loads((path / LOCAL_BUILD).read_text())
    except (OSError, ValueError):
        return None


def verify(recipe: Recipe) -> Path:
    """The recipe's built dataset, checked against its recorded checksum; ValorlError if it
    is missing or differs."""
    path = dataset_path(recipe)
    found = status(recipe)
    if found == "not built":
        raise ValorlError(f"{recipe.name} is not built; run `valorl datasets build {recipe.name}`")
    if found == "modified":
        raise ValorlError(
            f"{path} does not match its recipe (content checksum differs from the recorded "
            f"{recipe.sha256[:12]}…): it was modified or damaged; rebuild it with "
            f"`valorl datasets build {recipe.name} --force`"
        )
    return path


def resolve(name: str) -> Path | None:
    """The directory of recipe `name`'s dataset, built on first use, or None if no recipe has
    that name: how `load_dataset` reads zoo names (registered in `valorl/zoo/__init__.py`)."""
    return build(name) if find(name) is not None else None


def build(
    name: str, *, force: bool = False, progress: bool = True, accept_local: bool = False
) -> Path:
    """Build the recipe's dataset unless a usable copy exists; returns its directory.

    `force` replaces a copy that does not match the recipe (an accepted local one too). A
    build whose checksum differs from the recorded one is discarded with an error (it would not
    be the recipe's dataset), or with `accept_local` kept as this machine's build, both
    checksums recorded beside it.
    """
    recipe = get(name)
    path = dataset_path(recipe)
    _remove_abandoned_staging(path)
    found = status(recipe)
    if reusable(found, force):
        return path
    if found == "modified" and not force:
        verify(recipe)  # raises, naming the fix
    for part in recipe.concat:
        build(part, progress=progress, accept_local=accept_local)
    staging = path.with_name(f"{_staging_prefix(path)}{os.getpid()}")
    try:
        _write(recipe, staging, progress)
        built = checksum(staging)  # a rename keeps the file's time, so the stamp stays valid
        if recipe.sha256 is not None and built != recipe.sha256:
            if not accept_local:
                raise _mismatch_error(recipe, built)
            record = {"recorded": recipe.sha256, "built": built}
            (staging / LOCAL_BUILD).write_text(json.dumps(record))
        if found in ("modified", "local"):  # replaced only by a build that passed
            shutil.rmtree(path)
        try:
            os.rename(staging, path)
        except OSError:  # another process (a parallel sweep group) built it first
            if not reusable(status(recipe)):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _staging_prefix(path: Path) -> str:
    """A build writes `path` first into `.NAME.build-HOST-PID` beside it: the host, because
    machines that share the dataset folder (a Ray cluster's nodes) do not share pids."""
    return f".{path.name}.build-{socket.gethostname()}-"


def _remove_abandoned_staging(path: Path) -> None:
    """Delete the staging folders of builds of `path` on this host whose process is gone.

    A build killed while writing (SIGKILL, a lost machine) cannot clean up after itself, and
    its folder can hold most of a 1M-transition dataset. A folder whose pid still runs is a
    parallel build's (a sweep group) and is left alone, as are other hosts' (their pids mean
    nothing here); this process's own is stale by definition, as a build runs once per
    process at a time."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return
    prefix = _staging_prefix(path)
    for folder in path.parent.glob(f"{glob.escape(prefix)}*"):
        pid = folder.name.removeprefix(prefix)
        if pid.isdigit() and (int(pid) == os.getpid() or not _running(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _mismatch_error(recipe: Recipe, built: str) -> ValorlError:
    """Why a build whose checksum differs from the recorded one was discarded, and the flag
    that keeps it."""
    cause = (
        "OGBench checksums are recorded for x86-64 CPUs with AVX2 and FMA; is this one?"
        if recipe.ogbench
        else "is this valorl's own, unchanged recipe and policy files?"
    )
    return ValorlError(
        f"building {recipe.name} gave content checksum {built[:12]}…, not the recorded "
        f"{recipe.sha256[:12]}…; the build was discarded ({cause} "
        f"`valorl datasets build {recipe.name} --accept-local-build` keeps this machine's build)"
    )


def _write(recipe: Recipe, out: Path, progress: bool) -> None:
    metadata = {"valorl_recipe": recipe.provenance()}
    if recipe.ogbench:
        _write_ogbench(recipe, out, progress, metadata)
        return
    if recipe.behaviours:
        collect(
            recipe.env_id,
            list(recipe.behaviours),
            recipe.steps,
            seed=recipe.seed,
            dataset_id=recipe.dataset_id,
            out=out,
            ref_min_score=recipe.ref_random,
            ref_max_score=recipe.ref_expert,
            extra_metadata=metadata,
            progress=progress,
        )
        return
    parts = [dataset_path(get(part)) for part in recipe.concat]
    episodes = [ep for part in parts for ep in _episodes(part)]
    info = DatasetInfo(
        name=recipe.dataset_id,
        env_id=recipe.env_id,
        env_spec_json=_env_spec_json(parts[0]),
        ref_min_score=recipe.ref_random,
        ref_max_score=recipe.ref_expert,
    )
    dataset = Dataset.from_episodes(episodes, info)
    save_minari(
        dataset,
        recipe.dataset_id,
        out,
        algorithm_name="valorl datasets build",
        description=f"{recipe.env_id}: " + " + ".join(recipe.concat),
        extra_metadata=metadata,
        step_infos={LOG_PROB_KEY: np.concatenate([ep[LOG_PROB_KEY] for ep in episodes])},
    )


def _write_ogbench(recipe: Recipe, out: Path, progress: bool, metadata: dict) -> None:
    """Trajectories of OGBench's oracles, with each observation's simulator state in `infos`,
    generated in a child process whose numerical kernels do not depend on the CPU."""
    from valorl.zoo.ogbench_data import write_dataset_pinned

    write_dataset_pinned(
        env_id=recipe.env_id,
        kind=recipe.ogbench,
        episodes=recipe.episodes,
        seed=recipe.seed,
        dataset_id=recipe.dataset_id,
        out=out,
        metadata=metadata,
        progress=progress,
    )


def _episodes(path: Path) -> list[dict[str, np.ndarray]]:
    """Every episode of a zoo dataset as written, with its behaviour log-probabilities."""
    with h5py.File(path / DATA_FILE, "r") as f:
        names = sorted(f, key=lambda n: int(n.removeprefix("episode_")))
        return [
            {
                **{k: f[n][k][()] for k in FIELDS},
                LOG_PROB_KEY: f[n]["infos"][LOG_PROB_KEY][()][1:],  # entry 0 is the reset
            }
            for n in names
        ]


def _env_spec_json(path: Path) -> str | None:
    metadata = json.loads((path / "data" / "metadata.json").read_text())
    return metadata.get("eval_env_spec") or metadata.get("env_spec")
