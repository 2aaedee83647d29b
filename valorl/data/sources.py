"""Reading and writing datasets: Minari (by id or path), D4RL-layout HDF5, and `.npz`.

Minari is the interchange format: what valorl writes, d3rlpy, TorchRL and Minari's own tools
can read. Every writer builds the dataset in a temporary directory and renames it into place,
so an interrupted write never leaves a half-written dataset behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from valorl.data import ogbench
from valorl.data.cache import load_cached
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.errors import ValorlError

D4RL_KEYS = ("observations", "actions", "rewards", "terminals")
HDF5_SUFFIXES = (".hdf5", ".h5")

DatasetResolver = Callable[[str], "Path | Dataset | None"]
"""A dataset name -> the directory of the Minari dataset it stands for (made if need be), or
the dataset itself (one derived from another when loaded, such as an OGBench single-task
relabelling), or None for a name the resolver does not know."""

_RESOLVERS: list[DatasetResolver] = []


def register_dataset_resolver(resolver: DatasetResolver) -> None:
    """Let `load_dataset` resolve names that are neither paths nor local Minari ids, before the
    Minari root is searched. The zoo registers its recipe names this way when it is imported
    (as `import valorl` does): the zoo builds its datasets with this module, so this module must
    not import it."""
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)


def minari_root() -> Path:
    """Where local Minari datasets live: `$MINARI_DATASETS_PATH` or `~/.minari/datasets`."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def load_dataset(source: str | os.PathLike) -> Dataset:
    """Load a dataset from a local Minari id, a Minari dataset directory, a D4RL-layout HDF5
    file (`observations, actions, rewards, terminals[, timeouts, next_observations]`), an
    `.npz` file with the same keys or in OGBench's layout (`valorl.data.ogbench`), or a zoo
    recipe's name (`pendulum-medium-v0`), which is
    built on first use and checked against its recipe's checksum on every load (through the
    resolver the zoo registers, see `register_dataset_resolver`).

    Raises ValorlError with a one-line reason when the source is missing or malformed.
    """
    path = Path(source)
    if path.is_dir():
        return _load_minari_dir(path)
    if path.is_file():
        if path.suffix == ".npz":
            return _load_npz(path)
        if path.suffix in HDF5_SUFFIXES:
            return _load_hdf5(path)
        raise ValorlError(
            f"{path}: unsupported file type {path.suffix!r}; expected a Minari "
            "dataset directory, .hdf5/.h5 (D4RL layout) or .npz"
        )
    for resolve in _RESOLVERS:
        resolved = resolve(str(source))
        if isinstance(resolved, Dataset):
            return resolved
        if resolved is not None:
            return _load_minari_dir(resolved)
    local = minari_root() / str(source)
    if (local / "data").is_dir():
        return _load_minari_dir(local)
    raise ValorlError(
        f"dataset {str(source)!r} not found: no such file or directory, and no "
        f"local Minari dataset with that id under {minari_root()} "
        "(see `valorl datasets list`)"
    )


def _load_minari_dir(path: Path) -> Dataset:
    """A Minari dataset's rows, through the flat-array cache beside it (`data/cache.py`): its
    episodes are read only on the first load, or when the data changed."""
    import minari

    data_path = path / "data" if (path / "data").is_dir() else path
    if not (data_path / "metadata.json").is_file():
        raise ValorlError(f"{path} is not a Minari dataset: no metadata.json in {data_path}")
    try:
        mds = minari.MinariDataset(data_path)
        metadata = mds.storage.metadata
        if not isinstance(mds.observation_space, gym.spaces.Box):
            raise ValorlError(
                f"{path}: observation space {mds.observation_space} is not "
                "supported yet; valorl reads Box observations"
            )
        num_actions = _num_actions(mds.action_space, path)
    except ValorlError:
        raise
    except Exception as exc:  # h5py/minari raise many types for damaged files
        raise ValorlError(f"could not read Minari dataset at {path}: {_reason(exc)}") from None
    spec_json = metadata.get("eval_env_spec") or metadata.get("env_spec")
    info = DatasetInfo(
        name=str(metadata.get("dataset_id", path.name)),
        source=str(path),
        env_id=json.loads(spec_json)["id"] if spec_json else None,
        env_spec_json=spec_json,
        ref_min_score=_float_or_none(metadata.get("ref_min_score")),
        ref_max_score=_float_or_none(metadata.get("ref_max_score")),
    )
    read = lambda: _read_minari_episodes(mds, info, path, num_actions)
    return load_cached(data_path, info, read, num_actions)


def _num_actions(space: gym.Space, path: Path) -> int | None:
    """n of a `Discrete(n)` action space (starting at 0), None for a `Box`; any other space is
    refused."""
    if isinstance(space, gym.spaces.Box):
        return None
    if isinstance(space, gym.spaces.Discrete) and int(space.start) == 0:
        return int(space.n)
    raise ValorlError(
        f"{path}: action space {space} is not supported; valorl reads continuous (Box) "
        "actions and Discrete(n) actions starting at 0"
    )


def _read_minari_episodes(
    mds: Any, info: DatasetInfo, path: Path, num_actions: int | None = None
) -> Dataset:
    """Every episode of the MinariDataset `mds`, as rows: the slow part that the cache skips."""
    try:
        episodes = [
            dict(
                observations=ep.observations,
                actions=ep.actions,
                rewards=ep.rewards,
                terminations=ep.terminations,
                truncations=ep.truncations,
            )
            for ep in mds.iterate_episodes()
        ]
    except Exception as exc:  # h5py/minari raise many types for damaged files
        raise ValorlError(f"could not read Minari dataset at {path}: {_reason(exc)}") from None
    try:
        dataset = Dataset.from_episodes(episodes, info=info, num_actions=num_actions)
    except ValorlError as exc:  # name the dataset: validation names only the field
        raise ValorlError(f"dataset {info.name!r} at {path}: {exc}") from None
    # Rows where the writer had to split an episode (its next observation is not the following
    # row's observation, as in corrupted data) were stored as truncations: undo that.
    splits = np.asarray(mds.storage.metadata.get("valorl_split_rows", []), np.int64)
    if len(splits) and splits.max() < len(dataset):
        timeouts = dataset.timeouts.copy()
        timeouts[splits] = False
        dataset = dataclasses.replace(dataset, timeouts=timeouts)
    return dataset


def _load_hdf5(path: Path) -> Dataset:
    try:
        with h5py.File(path, "r") as f:
            if "episode_0" in f and "observations" not in f:
                raise ValorlError(
                    f"{path} is a Minari episode file; pass the dataset directory "
                    "(the one holding data/metadata.json) instead"
                )
            arrays = {k: np.asarray(f[k]) for k in f if isinstance(f[k], h5py.Dataset)}
            attrs = {k: f.attrs[k] for k in f.attrs}
    except ValorlError:
        raise
    except Exception as exc:
        raise ValorlError(f"could not read {path} as HDF5: {_reason(exc)}") from None
    return _from_d4rl_arrays(arrays, attrs, path)


def _load_npz(path: Path) -> Dataset:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValorlError(f"{path} holds a single array, not an .npz archive of named arrays")
        with loaded as f:
            arrays = {k: f[k] for k in f.files}
    except ValorlError:
        raise
    except Exception as exc:
        raise ValorlError(f"could not read {path} as .npz: {_reason(exc)}") from None
    attrs = json.loads(str(arrays.pop("valorl_info"))) if "valorl_info" in arrays else {}
    if ogbench.is_layout(arrays):
        return ogbench.from_layout(arrays, path)
    return _from_d4rl_arrays(arrays, attrs, path)


def _from_d4rl_arrays(arrays: dict[str, np.ndarray], attrs: dict[str, Any], path: Path) -> Dataset:
    """D4RL's flat layout. Without `next_observations`, the next observation is the next row,
    and rows that end in a timeout are dropped (their next observation is not stored), as
    `d4rl.qlearning_dataset` does; the row before a dropped one is marked as a truncation."""
    missing = [k for k in D4RL_KEYS if k not in arrays]
    if missing:
        raise ValorlError(
            f"{path} is not in D4RL layout: missing {', '.join(missing)} "
            f"(found: {', '.join(sorted(arrays)) or 'nothing'})"
        )
    fields = {
        k: np.asarray(arrays[k])
        for k in (*D4RL_KEYS, "timeouts", "next_observations")
        if k in arrays
    }
    if fields["rewards"].ndim == 2 and fields["rewards"].shape[1] == 1:
        fields["rewards"] = fields["rewards"][:, 0]  # some D4RL exports store (N, 1)
    n = len(fields["rewards"])
    if n == 0:
        raise ValorlError(f"{path}: the dataset is empty")
    for name, value in fields.items():
        if value.ndim == 0 or len(value) != n:
            raise ValorlError(
                f"{path}: {name} has {value.size if value.ndim == 0 else len(value)}"
                f" rows but rewards has {n}"
            )
    fields.setdefault("timeouts", np.zeros(n, bool))
    if "next_observations" not in fields:
        timeouts = fields["timeouts"].astype(bool)
        keep = ~timeouts
        keep[-1] = False  # the last row has no next observation
        if not keep.any():
            raise ValorlError(f"{path}: no transition has a stored next observation")
        obs = fields["observations"]
        fields["next_observations"] = np.concatenate([obs[1:], obs[-1:]])
        # a kept row whose successor was dropped now ends its episode: a truncation
        cut = np.append(~keep[1:], True) & ~fields["terminals"].astype(bool)
        fields["timeouts"] = timeouts | cut
        fields = {k: v[keep] for k, v in fields.items()}
    info = DatasetInfo(
        name=str(attrs.get("name", path.stem)),
        source=str(path),
        env_id=_str_or_none(attrs.get("env_id")),
        ref_min_score=_float_or_none(attrs.get("ref_min_score")),
        ref_max_score=_float_or_none(attrs.get("ref_max_score")),
    )
    n_actions = attrs.get("num_actions")  # written by `save_npz` for discrete actions
    try:
        return Dataset(
            **fields, info=info, num_actions=None if n_actions is None else int(n_actions)
        )
    except ValorlError as exc:  # name the dataset: validation names only the field
        raise ValorlError(f"{path}: {exc}") from None


def save_minari(
    dataset: Dataset,
    dataset_id: str,
    path: str | os.PathLike | None = None,
    *,
    algorithm_name: str = "valorl",
    description: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
    step_infos: dict[str, np.ndarray] | None = None,
    episode_infos: Sequence[dict[str, np.ndarray]] | None = None,
) -> Path:
    """Write `dataset` as a Minari dataset and return its directory.

    With `path`, the dataset is written there (a directory holding `data/`); otherwise under
    the local Minari root as `dataset_id`, where `minari.load_dataset(dataset_id)` finds it.
    An existing dataset is never overwritten.

    `step_infos` maps names to per-transition float arrays (one row per dataset row), written
    into each episode's `infos` in Minari's layout: one entry more than steps, the first (the
    reset, which has no transition) NaN, entry t + 1 belonging to the transition at step t.
    """
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.dataset.minari_storage import MinariStorage

    try:
        namespace = parse_dataset_id(dataset_id)[0]
    except (ValueError, TypeError):  # minari raises TypeError when -v<version> is missing
        raise ValorlError(
            f"invalid Minari dataset id {dataset_id!r}: use "
            "[namespace/]name-v<version>, e.g. valorl/pendulum-mixed-v0"
        ) from None
    target = (Path(path) if path is not None else minari_root() / dataset_id).absolute()
    if target.exists():
        raise ValorlError(f"{target} already exists; choose another id or path, or delete it")
    step_infos = {k: np.asarray(v, np.float64) for k, v in (step_infos or {}).items()}
    for key, values in step_infos.items():
        if values.shape[:1] != (len(dataset),):
            raise ValorlError(
                f"step info {key!r} has shape {values.shape}; expected one row per "
                f"transition ({len(dataset)})"
            )
    if episode_infos is not None:
        episode_infos = list(episode_infos)
        lengths = [len(ep["rewards"]) + 1 for ep in dataset.episodes()]
        pairs = zip(episode_infos, lengths, strict=False)
        if len(episode_infos) != len(lengths) or any(
            len(v) != n for infos, n in pairs for v in infos.values()
        ):
            raise ValorlError(
                f"episode infos must hold one dict per episode ({len(lengths)}), each array "
                "with one row per observation (steps + 1)"
            )
    env_spec, obs_space, act_space = _spaces(dataset)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        storage = MinariStorage.new(
            tmp / "data",
            observation_space=obs_space,
            action_space=act_space,
            env_spec=env_spec,
            data_format="hdf5",
        )
        metadata: dict[str, Any] = dict(
            dataset_id=dataset_id, algorithm_name=algorithm_name, minari_version=minari.__version__
        )
        if dataset.info.env_spec_json:
            metadata["eval_env_spec"] = dataset.info.env_spec_json
        for key in ("ref_min_score", "ref_max_score"):
            if getattr(dataset.info, key) is not None:
                metadata[key] = float(getattr(dataset.info, key))
        if description:
            metadata["description"] = description
        splits = dataset.split_rows()
        if len(splits):  # the loader restores these rows' timeout flags
            metadata["valorl_split_rows"] = splits.tolist()
        storage.update_metadata(metadata | (extra_metadata or {}))
        storage.update_episodes(_episode_buffers(dataset, step_infos, episode_infos))
        if path is None and namespace is not None:
            from minari.namespace import create_namespace, list_local_namespaces

            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _episode_buffers(
    dataset: Dataset,
    step_infos: dict[str, np.ndarray],
    episode_infos: list[dict[str, np.ndarray]] | None = None,
) -> Iterator[Any]:
    """Minari episode buffers, with each episode's rows of `step_infos` behind a NaN reset
    entry, and its `episode_infos` as given."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    start = 0
    for i, ep in enumerate(dataset.episodes()):
        stop = start + len(ep["rewards"])
        infos = {
            k: np.concatenate([np.full((1, *v.shape[1:]), np.nan), v[start:stop]])
            for k, v in step_infos.items()
        }
        if episode_infos is not None:
            infos |= episode_infos[i]
        yield EpisodeBuffer(**ep, infos=infos or None)
        start = stop


def save_npz(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write the flat D4RL-layout arrays (plus `next_observations`) to `.npz`, atomically."""
    path = Path(path)
    info = dict(
        name=dataset.info.name,
        env_id=dataset.info.env_id,
        ref_min_score=dataset.info.ref_min_score,
        ref_max_score=dataset.info.ref_max_score,
    )
    if dataset.discrete:  # only then, so continuous files stay as they were
        info["num_actions"] = dataset.num_actions
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.npz")
    np.savez(
        tmp,
        observations=dataset.observations,
        actions=dataset.actions,
        rewards=dataset.rewards,
        next_observations=dataset.next_observations,
        terminals=dataset.terminals,
        timeouts=dataset.timeouts,
        valorl_info=np.array(json.dumps(info)),
    )
    os.replace(tmp, path)
    return path


def make_env(info: DatasetInfo, env_id: str | None = None, **kwargs: Any) -> gym.Env:
    """The environment to evaluate on: `env_id` if given, else the one the dataset names."""
    if ogbench.is_ogbench(env_id or info.env_id, None if env_id else info.env_spec_json):
        ogbench.prepare()
    try:
        if env_id is not None:
            return gym.make(env_id, **kwargs)
        if info.env_spec_json is not None:
            return gym.make(gym.envs.registration.EnvSpec.from_json(info.env_spec_json), **kwargs)
        if info.env_id is not None:
            return gym.make(info.env_id, **kwargs)
    except gym.error.Error as exc:
        raise ValorlError(f"cannot make environment {env_id or info.env_id!r}: {exc}") from None
    raise ValorlError(
        f"dataset {info.name!r} names no environment; pass --env ENV_ID, or "
        "--eval-episodes 0 to train without evaluation"
    )


def _spaces(dataset: Dataset):
    """Gymnasium spaces for writing: the environment's when known, else boxes fitted to the data
    (compact observations as a uint8 box; discrete actions as `Discrete(num_actions)`)."""
    if dataset.info.env_spec_json or dataset.info.env_id:
        env = make_env(dataset.info)
        spec = env.spec
        env.close()
        if dataset.discrete or isinstance(env.action_space, gym.spaces.Discrete):
            dataset.check_env(env.observation_space, env.action_space, spec.id if spec else "it")
        return spec, env.observation_space, env.action_space
    if dataset.observations.dtype == np.uint8:
        obs_space = gym.spaces.Box(0, 255, dataset.obs_shape, np.uint8)
    else:
        obs_space = gym.spaces.Box(-np.inf, np.inf, dataset.obs_shape, np.float32)
    if dataset.discrete:
        return None, obs_space, gym.spaces.Discrete(dataset.num_actions)
    low, high = dataset.actions.min(axis=0), dataset.actions.max(axis=0)
    return None, obs_space, gym.spaces.Box(low, high, (dataset.action_dim,), np.float32)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
