"""What datasets exist locally: the Minari root, read from metadata without loading data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from valorl.data.sources import minari_root
from valorl.errors import ValorlError


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    dataset_id: str
    path: Path
    steps: int
    episodes: int
    env_id: str | None
    ref_min_score: float | None
    ref_max_score: float | None
    size_mb: float
    metadata: dict[str, Any]


def read_entry(path: Path) -> DatasetEntry:
    """Summary of the Minari dataset directory `path` (the one holding `data/`)."""
    data = path / "data" if (path / "data").is_dir() else path
    try:
        metadata = json.loads((data / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValorlError(f"{path} is not a readable Minari dataset: {exc}") from None
    spec = metadata.get("eval_env_spec") or metadata.get("env_spec")
    size = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
    return DatasetEntry(
        dataset_id=str(metadata.get("dataset_id", path.name)),
        path=path,
        steps=int(metadata.get("total_steps", 0)),
        episodes=int(metadata.get("total_episodes", 0)),
        env_id=json.loads(spec)["id"] if spec else None,
        ref_min_score=metadata.get("ref_min_score"),
        ref_max_score=metadata.get("ref_max_score"),
        size_mb=size / 2**20,
        metadata=metadata,
    )


def space_summary(metadata: dict[str, Any], key: str) -> str | None:
    """A Minari dataset's `key` space ("action_space", "observation_space") as Gymnasium
    prints it: `Discrete(2)`, `Box(-1.0, 1.0, (3,), float32)`; None when it is not recorded."""
    serialized = metadata.get(key)
    if serialized is None:
        return None
    from minari.serialization import deserialize_space

    try:
        return str(deserialize_space(serialized))
    except Exception:  # a space minari cannot rebuild: show what is stored
        return str(serialized)


def local_datasets(root: Path | None = None) -> list[DatasetEntry]:
    """Every Minari dataset under the root (`<namespace>/<name>-v<k>/data/metadata.json`)."""
    root = root or minari_root()
    if not root.is_dir():
        return []
    found = sorted(p.parent.parent for p in root.glob("**/data/metadata.json"))
    return [read_entry(p) for p in found if not p.name.startswith(".")]
