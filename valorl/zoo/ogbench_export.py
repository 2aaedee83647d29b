"""Exporting a zoo OGBench dataset in OGBench's own `.npz` layout.

    valorl datasets export cube-double-play-v0 --format ogbench --out cube-double-play-v0.npz

writes `cube-double-play-v0.npz` and `cube-double-play-v0-val.npz`, which OGBench's loader
reads as it reads its published files:

    ogbench.make_env_and_datasets("cube-double-play-singletask-task2-v0",
                                  dataset_path="cube-double-play-v0.npz")

OGBench's loader insists on a validation file beside the training one. valorl's recipes hold
training trajectories only, so the validation file repeats the last tenth of them (at least one):
it loads, but it is not held-out data. A single-task name exports its base data (OGBench
relabels when loading).
"""

from __future__ import annotations

import os
from pathlib import Path

from valorl.data import ogbench
from valorl.errors import ValorlError
from valorl.zoo import ogbench_tasks
from valorl.zoo.builder import build
from valorl.zoo.recipe import find


def export(name: str, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the OGBench layout of recipe `name` (built on first use) or of a Minari dataset
    directory of OGBench trajectories to `out` and its `-val` file; returns both paths."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValorlError(f"{out}: OGBench datasets are .npz files (name it NAME.npz)")
    parsed = ogbench_tasks.parse(name)
    recipe = parsed[0] if parsed else find(name)
    if recipe is not None:
        if not recipe.ogbench:
            raise ValorlError(f"{recipe.name} is not an OGBench dataset; only those export")
        path = build(recipe.name)
    elif Path(name).is_dir():
        path = Path(name)
    else:
        raise ValorlError(f"{name!r} is neither a zoo OGBench recipe nor a dataset directory")
    trajectories = ogbench.minari_trajectories(path)
    val = trajectories[-max(1, len(trajectories) // 10) :]
    val_out = out.with_name(out.name.removesuffix(".npz") + "-val.npz")
    ogbench.save_layout(ogbench.to_layout(trajectories), out)
    ogbench.save_layout(ogbench.to_layout(val), val_out)
    return out, val_out
