"""OGBench's dataset layout and its single-task rewards (Park et al., ICLR 2025; `ogbench` 1.2.x).

OGBench stores a dataset as flat arrays of trajectories (`.npz`): `observations`, `actions`,
`terminals` (1 at each trajectory's last row, whose action has no successor and is dropped when
loading), and the simulator state of each row, `qpos`, `qvel` and, in scene and puzzle,
`button_states`. valorl keeps the same trajectories as Minari episodes with the simulator state
in each episode's `infos` (one row per observation, `valorl.zoo.ogbench_data`); this module
converts between the two, reads OGBench's files into a valorl `Dataset`, and computes the
single-task rewards that OGBench's `*-singletask-taskN-v0` datasets relabel the data with:

- a task fixes a goal for each object (cube positions within 4 cm; button states; drawer and
  window positions within 4 cm), read from the single-task environment after a reset;
- reward = (#subtasks solved in s) − #subtasks ≤ 0, mask 0 when all are solved (OGBench
  `relabel_utils.relabel_dataset`); success is judged on s, not s' (`success_timing='pre'`,
  the default of the single-task environments since ogbench 1.2.0);
- the sparse variant of "Reinforcement Learning with Action Chunking" (Li et al. 2025, its
  `--sparse` flag): reward −1 unless every subtask is solved, 0 there.

valorl marks the rows where every subtask is solved as terminal: no bootstrapping past them
(OGBench's mask 0), as the single-task environment itself ends the episode there.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from valorl.data.dataset import Dataset, DatasetInfo
from valorl.errors import ValorlError

INFO_KEYS = ("qpos", "qvel", "button_states")
OBJECTS_START = 14
"""qpos index of the first object joint (after the arm and gripper)."""
CUBE_QPOS = 7
"""qpos entries per cube (free joint: position, quaternion)."""
CENTRE = np.array([0.425, 0.0, 0.0])
"""Centre of the workspace: cube positions in observations and oracle goals are relative to it."""
TOLERANCE = 0.04
"""Distance within which a cube, the drawer or the window counts as at its goal."""


def prepare() -> None:
    """Import OGBench's environments (registering them with Gymnasium) without a renderer:
    state observations need none, and a headless machine has no display."""
    os.environ.setdefault("MUJOCO_GL", "disable")
    import ogbench.manipspace  # noqa: F401


def is_ogbench(env_id: str | None, spec_json: str | None = None) -> bool:
    """Whether an environment is one of OGBench's (by its EnvSpec's entry point or its id)."""
    if spec_json is not None and '"entry_point": "ogbench.' in spec_json:
        return True
    return env_id is not None and env_id.split("-")[0] in ("cube", "scene", "puzzle")


def env_spec_json(env_id: str) -> str:
    """The registered EnvSpec of an OGBench environment, as JSON (what datasets record)."""
    import gymnasium as gym

    prepare()
    try:
        return gym.spec(env_id).to_json()
    except gym.error.Error as exc:
        raise ValorlError(f"no OGBench environment {env_id!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# OGBench's flat layout


def minari_trajectories(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """Every episode of a Minari dataset written from OGBench trajectories (`path` holds
    `data/`): observations, actions and the per-observation `infos` arrays."""
    file = Path(path) / "data" / "main_data.hdf5"
    try:
        with h5py.File(file, "r") as f:
            names = sorted(f, key=lambda n: int(n.removeprefix("episode_")))
            out = []
            for name in names:
                group = f[name]
                infos = group.get("infos", {})
                episode = {
                    "observations": group["observations"][()],
                    "actions": group["actions"][()],
                    **{k: infos[k][()] for k in INFO_KEYS if k in infos},
                }
                out.append(episode)
    except (OSError, KeyError) as exc:
        raise ValorlError(f"could not read {file}: {exc}") from None
    if not out or "qpos" not in out[0]:
        raise ValorlError(f"{path} holds no OGBench trajectories (no qpos in its episodes' infos)")
    return out


def to_layout(trajectories: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """OGBench's flat arrays from trajectories (observations one row longer than actions): each
    trajectory's rows, `terminals` 1 at its last row, whose action (never stored by valorl, and
    discarded by OGBench's loader) is written as zeros."""
    parts: dict[str, list[np.ndarray]] = {}
    for traj in trajectories:
        rows = len(traj["observations"])
        actions = np.asarray(traj["actions"], np.float32)
        terminals = np.zeros(rows, bool)
        terminals[-1] = True
        fields = {
            "observations": np.asarray(traj["observations"], np.float32),
            "actions": np.concatenate([actions, np.zeros((1, *actions.shape[1:]), np.float32)]),
            "terminals": terminals,
            **{k: traj[k] for k in INFO_KEYS if k in traj},
        }
        for key, value in fields.items():
            parts.setdefault(key, []).append(value)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    for key in ("qpos", "qvel"):
        arrays[key] = arrays[key].astype(np.float32)
    if "button_states" in arrays:
        arrays["button_states"] = arrays["button_states"].astype(np.int64)
    return arrays


def save_layout(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write OGBench's arrays as a compressed `.npz` (as OGBench's own files are), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValorlError(f"{path}: OGBench datasets are .npz files")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_layout(arrays: dict[str, Any]) -> bool:
    """Whether `.npz` arrays are OGBench's layout (trajectories with `terminals`, no rewards)."""
    return {"observations", "actions", "terminals"} <= set(arrays) and "rewards" not in arrays


def from_layout(arrays: dict[str, np.ndarray], path: Path) -> Dataset:
    """A valorl `Dataset` of OGBench's arrays, the transitions OGBench's own loader makes
    (`ogbench.load_dataset`): every row but each trajectory's last, whose observation is the
    previous row's next observation. Trajectory ends are truncations; rewards are zero (OGBench's
    datasets have none)."""
    terminals = np.asarray(arrays["terminals"]).astype(bool)
    if len(terminals) < 2 or not terminals[-1]:
        raise ValorlError(f"{path}: an OGBench dataset's last row must end a trajectory")
    keep = ~terminals
    obs = np.asarray(arrays["observations"])
    timeouts = np.append(terminals[1:], True)[keep]
    rows = int(keep.sum())
    env_id = _env_from_name(path.stem)
    info = DatasetInfo(
        name=path.stem,
        source=str(path),
        env_id=env_id,
        env_spec_json=env_spec_json(env_id) if env_id else None,
    )
    try:
        return Dataset(
            observations=obs[keep],
            actions=np.asarray(arrays["actions"])[keep],
            rewards=np.zeros(rows, np.float32),
            next_observations=obs[np.append(False, keep[:-1])],
            terminals=np.zeros(rows, bool),
            timeouts=timeouts,
            info=info,
        )
    except ValorlError as exc:
        raise ValorlError(f"{path}: {exc}") from None


def _env_from_name(name: str) -> str | None:
    """OGBench's environment of a dataset file named as OGBench names them
    (`cube-double-play-v0` -> `cube-double-v0`; a size after the kind, as valorl's
    `scene-play-1m-v0`, is dropped), or None."""
    import gymnasium as gym

    parts = name.split("-")
    if len(parts) > 3 and re.fullmatch(r"\d+[km]?", parts[-2]):
        parts = parts[:-2] + parts[-1:]
    if len(parts) < 3 or not is_ogbench(name):
        return None
    env_id = "-".join(parts[:-2] + parts[-1:])
    prepare()
    return env_id if env_id in gym.registry else None


# ---------------------------------------------------------------------------------------------
# Oracle goal representations


def oracle_representation(
    env_id: str, qpos: np.ndarray, button_states: np.ndarray | None = None
) -> np.ndarray:
    """OGBench's `oraclerep` goals (what its `*-oraclerep-v0` datasets add, and DQC's goals):
    the task-relevant state only. Cubes: their positions, centred on (0.425, 0, 0) and scaled
    by 10; scene: those, the button states, the drawer position × 18 and the window's × 15;
    puzzle: the button states. One row per row of `qpos`."""
    qpos = np.asarray(qpos, np.float64)
    kind = env_id.split("-")[0]
    buttons = 0 if button_states is None else np.asarray(button_states).shape[1]
    if kind == "puzzle":
        if button_states is None:
            raise ValorlError("puzzle goals are button states, but none were given")
        return np.asarray(button_states, np.float32)
    if kind not in ("cube", "scene"):
        raise ValorlError(f"{env_id!r} is not an OGBench manipulation environment")
    extra = buttons + 2 if kind == "scene" else 0
    cubes = (qpos.shape[1] - OBJECTS_START - extra) // CUBE_QPOS
    parts = [
        (qpos[:, OBJECTS_START + i * CUBE_QPOS : OBJECTS_START + i * CUBE_QPOS + 3] - CENTRE) * 10.0
        for i in range(cubes)
    ]
    if kind == "scene":
        drawer = OBJECTS_START + CUBE_QPOS * cubes + buttons
        parts += [
            np.asarray(button_states, np.float64),
            qpos[:, drawer : drawer + 1] * 18.0,
            qpos[:, drawer + 1 : drawer + 2] * 15.0,
        ]
    return np.concatenate(parts, axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Single-task rewards


@dataclasses.dataclass(frozen=True)
class TaskGoal:
    """The goal of one OGBench single-task environment."""

    cubes: np.ndarray  # (cubes, 3) target positions; (0, 3) in puzzle
    buttons: np.ndarray | None  # (buttons,) target states, scene and puzzle
    drawer: float | None  # target drawer position, scene
    window: float | None  # target window position, scene

    @property
    def subtasks(self) -> int:
        buttons = 0 if self.buttons is None else len(self.buttons)
        return len(self.cubes) + buttons + (self.drawer is not None) + (self.window is not None)


def task_env_id(env_id: str, task: int) -> str:
    """`cube-double-v0`, 2 -> `cube-double-singletask-task2-v0`."""
    stem, _, version = env_id.rpartition("-")
    return f"{stem}-singletask-task{task}-{version}"


def task_goal(env_id: str, task: int) -> TaskGoal:
    """The goal of task `task` (1-5) of an OGBench manipulation environment, read from its
    single-task environment after a reset, where OGBench's relabelling reads it."""
    import gymnasium as gym

    prepare()
    name = task_env_id(env_id, task)
    try:
        env = gym.make(name)
    except gym.error.Error as exc:
        raise ValorlError(f"no OGBench single-task environment {name!r}: {exc}") from None
    try:
        env.reset(seed=0)
        u = env.unwrapped
        cubes = np.asarray(u._data.mocap_pos, np.float64)[: getattr(u, "_num_cubes", 0)]
        buttons = getattr(u, "_target_button_states", None)
        return TaskGoal(
            cubes=cubes.reshape(-1, 3),
            buttons=None if buttons is None else np.asarray(buttons).copy(),
            drawer=_float(getattr(u, "_target_drawer_pos", None)),
            window=_float(getattr(u, "_target_window_pos", None)),
        )
    finally:
        env.close()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def subtask_successes(
    goal: TaskGoal, qpos: np.ndarray, button_states: np.ndarray | None
) -> np.ndarray:
    """(rows, subtasks) booleans: which of the goal's subtasks each row's state solves. Order:
    cubes, buttons, drawer, window."""
    columns = []
    for i, target in enumerate(goal.cubes):
        start = OBJECTS_START + i * CUBE_QPOS
        columns.append(np.linalg.norm(qpos[:, start : start + 3] - target, axis=-1) <= TOLERANCE)
    if goal.buttons is not None:
        if button_states is None:
            raise ValorlError("this task has button goals but the data has no button_states")
        columns.extend(goal.buttons[:, None] == np.asarray(button_states).T)
    drawer_index = OBJECTS_START + CUBE_QPOS * len(goal.cubes)
    drawer_index += 0 if goal.buttons is None else len(goal.buttons)
    for offset, target in enumerate((goal.drawer, goal.window)):
        if target is not None:
            columns.append(np.abs(qpos[:, drawer_index + offset] - target) <= TOLERANCE)
    return np.stack(columns, axis=-1)


def presses_to_goal(
    button_states: np.ndarray, target: np.ndarray, rows: int, cols: int
) -> np.ndarray:
    """(n,) the fewest button presses that turn each of n puzzle states (n, rows·cols) of
    on/off buttons into `target`: a press toggles its button and the four next to it ("Lights
    Out", OGBench's puzzle-RxC). Which presses is a linear system over GF(2) (presses commute
    and two cancel), so each state's distance is the lightest press set whose toggles equal
    its difference from the target, found here by enumerating all 2^(rows·cols) press sets
    (at most 20 buttons); `rows·cols + 1` where none does (grids such as 4x4 have such
    states). A diagnostic of how far a critic's values reach back from the goal."""
    buttons = rows * cols
    states = np.asarray(button_states)
    if states.ndim != 2 or states.shape[1] != buttons or np.asarray(target).shape != (buttons,):
        raise ValorlError(f"puzzle states must be (n, {buttons}) with a ({buttons},) target")
    if buttons > 20:
        raise ValorlError(f"press distances enumerate 2^buttons press sets: {buttons} is too many")
    toggles = np.zeros(buttons, np.int64)  # bitmask of the buttons each press flips
    for i in range(buttons):
        r, c = divmod(i, cols)
        for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            if 0 <= r + dr < rows and 0 <= c + dc < cols:
                toggles[i] |= 1 << ((r + dr) * cols + c + dc)
    flipped, weight = np.zeros(1, np.int64), np.zeros(1, np.int64)
    for i in range(buttons):  # every press set, built up one button at a time
        flipped = np.concatenate([flipped, flipped ^ toggles[i]])
        weight = np.concatenate([weight, weight + 1])
    fewest = np.full(1 << buttons, buttons + 1, np.int64)
    np.minimum.at(fewest, flipped, weight)
    differ = states != np.asarray(target)
    return fewest[differ.astype(np.int64) @ (1 << np.arange(buttons, dtype=np.int64))]


def task_rewards(successes: np.ndarray, sparse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, solved) from subtask successes: dense reward #solved − #subtasks, or with
    `sparse` −1 until all are solved; reward 0 and `solved` where every subtask is solved."""
    solved = successes.all(axis=-1)
    if sparse:
        return (solved.astype(np.float32) - 1.0), solved
    return (successes.sum(axis=-1) - successes.shape[-1]).astype(np.float32), solved


_SINGLE_TASK = re.compile(
    r"^(?:.*/)?(?P<base>.+)-singletask-task(?P<task>\d+)(?P<sparse>-sparse)?-(?P<v>v\d+)$"
)


def single_task_name(name: str) -> tuple[str, int, bool] | None:
    """(base dataset, task, sparse) of a single-task dataset's name, `X-singletask-taskN-v0`
    or `X-singletask-taskN-sparse-v0` (any namespace dropped), or None for another name."""
    match = _SINGLE_TASK.match(name)
    if match is None:
        return None
    return f"{match['base']}-{match['v']}", int(match["task"]), match["sparse"] is not None


def sparse_task(name: str) -> bool:
    """Whether a dataset is the sparse variant of an OGBench single-task dataset
    (`X-singletask-taskN-sparse-v0`), whose rewards are not its environment's."""
    parsed = single_task_name(name)
    return parsed is not None and parsed[2]


def sparse_rewards(env_rewards: np.ndarray) -> np.ndarray:
    """The sparse variant's rewards from its single-task environment's own, #solved −
    #subtasks: 0 where every subtask is solved, −1 elsewhere (`task_rewards`' sparse ones)."""
    return np.where(np.asarray(env_rewards) < 0, -1.0, 0.0).astype(np.float32)


def relabel(
    dataset: Dataset,
    trajectories: list[dict[str, np.ndarray]],
    goal: TaskGoal,
    info: DatasetInfo,
    sparse: bool = False,
) -> Dataset:
    """`dataset` (the transitions of `trajectories`, in order) with the task's rewards, and
    rows that solve it marked terminal (OGBench's mask 0)."""
    qpos, buttons = transition_states(trajectories, len(dataset), info.name)
    rewards, solved = task_rewards(subtask_successes(goal, qpos, buttons), sparse)
    return dataclasses.replace(dataset, rewards=rewards, terminals=solved, info=info)


def transition_states(
    trajectories: list[dict[str, np.ndarray]], rows: int, name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The simulator state (qpos, and button states where there are buttons) of each of the
    `rows` transitions of `trajectories` (every observation but each trajectory's last)."""
    qpos = np.concatenate([t["qpos"][:-1] for t in trajectories])
    buttons = None
    if "button_states" in trajectories[0]:
        buttons = np.concatenate([t["button_states"][:-1] for t in trajectories])
    if len(qpos) != rows:
        raise ValorlError(f"{name}: {len(qpos)} simulator states for {rows} transitions")
    return qpos, buttons


def oracle_goals(dataset: Dataset) -> np.ndarray:
    """The oracle goal representation (`oracle_representation`) of every transition of an
    OGBench dataset written by the zoo (its Minari directory, `dataset.info.source`, keeps the
    simulator states), as OGBench's `*-oraclerep-v0` datasets hold them."""
    env_id = dataset.info.env_id
    if not is_ogbench(env_id, dataset.info.env_spec_json):
        raise ValorlError(
            f"oracle goals need an OGBench dataset; {dataset.info.name!r} names environment "
            f"{env_id!r}"
        )
    trajectories = minari_trajectories(dataset.info.source)
    qpos, buttons = transition_states(trajectories, len(dataset), dataset.info.name)
    return oracle_representation(env_id, qpos, buttons)
