"""OGBench datasets: generation by its oracles (deterministic by seed, and independent of the
CPU's numerical kernels in a zoo build), the round trip through OGBench's own loader, single-task
relabelling by hand and against OGBench's, and the zoo's single-task names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from valorl.data import ogbench as og
from valorl.data.checksum import checksum
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.sources import load_dataset
from valorl.errors import ValorlError
from valorl.zoo import ogbench_data, ogbench_tasks
from valorl.zoo.ogbench_data import generate, pinned_kernel_env, save_trajectories
from valorl.zoo.ogbench_export import export

STEPS = 40  # rows per test trajectory (OGBench's are 1001)


@pytest.fixture(scope="module")
def trajectories():
    return generate("cube-single-v0", "play", 2, seed=3, episode_steps=STEPS, progress=False)


def test_generation_is_deterministic_by_seed(trajectories):
    again = generate("cube-single-v0", "play", 2, seed=3, episode_steps=STEPS, progress=False)
    other = generate("cube-single-v0", "play", 1, seed=4, episode_steps=STEPS, progress=False)
    for a, b in zip(trajectories, again, strict=True):
        for key in ("observations", "actions", "qpos", "qvel"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(trajectories[0].observations, other[0].observations)
    first = trajectories[0]
    assert first.observations.shape == (STEPS, 28) and first.actions.shape == (STEPS, 5)
    assert first.qpos.shape[0] == STEPS and first.button_states is None
    assert np.abs(first.actions).max() <= 1.0
    # each row's qpos is the state of its observation: the cube's position, as OGBench
    # encodes it in the observation ((xyz - (0.425, 0, 0)) * 10 at entries 19:22)
    cube = (first.qpos[:, 14:17] - np.array([0.425, 0.0, 0.0])) * 10.0
    np.testing.assert_allclose(first.observations[:, 19:22], cube, atol=1e-5)


def test_noisy_generation_is_deterministic_too():
    a = generate("puzzle-3x3-v0", "noisy", 1, seed=0, episode_steps=20, progress=False)
    b = generate("puzzle-3x3-v0", "noisy", 1, seed=0, episode_steps=20, progress=False)
    np.testing.assert_array_equal(a[0].actions, b[0].actions)
    assert a[0].button_states.shape == (20, 9)


def test_the_pinned_environment_fixes_openblas_and_numpy_simd():
    environ = {"OPENBLAS_CORETYPE": "Sandybridge", "KEEP": "1"}
    env = pinned_kernel_env(environ)
    assert environ == {"OPENBLAS_CORETYPE": "Sandybridge", "KEEP": "1"}  # a copy is changed
    assert env["KEEP"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    if ogbench_data.avx2_fma_cpu():
        assert env["OPENBLAS_CORETYPE"] == ogbench_data.PINNED_OPENBLAS_CORE == "Haswell"
        disabled = env["NPY_DISABLE_CPU_FEATURES"].split()
        assert disabled and all(f.startswith(("AVX512", "X86_V4")) for f in disabled)


@pytest.mark.expensive  # four child processes, about 45 s: `make test-all`
@pytest.mark.skipif(
    not ogbench_data.avx2_fma_cpu(), reason="the pinned kernels need an x86-64 CPU with AVX2"
)
def test_a_zoo_build_does_not_depend_on_the_cpus_blas_kernel(tmp_path, monkeypatch):
    """OGBench's controller solves its inverse kinematics with OpenBLAS, whose kernel is chosen
    per CPU: a different kernel (here forced with OPENBLAS_CORETYPE) changes the data of an
    unpinned process, and not those of the pinned child a zoo build runs in."""
    arguments = dict(env_id="cube-single-v0", kind="noisy", episodes=1, seed=0, episode_steps=120)
    arguments |= dict(dataset_id="valorl/tiny-noisy-v0", metadata={}, progress=False)

    def pinned(name: str) -> str:
        ogbench_data.write_dataset_pinned(**arguments, out=tmp_path / name)
        return checksum(tmp_path / name)

    def unpinned(name: str, coretype: str) -> str:
        child = json.dumps(arguments | dict(out=str(tmp_path / name)))
        env = os.environ | {"OPENBLAS_CORETYPE": coretype}
        command = [sys.executable, "-m", "valorl.zoo.ogbench_data", child, str(os.getpid())]
        subprocess.run(command, env=env, check=True)
        return checksum(tmp_path / name)

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Sandybridge")
    under_another_kernel = pinned("a")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert pinned("b") == under_another_kernel
    assert unpinned("c", "Sandybridge") != unpinned("d", "Haswell")  # the kernel does matter


def test_round_trip_through_ogbench_loader(trajectories, tmp_path):
    import ogbench

    path = save_trajectories(trajectories, "cube-single-v0", "valorl/tiny-v0", tmp_path / "ds")
    ours = load_dataset(path)
    assert len(ours) == 2 * (STEPS - 1) and ours.timeouts.sum() == 2 and not ours.terminals.any()
    train, val = export(str(path), tmp_path / "cube-single-play-v0.npz")
    assert val.is_file()
    with np.load(train) as f:
        layout = {k: f[k] for k in f.files}
    assert set(layout) == {"observations", "actions", "terminals", "qpos", "qvel"}
    np.testing.assert_array_equal(layout["terminals"].nonzero()[0], [STEPS - 1, 2 * STEPS - 1])
    np.testing.assert_array_equal(layout["qpos"], np.concatenate([t.qpos for t in trajectories]))

    env, theirs, _ = ogbench.make_env_and_datasets(
        "cube-single-play-singletask-task2-v0", dataset_path=str(train)
    )
    env.close()
    for key in ("observations", "actions", "next_observations"):
        np.testing.assert_array_equal(theirs[key], getattr(ours, key))
    np.testing.assert_array_equal(theirs["terminals"].astype(bool), ours.dones)
    # OGBench's single-task relabelling of the same rows equals valorl's
    goal = og.task_goal("cube-single-v0", 2)
    relabelled = og.relabel(ours, og.minari_trajectories(path), goal, ours.info)
    np.testing.assert_array_equal(theirs["rewards"], relabelled.rewards)
    np.testing.assert_array_equal(theirs["masks"], relabelled.masks)
    # and OGBench's file reads back into valorl unchanged
    back = load_dataset(train)
    for key in ("observations", "actions", "next_observations", "rewards", "terminals"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ours, key))
    np.testing.assert_array_equal(back.timeouts, ours.timeouts)
    assert back.info.env_id == "cube-single-v0"
    sized = tmp_path / "cube-single-play-1m-v0.npz"  # a zoo build's size in the name
    sized.write_bytes(train.read_bytes())
    assert load_dataset(sized).info.env_id == "cube-single-v0"
    # the oracle goals of the stored states are OGBench's (its add_oracle_reps)
    env, reps, _ = ogbench.make_env_and_datasets(
        "cube-single-play-oraclerep-v0", dataset_path=str(train)
    )
    env.close()
    np.testing.assert_allclose(og.oracle_goals(ours), reps["oracle_reps"], atol=1e-6)


def test_singletask_rewards_by_hand():
    # two cubes: cube 0 must reach (0.4, 0, 0.02), cube 1 (0.5, 0.1, 0.02)
    goal = og.TaskGoal(
        cubes=np.array([[0.4, 0.0, 0.02], [0.5, 0.1, 0.02]]), buttons=None, drawer=None, window=None
    )
    qpos = np.zeros((3, 28))
    qpos[:, 14:17] = [[0.4, 0.0, 0.02], [0.43, 0.0, 0.02], [0.45, 0.0, 0.02]]  # 0, 3, 5 cm away
    qpos[:, 21:24] = [[0.0, 0.0, 0.0], [0.5, 0.1, 0.05], [0.5, 0.1, 0.02]]  # far, 3 cm, there
    successes = og.subtask_successes(goal, qpos, None)
    np.testing.assert_array_equal(successes, [[True, False], [True, True], [False, True]])
    rewards, solved = og.task_rewards(successes)
    np.testing.assert_array_equal(rewards, [-1.0, 0.0, -1.0])
    np.testing.assert_array_equal(solved, [False, True, False])
    sparse, _ = og.task_rewards(successes, sparse=True)
    np.testing.assert_array_equal(sparse, [-1.0, 0.0, -1.0])
    # scene: one cube, two buttons, drawer (qpos 14+7+2=23) and window (24)
    scene = og.TaskGoal(
        cubes=np.array([[0.4, 0.0, 0.02]]), buttons=np.array([1, 0]), drawer=-0.1, window=0.2
    )
    qpos = np.zeros((2, 25))
    qpos[:, 14:17] = [0.4, 0.0, 0.02]
    qpos[:, 23] = [-0.1, -0.15]  # drawer at its goal, then 5 cm off
    qpos[:, 24] = [0.0, 0.17]  # window off, then 3 cm from its goal
    buttons = np.array([[1, 1], [1, 0]])
    successes = og.subtask_successes(scene, qpos, buttons)
    np.testing.assert_array_equal(
        successes, [[True, True, False, True, False], [True, True, True, False, True]]
    )
    dense, _ = og.task_rewards(successes)
    np.testing.assert_array_equal(dense, [-2.0, -1.0])
    sparse, solved = og.task_rewards(successes, sparse=True)
    np.testing.assert_array_equal(sparse, [-1.0, -1.0])
    assert not solved.any() and scene.subtasks == 5


def test_the_sparse_reward_follows_from_the_environments_own():
    """What the on-policy check plays in the single-task environment (reward #solved −
    #subtasks) gives the sparse variant's rewards, as relabelling them from successes does."""
    successes = np.random.default_rng(0).random((200, 4)) < 0.8
    dense, _ = og.task_rewards(successes)
    sparse, _ = og.task_rewards(successes, sparse=True)
    np.testing.assert_array_equal(og.sparse_rewards(dense), sparse)
    assert 0 < (sparse == 0).sum() < 200  # both kinds of rows occur
    assert og.sparse_task("puzzle-3x3-play-singletask-task4-sparse-v0")
    assert not og.sparse_task("puzzle-3x3-play-singletask-task4-v0")
    assert not og.sparse_task("valorl/cube-double-play-v0")
    assert og.sparse_task("valorl/scene-play-1m-singletask-task2-sparse-v0")


def test_single_task_name_grammar():
    assert og.single_task_name("valorl/scene-play-1m-singletask-task2-sparse-v0") == (
        "scene-play-1m-v0",
        2,
        True,
    )
    assert og.single_task_name("cube-double-play-singletask-task5-v1") == (
        "cube-double-play-v1",
        5,
        False,
    )
    assert og.single_task_name("cube-double-play-v0") is None
    assert og.single_task_name("cube-double-play-singletask-taskx-v0") is None


def test_press_distances_on_lights_out_by_hand():
    target = np.zeros(9, int)
    corner = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0])  # pressing button 0 flips it, 1 and 3
    centre = np.array([0, 1, 0, 1, 1, 1, 0, 1, 0])
    every = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1])  # all nine pressed: corners and centre flip
    states = np.stack([target, corner, centre, corner ^ centre, every])
    assert og.presses_to_goal(states, target, 3, 3).tolist() == [0, 1, 1, 2, 9]
    # OGBench's puzzle-3x3 task 4: the checkerboard to all-on is that farthest state
    checker = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0])
    assert og.presses_to_goal(checker[None], np.ones(9, int), 3, 3).tolist() == [9]
    # 3x3 presses are invertible: each state has one press set, so distances are binomial
    every_state = (np.arange(512)[:, None] >> np.arange(9)) & 1
    counts = np.bincount(og.presses_to_goal(every_state, target, 3, 3))
    assert counts.tolist() == [1, 9, 36, 84, 126, 126, 84, 36, 9, 1]


def test_press_distances_on_a_singular_grid():
    # 4x4 Lights Out has a 4-dimensional kernel (Anderson & Feil 1998): 2^12 states are
    # reachable, each by 16 press sets, and the others are marked one past every button
    every_state = (np.arange(1 << 16)[:, None] >> np.arange(16)) & 1
    distances = og.presses_to_goal(every_state, np.zeros(16, int), 4, 4)
    assert (distances <= 16).sum() == 1 << 12 and set(distances[distances > 16]) == {17}
    far_corners = np.zeros(16, int)
    far_corners[[0, 1, 4, 11, 14, 15]] = 1  # buttons 0 and 15 pressed: their flips are apart
    assert og.presses_to_goal(far_corners[None], np.zeros(16, int), 4, 4).tolist() == [2]
    with pytest.raises(ValorlError, match="too many"):
        og.presses_to_goal(np.zeros((1, 25), int), np.zeros(25, int), 5, 5)
    with pytest.raises(ValorlError, match=r"\(n, 9\)"):
        og.presses_to_goal(np.zeros((1, 8), int), np.zeros(9, int), 3, 3)


def test_relabel_marks_solved_rows_terminal():
    goal = og.TaskGoal(cubes=np.zeros((0, 3)), buttons=np.array([1, 1]), drawer=None, window=None)
    buttons = np.array([[0, 0], [1, 0], [1, 1], [1, 1]])  # 4 observations: 3 transitions
    traj = {"qpos": np.zeros((4, 16)), "button_states": buttons}
    obs = np.arange(4, dtype=np.float32)[:, None]
    data = Dataset(
        observations=obs[:-1],
        actions=np.zeros((3, 1)),
        rewards=np.zeros(3),
        next_observations=obs[1:],
        terminals=np.zeros(3, bool),
        timeouts=np.array([False, False, True]),
    )
    dense = og.relabel(data, [traj], goal, DatasetInfo(name="t"))
    np.testing.assert_array_equal(dense.rewards, [-2.0, -1.0, 0.0])
    np.testing.assert_array_equal(dense.masks, [1.0, 1.0, 0.0])
    sparse = og.relabel(data, [traj], goal, DatasetInfo(name="t"), sparse=True)
    np.testing.assert_array_equal(sparse.rewards, [-1.0, -1.0, 0.0])


def test_oracle_representation_by_hand():
    qpos = np.zeros((1, 25))
    qpos[0, 14:17] = [0.525, -0.1, 0.02]  # cube: 10 x (xyz - (0.425, 0, 0))
    qpos[0, 23:25] = [-0.1, 0.2]  # drawer, window (after the cube's 7 and 2 buttons)
    scene = og.oracle_representation("scene-v0", qpos, np.array([[1, 0]]))
    np.testing.assert_allclose(scene, [[1.0, -1.0, 0.2, 1.0, 0.0, -1.8, 3.0]], atol=1e-6)
    double = np.zeros((1, 28))
    double[0, 14:17], double[0, 21:24] = [0.425, 0.0, 0.0], [0.325, 0.1, 0.1]
    np.testing.assert_allclose(
        og.oracle_representation("cube-double-v0", double), [[0, 0, 0, -1, 1, 1]], atol=1e-6
    )
    puzzle = og.oracle_representation("puzzle-3x3-v0", np.zeros((1, 23)), np.ones((1, 9)))
    np.testing.assert_array_equal(puzzle, np.ones((1, 9), np.float32))


def test_singletask_names():
    base, task, sparse = ogbench_tasks.parse("cube-double-play-singletask-task2-sparse-v0")
    assert (base.name, task, sparse) == ("cube-double-play-v0", 2, True)
    base, task, sparse = ogbench_tasks.parse("valorl/scene-play-singletask-task5-v0")
    assert (base.name, task, sparse) == ("scene-play-v0", 5, False)
    assert ogbench_tasks.parse("scene-play-singletask-task6-v0") is None
    assert ogbench_tasks.parse("other/scene-play-singletask-task2-v0") is None  # not valorl's
    assert ogbench_tasks.parse("hopper-medium-singletask-task1-v0") is None  # not OGBench's
    names = ogbench_tasks.variant_names(base)
    assert len(names) == 10 and "scene-play-singletask-task1-sparse-v0" in names
    assert og.task_env_id("scene-v0", 3) == "scene-singletask-task3-v0"


def test_unknown_environment_is_a_one_line_error():
    with pytest.raises(ValorlError, match="not an OGBench manipulation"):
        generate("antmaze-large-navigate-v0", "play", 1, seed=0)
    with pytest.raises(ValorlError, match="play, noisy"):
        generate("cube-single-v0", "expert", 1, seed=0)


def test_datasets_info_describes_a_single_task_variant_without_building_it(capsys):
    from valorl.cli.main import main

    assert main(["datasets", "info", "puzzle-3x3-play-singletask-task4-sparse-v0"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["singletask"] == {
        "base": "puzzle-3x3-play-v0",
        "task": 4,
        "reward": "sparse (-1 until solved, 0 then)",
        "eval_env": "puzzle-3x3-singletask-task4-v0",
    }
    assert shown["recipe"]["status"] == "not built"


def test_a_build_child_exits_once_its_parent_is_gone():
    """The generating child's watcher: a pid that is still its parent is not gone, another is;
    once it is gone, the watcher exits with status ORPHANED."""
    assert not ogbench_data.orphaned(os.getppid())
    assert ogbench_data.orphaned(os.getppid() + 1)
    exits: list[int] = []
    watcher = ogbench_data.exit_with_parent(os.getppid() + 1, poll_s=0.01, on_orphaned=exits.append)
    watcher.join(timeout=5)
    assert not watcher.is_alive() and exits == [ogbench_data.ORPHANED]


PARENT = """
import json, sys
from valorl.zoo.ogbench_data import write_dataset_pinned
write_dataset_pinned(**json.loads(sys.argv[1]))
"""


def _state(pid: int) -> str:
    """The process's state letter from /proc ('Z': exited, not yet reaped), '' when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.expensive  # ~20 s: two processes import valorl; the watcher is tested above
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_killing_a_build_stops_its_child_and_writes_nothing(tmp_path):
    """`kill -9` on a build's process used to leave its child generating for up to an hour."""
    out = tmp_path / "cube-single-play-v0"
    arguments = dict(
        env_id="cube-single-v0",
        kind="play",
        episodes=100,
        seed=0,
        dataset_id="cube-single-play-v0",
        out=str(out),
        metadata={},
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, json.dumps(arguments)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    child = None
    try:
        assert _wait_for(lambda: children.read_text().split(), timeout=120)
        child = int(children.read_text().split()[0])
        parent.kill()
        parent.wait()
        assert _wait_for(lambda: _state(child) in ("", "Z"), timeout=120)
    finally:
        parent.kill()
        if child is not None and _state(child) not in ("", "Z"):
            os.kill(child, signal.SIGKILL)
    assert not out.exists()
