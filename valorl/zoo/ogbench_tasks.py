"""OGBench's single-task datasets, derived from a zoo recipe's data when loaded.

OGBench turns its goal-conditioned data into five single-task datasets per environment by
relabelling rewards against each task's fixed goal (`valorl.data.ogbench`); the data are not
regenerated. Each OGBench recipe `X-v0` here (e.g. `cube-double-play-v0`) therefore also stands
for

    X-singletask-taskN-v0          dense reward #solved − #subtasks (OGBench's), N = 1..5
    X-singletask-taskN-sparse-v0   −1 until every subtask is solved, 0 there (QC's `--sparse`)

`load_dataset` and `valorl train --dataset` accept these names: the base recipe is built (and
checked against its checksum) on first use, and the relabelling (a second or two) runs on each
load. The datasets name OGBench's single-task environment (`cube-double-singletask-taskN-v0`)
for evaluation, whose episodes end, with `info["success"]`, when the task is solved.
"""

from __future__ import annotations

from valorl.data import ogbench
from valorl.data.dataset import DatasetInfo
from valorl.data.sources import load_dataset
from valorl.zoo.recipe import NAMESPACE, Recipe, find

TASKS = (1, 2, 3, 4, 5)


def parse(name: str) -> tuple[Recipe, int, bool] | None:
    """(base recipe, task, sparse) of a single-task variant's name, or None if `name` is not
    one (an unknown base, a recipe that is not OGBench's, or a task outside 1-5)."""
    name = name.removeprefix(f"{NAMESPACE}/")
    parsed = None if "/" in name else ogbench.single_task_name(name)  # another namespace's
    if parsed is None or parsed[1] not in TASKS:
        return None
    base_name, task, sparse = parsed
    base = find(base_name)
    if base is None or not base.ogbench:
        return None
    return base, task, sparse


def variant_names(recipe: Recipe) -> list[str]:
    """Every single-task variant of an OGBench recipe."""
    stem, _, version = recipe.name.rpartition("-")
    return [
        f"{stem}-singletask-task{task}{suffix}-{version}"
        for task in TASKS
        for suffix in ("", "-sparse")
    ]


def resolve(name: str):
    """The relabelled dataset a single-task name stands for, or None for another name
    (registered with `load_dataset` in `valorl/zoo/__init__.py`)."""
    parsed = parse(name)
    if parsed is None:
        return None
    from valorl.zoo.builder import build

    base, task, sparse = parsed
    path = build(base.name)
    dataset = load_dataset(path)
    env_id = ogbench.task_env_id(base.env_id, task)
    info = DatasetInfo(
        name=f"{NAMESPACE}/{name.removeprefix(f'{NAMESPACE}/')}",
        source=str(path),
        env_id=env_id,
        env_spec_json=ogbench.env_spec_json(env_id),
    )
    goal = ogbench.task_goal(base.env_id, task)
    return ogbench.relabel(dataset, ogbench.minari_trajectories(path), goal, info, sparse)
