"""The gridworlds of Young et al. (ICML 2023): dynamics and rewards by hand on small built
states, spontaneous events at a forced probability, mazes connected, observations that rebuild
the state, scan-equals-step, the id registry and Gymnasium registration, and DQN on a gridworld
through the compiled loop."""

from __future__ import annotations

import collections

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

import valorl.envs  # noqa: F401  (registers the JAX environments with Gymnasium)
from valorl.envs.gridworlds import (
    ButtonGrid,
    ButtonState,
    MazeState,
    PanFlute,
    ProcMaze,
    carve_maze,
    gridworld,
)
from valorl.envs.gymnax_envs import is_jax_env, make_jax_env
from valorl.envs.jax_env import auto_reset
from valorl.errors import ValorlError

NOOP, UP, LEFT, DOWN, RIGHT = range(5)
KEY = jax.random.key(0)
T0 = jnp.zeros((), jnp.int32)


def run(env, state, actions, key=KEY):
    """Step `state` through `actions` (jitted), returning the rewards, terminations and states."""
    step = jax.jit(env.step)
    rewards, terminals, states = [], [], []
    for i, a in enumerate(actions):
        _, state, r, term, _ = step(jax.random.fold_in(key, i), state, jnp.int32(a))
        rewards.append(float(r))
        terminals.append(bool(term))
        states.append(state)
    return rewards, terminals, states


# ---- ProcMaze --------------------------------------------------------------------------------


def maze(pos, goal, spontaneous=0.0):
    #   . # .
    #   . # .      goal at (0, 2), walls in the middle column except the bottom
    #   . . .
    walls = jnp.array([[0, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    env = ProcMaze(grid_size=3, spontaneous=spontaneous)
    return env, MazeState(jnp.array(pos, jnp.int32), jnp.array(goal, jnp.int32), walls, T0)


def test_procmaze_walls_and_edges_block_and_the_step_out_of_the_goal_terminates():
    env, state = maze((0, 0), (0, 2))
    rewards, terminals, states = run(env, state, [RIGHT, UP, LEFT, DOWN, DOWN, RIGHT, RIGHT])
    positions = [tuple(np.asarray(s.pos).tolist()) for s in states]
    # right: wall; up, left: off the grid; then down, down, right, right along the open cells
    assert positions == [(0, 0), (0, 0), (0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert rewards == [-1.0] * 7 and not any(terminals)
    rewards, terminals, states = run(env, states[-1], [UP, UP, NOOP])
    # reaching the goal does not end the episode: the step taken from it does
    assert [tuple(np.asarray(s.pos).tolist()) for s in states[:2]] == [(1, 2), (0, 2)]
    assert terminals == [False, False, True] and rewards == [-1.0] * 3


def test_procmaze_observation_channels_and_the_papers_spontaneous_probability():
    env, state = maze((2, 1), (0, 2))
    planes = np.asarray(env.observe(state)).reshape(3, 3, 4)
    assert planes[..., 0].sum() == 1 and planes[2, 1, 0] == 1  # player
    assert planes[..., 1].sum() == 1 and planes[0, 2, 1] == 1  # goal
    np.testing.assert_array_equal(planes[..., 2], np.asarray(state.walls))
    np.testing.assert_array_equal(planes[..., 3], 1 - np.asarray(state.walls))
    # a tenth of the worst-case solve time: g = 4 -> 0.1 / (5 * 2 - 0), g = 5 -> 0.1 / (6 * 3 - 1)
    assert ProcMaze(4).spontaneous_p == pytest.approx(0.01)
    assert ProcMaze(5).spontaneous_p == pytest.approx(0.1 / 17)


def test_procmaze_spontaneous_teleport_onto_the_goal():
    env, state = maze((2, 0), (0, 2), spontaneous=1.0)
    _, terminals, states = run(env, state, [NOOP, NOOP])
    assert tuple(np.asarray(states[0].pos).tolist()) == (0, 2)
    assert terminals == [False, True]


def _reachable(walls: np.ndarray, start: tuple[int, int]) -> set[tuple[int, int]]:
    g = walls.shape[0]
    seen, queue = {start}, collections.deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (r + dr, c + dc)
            if 0 <= n[0] < g and 0 <= n[1] < g and not walls[n] and n not in seen:
                seen.add(n)
                queue.append(n)
    return seen


@pytest.mark.parametrize("grid_size", [4, 7, 10])
def test_mazes_are_connected_trees_and_player_and_goal_are_open(grid_size):
    env = ProcMaze(grid_size)
    keys = jax.random.split(jax.random.key(grid_size), 32)
    _, states = jax.jit(jax.vmap(env.reset))(keys)
    walls_all = np.asarray(states.walls)
    for walls, pos, goal in zip(
        walls_all, np.asarray(states.pos), np.asarray(states.goal), strict=True
    ):
        open_cells = {tuple(c) for c in np.argwhere(~walls)}
        assert len(open_cells) > 1
        assert _reachable(walls, tuple(pos)) == open_cells  # every open cell reachable
        assert not walls[tuple(pos)] and not walls[tuple(goal)]
        edges = sum((r + 1, c) in open_cells for r, c in open_cells) + sum(
            (r, c + 1) in open_cells for r, c in open_cells
        )
        assert edges == len(open_cells) - 1  # a tree: depth-first carving makes no loops
    assert len({w.tobytes() for w in walls_all}) > 1  # a new maze per episode
    assert carve_maze(jax.random.key(1), grid_size).shape == (grid_size, grid_size)


# ---- ButtonGrid ------------------------------------------------------------------------------


def buttons(pos, cells, on, spontaneous=0.0):
    env = ButtonGrid(grid_size=3, num_buttons=len(cells), spontaneous=spontaneous)
    flat = jnp.array([r * 3 + c for r, c in cells], jnp.int32)
    return env, ButtonState(jnp.array(pos, jnp.int32), flat, jnp.array(on, bool), T0)


def test_buttongrid_toggles_a_button_when_stepped_on_and_not_when_standing_still():
    env, state = buttons((0, 0), [(0, 1), (2, 2)], [False, False])
    rewards, terminals, states = run(env, state, [RIGHT, NOOP, UP, LEFT, RIGHT])
    on = [np.asarray(s.on).tolist() for s in states]
    # onto (0,1): on; no-op and a blocked move (up) do not toggle; off and back on: off
    assert on == [[True, False], [True, False], [True, False], [True, False], [False, False]]
    assert rewards == [0.0] * 5 and not any(terminals)


def test_buttongrid_rewards_the_step_after_all_are_on_then_lays_out_anew():
    env, state = buttons((2, 1), [(0, 1), (2, 2)], [True, False])
    rewards, terminals, states = run(env, state, [RIGHT, NOOP])
    assert np.asarray(states[0].on).all() and rewards == [0.0, 1.0] and terminals == [False] * 2
    fresh = states[1]
    assert not np.asarray(fresh.on).any()  # a new layout, every button off
    assert len(set(np.asarray(fresh.buttons).tolist())) == 2
    planes = np.asarray(env.observe(fresh)).reshape(3, 3, 3)
    assert planes[..., 0].sum() == 1 and planes[..., 1].sum() == 0 and planes[..., 2].sum() == 2


def test_buttongrid_spontaneous_all_on():
    env, state = buttons((1, 1), [(0, 0), (2, 2)], [False, False], spontaneous=1.0)
    rewards, _, states = run(env, state, [NOOP, NOOP])
    assert np.asarray(states[0].on).all() and rewards == [0.0, 1.0]
    assert ButtonGrid(4).spontaneous_p == pytest.approx(1 / 160)


# ---- PanFlute --------------------------------------------------------------------------------


def test_panflute_pushes_shift_along_the_pipes():
    env = PanFlute(num_pipes=3, spontaneous=0.0)
    obs, state = env.reset(KEY)
    assert obs.tolist() == [0, 0, 0, 0, 0, 0]  # pipes of 1, 2, 3 cells
    _, _, states = run(env, state, [2, 1])
    # push into pipe 2 -> its first cell; next step it moves on and pipe 1 gets its push
    assert np.asarray(states[0].cells).astype(int).tolist() == [0, 0, 0, 1, 0, 0]
    assert np.asarray(states[1].cells).astype(int).tolist() == [0, 1, 0, 0, 1, 0]


@pytest.mark.parametrize(
    ("actions", "rewards"),
    [
        ([2, 1, 0, 0], [0.0, 0.0, 0.0, 1.0]),  # the timed sequence: longest pipe first
        ([0, 1, 2, 0], [0.0] * 4),  # the wrong order
        ([2, 0, 0, 0], [0.0] * 4),  # pipe 1 skipped
    ],
)
def test_panflute_rewards_only_the_timed_sequence(actions, rewards):
    env = PanFlute(num_pipes=3, spontaneous=0.0)
    got, terminals, _ = run(env, env.reset(KEY)[1], actions)
    assert got == rewards and not any(terminals)


def test_panflute_spontaneous_ends_are_rewarded_the_next_step():
    env = PanFlute(num_pipes=3, spontaneous=1.0)
    rewards, _, states = run(env, env.reset(KEY)[1], [0, 1])
    assert np.asarray(states[0].cells)[[0, 2, 5]].all() and rewards == [0.0, 1.0]
    assert PanFlute(5).spontaneous_p == pytest.approx(0.04)


# ---- every gridworld ---------------------------------------------------------------------------

ENVS = [ProcMaze(4), ButtonGrid(4), PanFlute(4)]


@pytest.mark.parametrize("env", ENVS, ids=lambda e: e.id)
def test_the_observation_rebuilds_the_state_the_true_dynamics_step_from(env):
    keys = jax.random.split(jax.random.key(5), 40)
    actions = jax.random.randint(jax.random.key(6), (40,), 0, env.num_actions)
    obs, state = env.reset(KEY)

    @jax.jit
    def check(key, state, obs, action):
        rebuilt = env.state_from_obs(obs)
        same_obs = jnp.all(env.observe(rebuilt) == obs)
        a = env.step(key, state, action)
        b = env.step(key, rebuilt, action)
        same_step = jnp.all(a[0] == b[0]) & (a[2] == b[2]) & (a[3] == b[3])
        _, next_obs, next_state = auto_reset(env, key, state, obs, action)
        return same_obs & same_step, next_obs, next_state

    for k, a in zip(keys, actions, strict=True):
        ok, obs, state = check(k, state, obs, a)
        assert bool(ok)


@pytest.mark.parametrize(
    "env",
    [ENVS[0], *(pytest.param(env, marks=pytest.mark.expensive) for env in ENVS[1:])],
    ids=lambda e: e.id,
)  # ProcMaze's mazes are the involved case; the others in make test-all
def test_stepping_inside_a_scan_equals_one_call_at_a_time(env):
    steps = 120  # crosses the truncation at 100 steps
    actions = jax.random.randint(jax.random.key(1), (steps,), 0, env.num_actions)
    keys = jax.random.split(jax.random.key(2), steps)
    obs, state = env.reset(KEY)

    def body(carry, inputs):
        t, obs, state = auto_reset(env, *inputs[:1], carry[1], carry[0], inputs[1])
        return (obs, state), t

    scanned = jax.jit(lambda: jax.lax.scan(body, (obs, state), (keys, actions))[1])()
    step = jax.jit(lambda k, s, o, a: auto_reset(env, k, s, o, a))
    rows = []
    for k, a in zip(keys, actions, strict=True):
        t, obs, state = step(k, state, obs, a)
        rows.append(t)
    for name in ("observations", "rewards", "next_observations", "terminated", "truncated"):
        got = np.stack([np.asarray(getattr(t, name)) for t in rows])
        np.testing.assert_array_equal(np.asarray(getattr(scanned, name)), got)
    assert np.asarray(scanned.truncated).any() or np.asarray(scanned.terminated).any()
    assert scanned.observations.dtype == np.uint8


@pytest.mark.parametrize("env", [ProcMaze(4, spontaneous=0.0), ButtonGrid(4, 3), PanFlute(3)])
def test_evaluation_truncates_at_100_steps_and_training_never(env):
    """The paper evaluates over 100 steps and trains without a time limit."""
    for world, truncated_at in ((env, 100), (env.for_training(), None)):
        assert world.id == env.id
        _, state = world.reset(KEY)
        step = jax.jit(world.step)
        truncations = []
        for t in range(150):
            _, state, _, terminated, truncated = step(jax.random.fold_in(KEY, t), state, NOOP)
            assert not terminated  # standing still never reaches a maze's goal
            truncations.append(bool(truncated))
        expected = [truncated_at is not None and t + 1 >= truncated_at for t in range(150)]
        assert truncations == expected


def test_ids_name_the_gridworlds_and_gymnasium_steps_them():
    for env in [*ENVS, ProcMaze(), ButtonGrid(5, 2), PanFlute(), ProcMaze(4, spontaneous=0.5)]:
        assert gridworld(env.id) == env and is_jax_env(env.id)
        assert make_jax_env(env.id) == env
    assert ProcMaze().id == "ProcMaze-v0" and ButtonGrid(5, 2).id == "ButtonGrid-5x5-2buttons-v0"
    assert not is_jax_env("ProcMaze-v1")
    with pytest.raises(ValorlError, match="sticky"):
        make_jax_env("PanFlute-v0", 0.1)
    with pytest.raises(ValorlError, match="square"):
        gridworld("ProcMaze-4x5-v0")
    env = gym.make("ProcMaze-4x4-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64,) and obs.dtype == np.uint8 and env.action_space.n == 5
    _, reward, terminated, truncated, _ = env.step(0)
    assert reward == -1.0 and isinstance(terminated, bool) and isinstance(truncated, bool)


@pytest.mark.parametrize("training", [False, True])
def test_gymnasium_steps_the_training_world_without_the_time_limit(training):
    """`--host-loop` trains in `gym.make(id, training=True)`: PanFlute never ends there, where
    evaluation's world truncates at step 100."""
    env = gym.make("PanFlute-v0", training=training)
    env.reset(seed=0)
    truncations = [env.step(0)[3] for _ in range(100)]
    assert truncations == [False] * 99 + [not training]


def test_dqn_trains_on_a_gridworld_in_the_compiled_loop(tmp_path):
    import valorl
    from valorl.training.restore import load_progress
    from valorl.training.run_dir import RunDir

    path = tmp_path / "run"
    result = valorl.train_online(
        "dqn", mode="online", env="PanFlute-3pipes-v0", online_steps=400, start_steps=100,
        log_every=200, eval_every=400, eval_episodes=2, seeds=2, utd=0.25,
        eps_decay_steps=200, target_update_every=20, progress=False, out=path, **TINY["dqn"],
    )  # fmt: skip
    run = RunDir(path)
    assert run.config()["data"]["env_id"] == "PanFlute-3pipes-v0"
    assert [r["step"] for r in run.metrics()] == [200, 400]
    progress = load_progress(path)
    assert progress.online.env_carry is not None  # the environments stepped on the device
    np.testing.assert_array_equal(progress.online.buffers.size, [400, 400])
    # training has no time limit: the continuing PanFlute is one unending episode per seed
    assert run.metrics()[-1]["rollout/episode_return"] == [None, None]
    assert not np.asarray(progress.online.buffers.data.dones).any()
    # an evaluation episode is 100 steps; the reward needs at least 3 steps per success
    assert result.returns.shape == (2, 1, 2)
    assert ((result.returns >= 0) & (result.returns <= 34)).all()


@pytest.mark.expensive  # 15 s; the host loop of JAX envs: test_compiled_loop.py
def test_the_host_loop_steps_a_gridworld_of_an_unregistered_size(tmp_path):
    """`--host-loop` makes the run's environment with Gymnasium: a size not registered on
    import ("ButtonGrid-3x3-v0") is registered when the run needs it, and it trains, as the
    compiled loop, without the time limit (no episode ends in 200 steps)."""
    import valorl
    from valorl.training.run_dir import RunDir

    result = valorl.train_online(
        "dqn", mode="online", env="ButtonGrid-3x3-v0", host_loop=True, online_steps=200,
        start_steps=100, log_every=100, eval_every=200, eval_episodes=1, utd=0.25,
        progress=False, out=tmp_path / "run", **TINY["dqn"],
    )  # fmt: skip
    assert result.returns.shape == (1, 1, 1) and "ButtonGrid-3x3-v0" in gym.registry
    assert [r["rollout/episode_return"] for r in RunDir(tmp_path / "run").metrics()] == [[None]] * 2
