"""OGBench manipulation datasets generated here, with the scripted oracles that the `ogbench`
package ships (Park et al., "OGBench: Benchmarking Offline Goal-Conditioned RL", ICLR 2025).

OGBench publishes 1M-transition datasets made by its driver script
(`data_gen_scripts/generate_manipspace.py`, only in its repository); this module follows that
procedure step for step, with its own code, so that the datasets can be rebuilt without a
download and at any size:

- the environment is made with `terminate_at_goal=False, mode='data_collection'` and a time
  limit of 1001 steps: every trajectory is 1001 rows, whose last row only marks the end (its
  action has no recorded successor; OGBench's loader drops it, leaving 1000 transitions);
- 'play' data: the non-Markovian `PlanOracle`s (action noise 0.1, noise smoothing 0.5);
  'noisy' data: the closed-loop `MarkovOracle`s (min_norm 0.4) plus Gaussian noise whose scale
  ξ ~ U(0, 0.1) is drawn per episode (×1, ×1, ×1, ×3, ×10 per action dimension), and a
  uniformly random action with probability 0.1 (cube, scene) or 0.2 (puzzle);
- the oracle is picked by the environment's `privileged/target_task`; when it reports done,
  `set_new_target(p_stack=...)` sets the next target (p_stack ~ U(0, 0.25) per episode for
  cube-double, 0 for cube-single, 0.5 otherwise);
- scene episodes that push the cube out of view are discarded and redrawn (OGBench's health
  check).

Unlike the published script (which never seeds), a build is deterministic: numpy's global
generator (used by the oracles) is seeded and restored afterwards, the environment is seeded on
its first reset, and random actions come from a generator of their own (OGBench samples them
from the action space, which its environments rebuild, unseeded, at every access). A zoo build
is also the same on different CPUs: it runs in a child process whose numerical kernels are
fixed (`pinned_kernel_env`), since OGBench's controller solves its inverse kinematics with
NumPy's linear algebra, whose OpenBLAS kernels are chosen per CPU, and their last-bit
differences grow through the contact dynamics into different trajectories. OGBench
also writes a validation file of `episodes // 10` further episodes; valorl's datasets hold the
training episodes only (see `valorl.zoo.ogbench_export`).

A trajectory is stored as a Minari episode: the 1001 observations, the first 1000 actions, zero
rewards (OGBench's datasets have none: single-task rewards and goal rewards are relabelled, see
`valorl.data.ogbench`), a truncation at the end, and the per-observation `qpos`, `qvel` and (scene,
puzzle) `button_states` in the episode's `infos`, one row per observation. The action of the
1001st row is not kept (nothing follows it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "disable")  # state observations: no renderer needed

KINDS = ("play", "noisy")
EPISODE_STEPS = 1001
"""Rows per OGBench trajectory (1000 transitions and a final observation)."""
DOMAINS = ("cube", "scene", "puzzle")
P_RANDOM_ACTION = {"cube": 0.1, "scene": 0.1, "puzzle": 0.2}
"""Probability of a uniformly random action in 'noisy' data, per domain (OGBench's README)."""
NOISE = 0.1
NOISE_SMOOTHING = 0.5
MIN_NORM = 0.4
INFO_KEYS = ("qpos", "qvel", "button_states")
PINNED_OPENBLAS_CORE = "Haswell"
"""OpenBLAS's kernel for builds on x86-64 CPUs with AVX2 and FMA (every such CPU can run it)."""


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One OGBench trajectory in OGBench's own rows: row t is observation t and the action taken
    there (the last row's action is kept here, though nothing follows it)."""

    observations: np.ndarray  # (T, obs_dim) float32
    actions: np.ndarray  # (T, 5) float32
    qpos: np.ndarray  # (T, nq) float32
    qvel: np.ndarray  # (T, nv) float32
    button_states: np.ndarray | None  # (T, buttons) int64, scene and puzzle only

    def infos(self) -> dict[str, np.ndarray]:
        found = {"qpos": self.qpos, "qvel": self.qvel, "button_states": self.button_states}
        return {k: v for k, v in found.items() if v is not None}

    def minari_episode(self) -> dict[str, np.ndarray]:
        """The trajectory as a Minari episode (observations one row longer than actions)."""
        steps = len(self.observations) - 1
        truncations = np.zeros(steps, bool)
        truncations[-1] = True
        return dict(
            observations=self.observations,
            actions=self.actions[:-1],
            rewards=np.zeros(steps, np.float32),
            terminations=np.zeros(steps, bool),
            truncations=truncations,
        )


def domain(env_name: str) -> str:
    """'cube', 'scene' or 'puzzle' for an OGBench manipulation environment id."""
    for name in DOMAINS:
        if env_name.startswith(name) or env_name.startswith(f"visual-{name}"):
            return name
    from valorl.errors import ValorlError

    raise ValorlError(
        f"{env_name!r} is not an OGBench manipulation environment (cube-*, scene-*, puzzle-*); "
        "only those can be generated locally"
    )


def p_stack(env_name: str, rng: Any) -> float:
    """Per-episode probability of stacking the target cube on another (OGBench's schedule)."""
    if "single" in env_name:
        return 0.0
    ranges = {"double": (0.0, 0.25), "triple": (0.05, 0.35), "quadruple": (0.1, 0.5)}
    ranges["octuple"] = (0.0, 0.35)
    for size, (low, high) in ranges.items():
        if size in env_name:
            return float(rng.uniform(low, high))
    return 0.5


def _oracles(env: Any, where: str, kind: str) -> dict[str, Any]:
    """The scripted oracle of each target task of the domain, as OGBench's driver sets them."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    if kind == "play":
        plan = dict(env=env, noise=NOISE, noise_smoothing=NOISE_SMOOTHING)
        table = {
            "cube": {"cube": CubePlanOracle(**plan)},
            "scene": {
                "cube": CubePlanOracle(**plan),
                "button": ButtonPlanOracle(**plan),
                "drawer": DrawerPlanOracle(**plan),
                "window": WindowPlanOracle(**plan),
            },
            "puzzle": {"button": ButtonPlanOracle(gripper_always_closed=True, **plan)},
        }
    else:
        markov = dict(env=env, min_norm=MIN_NORM)
        table = {
            "cube": {"cube": CubeMarkovOracle(**markov)},
            "scene": {
                "cube": CubeMarkovOracle(max_step=100, **markov),
                "button": ButtonMarkovOracle(**markov),
                "drawer": DrawerMarkovOracle(**markov),
                "window": WindowMarkovOracle(**markov),
            },
            "puzzle": {"button": ButtonMarkovOracle(gripper_always_closed=True, **markov)},
        }
    return table[where]


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for the block (the oracles draw from it), then restored."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def make_collection_env(env_name: str, episode_steps: int = EPISODE_STEPS) -> Any:
    """OGBench's environment in data-collection mode (random targets, no termination)."""
    import gymnasium as gym
    import ogbench.manipspace  # noqa: F401  (registers the environments)

    return gym.make(
        env_name,
        terminate_at_goal=False,
        mode="data_collection",
        max_episode_steps=episode_steps,
    )


def generate(
    env_name: str,
    kind: str,
    episodes: int,
    seed: int,
    *,
    episode_steps: int = EPISODE_STEPS,
    progress: bool = True,
) -> list[Trajectory]:
    """`episodes` trajectories of `kind` ('play' or 'noisy') data in `env_name` (e.g.
    'cube-double-v0'), each `episode_steps` rows (1001 in OGBench); the same for the same
    arguments."""
    from tqdm import tqdm

    from valorl.errors import ValorlError

    if kind not in KINDS:
        raise ValorlError(f"OGBench data kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if episode_steps < 2 or episodes < 1:
        raise ValorlError("OGBench generation needs at least 1 episode of at least 2 steps")
    where = domain(env_name)
    env = make_collection_env(env_name, episode_steps)
    out: list[Trajectory] = []
    try:
        with _global_numpy_seed(seed):
            random_actions = np.random.default_rng([seed, 1])
            oracles = _oracles(env, where, kind)
            first = True
            bar = tqdm(total=episodes, desc=f"{env_name} {kind}", unit="ep", disable=not progress)
            with bar:
                while len(out) < episodes:
                    reset_seed, first = (seed if first else None), False
                    trajectory = _episode(
                        env, env_name, where, kind, oracles, random_actions, reset_seed
                    )
                    if where == "scene" and not _scene_healthy(trajectory.qpos):
                        continue  # OGBench redraws episodes that lose sight of the cube
                    out.append(trajectory)
                    bar.update()
    finally:
        env.close()
    return out


def _episode(
    env: Any,
    env_name: str,
    where: str,
    kind: str,
    oracles: dict[str, Any],
    random_actions: np.random.Generator,
    reset_seed: int | None,
) -> Trajectory:
    """One trajectory, drawing from numpy's global generator in OGBench's driver's order."""
    ob, info = env.reset(seed=reset_seed)
    stack = p_stack(env_name, np.random)
    xi = np.random.uniform(0, NOISE) if kind == "noisy" else 0.0
    noise_scale = np.array([xi, xi, xi, 3 * xi, 10 * xi])
    p_random = P_RANDOM_ACTION[where] if kind == "noisy" else 0.0
    oracle = oracles[info["privileged/target_task"]]
    oracle.reset(ob, info)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "actions", *INFO_KEYS)}
    done = False
    while not done:
        if np.random.rand() < p_random:
            action = random_actions.uniform(-1.0, 1.0, 5).astype(np.float32)
        else:
            action = np.array(oracle.select_action(ob, info))
            if kind == "noisy":
                action = action + np.random.normal(0, noise_scale, action.shape)
        action = np.clip(action, -1, 1)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if oracle.done:
            target_ob, target_info = env.unwrapped.set_new_target(p_stack=stack)
            oracle = oracles[target_info["privileged/target_task"]]
            oracle.reset(target_ob, target_info)
        rows["observations"].append(ob)
        rows["actions"].append(action)
        rows["qpos"].append(info["prev_qpos"])
        rows["qvel"].append(info["prev_qvel"])
        if "prev_button_states" in info:
            rows["button_states"].append(info["prev_button_states"])
        ob = next_ob
    return Trajectory(
        observations=np.asarray(rows["observations"], np.float32),
        actions=np.asarray(rows["actions"], np.float32),
        qpos=np.asarray(rows["qpos"], np.float32),
        qvel=np.asarray(rows["qvel"], np.float32),
        button_states=(
            np.asarray(rows["button_states"], np.int64) if rows["button_states"] else None
        ),
    )


def _scene_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube never goes too far right, nor too far left outside the
    drawer (its height then not that of the drawer's floor)."""
    xyz = qpos[:, 14:17]
    too_right = (xyz[:, 1] >= 0.29).any()
    left_outside = ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()
    return not (too_right or left_outside)


def save_trajectories(
    trajectories: list[Trajectory],
    env_id: str,
    dataset_id: str,
    out: str | os.PathLike | None = None,
    **minari: Any,
) -> Path:
    """Write trajectories as a Minari dataset (one episode each, the simulator state in its
    `infos`) naming OGBench's environment `env_id`; `minari` goes to `save_minari`."""
    from valorl.data.dataset import Dataset, DatasetInfo
    from valorl.data.ogbench import env_spec_json
    from valorl.data.sources import save_minari

    info = DatasetInfo(name=dataset_id, env_id=env_id, env_spec_json=env_spec_json(env_id))
    dataset = Dataset.from_episodes([t.minari_episode() for t in trajectories], info)
    return save_minari(
        dataset, dataset_id, out, episode_infos=[t.infos() for t in trajectories], **minari
    )


def pinned_kernel_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`environ` with the CPU-dependent numerical kernels of a new process fixed: OpenBLAS's
    kernel set to `PINNED_OPENBLAS_CORE` and one thread, NumPy's own SIMD loops at most AVX2.

    On one machine, `OPENBLAS_CORETYPE=Sandybridge` changes a cube-single-noisy build, and a
    build on an AMD EPYC (OpenBLAS's Haswell kernels) differed from the one an Intel Xeon
    (AVX-512 kernels) had recorded. Both variables are read when NumPy loads, so they only act
    on a child process. CPUs without AVX2 and FMA keep their own kernels (and may not reproduce
    the recorded checksums)."""
    env = dict(environ)
    env["OPENBLAS_NUM_THREADS"] = "1"
    if platform.machine().lower() in ("x86_64", "amd64"):
        if avx2_fma_cpu():
            env["OPENBLAS_CORETYPE"] = PINNED_OPENBLAS_CORE
        simd = _numpy_simd()
        dispatched = simd.get("found", []) + simd.get("not found", [])
        beyond_avx2 = [f for f in dispatched if f.startswith(("AVX512", "X86_V4"))]
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(beyond_avx2)
    return env


def avx2_fma_cpu() -> bool:
    """Whether this is an x86-64 CPU with AVX2 and FMA, the kind the OGBench recipes' checksums
    are recorded for (x86-64-v3 includes both)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    simd = _numpy_simd()
    has = set(simd.get("baseline", [])) | set(simd.get("found", []))
    return "X86_V3" in has or {"AVX2", "FMA3"} <= has


@functools.cache
def _numpy_simd() -> dict[str, list[str]]:
    """NumPy's SIMD report from its public `show_config`: the extensions it was built to assume
    ("baseline"), those it dispatches to and this CPU has ("found") or lacks ("not found");
    asked once per process."""
    return np.show_config(mode="dicts").get("SIMD Extensions", {})


def write_dataset(
    env_id: str,
    kind: str,
    episodes: int,
    seed: int,
    dataset_id: str,
    out: str | os.PathLike,
    *,
    metadata: dict[str, Any],
    episode_steps: int = EPISODE_STEPS,
    progress: bool = True,
) -> None:
    """Generate a zoo recipe's trajectories and write them as the Minari dataset `out`."""
    trajectories = generate(
        env_id, kind, episodes, seed, episode_steps=episode_steps, progress=progress
    )
    save_trajectories(
        trajectories,
        env_id,
        dataset_id,
        out,
        algorithm_name=f"OGBench {kind} oracles (valorl datasets build)",
        description=f"{env_id}: OGBench '{kind}' data, {episodes} trajectories of "
        f"{episode_steps} steps (OGBench publishes 1000)",
        extra_metadata=metadata,
    )


def write_dataset_pinned(**arguments: Any) -> None:
    """`write_dataset(**arguments)` in a child process with `pinned_kernel_env`, so that the
    data do not depend on the CPU; its progress and errors print as they come."""
    from valorl.errors import ValorlError

    arguments["out"] = str(arguments["out"])
    command = [sys.executable, "-m", __name__, json.dumps(arguments), str(os.getpid())]
    done = subprocess.run(command, env=pinned_kernel_env(), check=False)
    if done.returncode != 0:
        raise ValorlError(
            f"generating {arguments['dataset_id']} failed in its child process (exit status "
            f"{done.returncode}; its error is printed above)"
        )


ORPHANED = 3
"""The child's exit status when it stops because its parent is gone."""


def orphaned(parent: int) -> bool:
    """Whether pid `parent` is no longer this process's parent: it exited, and the process was
    handed to another (init, or a subreaper)."""
    return os.getppid() != parent


def exit_with_parent(
    parent: int, poll_s: float = 0.5, on_orphaned: Callable[[int], Any] = os._exit
) -> threading.Thread:
    """Exit this process (`on_orphaned(ORPHANED)`) as soon as its parent, pid `parent`, is gone.

    A parent stopped by `kill` (SIGTERM or SIGKILL) cannot stop its child, which would generate
    for up to an hour and write into a staging folder that no one moves into place; the child
    watches instead. The parent's pid comes from the parent itself: if it died before the
    child asked, `os.getppid()` already differs."""

    def watch() -> None:
        while not orphaned(parent):
            time.sleep(poll_s)
        on_orphaned(ORPHANED)

    watcher = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    watcher.start()
    return watcher


if __name__ == "__main__":  # the child process of `write_dataset_pinned`
    from valorl.errors import ValorlError

    exit_with_parent(int(sys.argv[2]))
    try:
        write_dataset(**json.loads(sys.argv[1]))
    except ValorlError as error:
        print(f"valorl: error: {error}", file=sys.stderr)
        sys.exit(2)
