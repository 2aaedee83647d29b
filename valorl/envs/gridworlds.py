"""The gridworlds of Young, Ramesh, Kirsch & Schmidhuber, "The Benefits of Model-Based
Generalization in Reinforcement Learning" (ICML 2023, Sec. 5 and App. C): ProcMaze, ButtonGrid
and PanFlute, as `JaxEnv`s that step inside the compiled loop.

All three have combinatorially many states with a factored structure that a learned model can
capture and a value function cannot easily generalise over, which is what the paper's
model-based-vs-replay comparison needs. Observations are the paper's flattened boolean grids
(one channel per object kind, height x width x channel order), stored as uint8 like MinAtar's
frames. Dynamics follow the authors' released code (kenjyoung/Model_Generalization_Code_
supplement, environments.py) exactly; the code here is valorl's own.

Moves (ProcMaze, ButtonGrid): 0 no-op, 1 up, 2 left, 3 down, 4 right; a move off the grid keeps
the player where it is.

- ProcMaze(grid_size=10): every episode carves a new maze by randomised depth-first search (a
  closed cell may be opened when exactly one of its four neighbours is open, so the open cells
  form a tree and every open cell is reachable); player and goal are drawn uniformly and
  independently from the open cells. Reward −1 on every step. The episode terminates on the
  step taken FROM the goal cell (the agent sees itself on the goal first). With probability
  p = 0.1 / ((g+1)·ceil(g/2) − g mod 2) per step (a tenth of the rate of solving the worst-case
  maze) the player is teleported onto the goal ("spontaneous" success). Channels: player, goal,
  wall, empty.
- ButtonGrid(grid_size=10, num_buttons=3): continuing. Buttons sit on distinct cells, all off
  at the start. Moving onto a button's cell toggles it (a no-op or a blocked move does not).
  The step after all buttons are on gives reward 1 and starts a new layout (new player and
  button positions, all off). With probability 1/(10·g²) per step all buttons switch on
  spontaneously. Channels: player, button on, button off.
- PanFlute(num_pipes=5): continuing. Pipe i has i+1 cells; every step each pipe shifts one cell
  towards its end, and its first cell becomes 1 if the action is i, else 0. The step taken
  while every pipe's last cell is 1 gives reward 1, which needs the timed sequence of actions
  n−1, n−2, ..., 0. With probability 1/n² per step every pipe's last cell is set to 1.
  Observation: the pipes' cells concatenated (n(n+1)/2 bits).

Episodes and truncation: the paper trains without time limits and evaluates over 100 steps
(the sum of rewards until termination for ProcMaze, the reward rate for the continuing two).
So does valorl: a gridworld truncates after `MAX_EPISODE_STEPS` = 100 steps, which makes an
evaluation episode exactly the paper's (a continuing environment's return is 100 times its
reward rate), and both training loops step `env.for_training()`, the same world without the
limit (ButtonGrid keeps its layout until it is solved, a ProcMaze episode lasts until the
goal): the compiled loop directly, the host loop (`--host-loop`) through
`gym.make(id, training=True)`. The continuing environments never terminate.

`state_from_obs(obs)` rebuilds the environment's state from an observation alone (every one of
these observations is a complete description of the state), so the true dynamics can be
stepped from any observation; the perfect-model agent does this (the paper's "perfect model"
steps the simulator from replayed states). The step counter of the rebuilt state is 0.

Ids: "ProcMaze-v0", "ButtonGrid-v0", "PanFlute-v0" are the paper's default sizes; other sizes
read "ProcMaze-4x4-v0", "ButtonGrid-4x4-2buttons-v0", "PanFlute-3pipes-v0", and a spontaneous
probability other than the paper's adds "-p0.5" before "-v0" (`gridworld(env_id)` parses an id,
`env.id` writes it).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from valorl.errors import ValorlError

MAX_EPISODE_STEPS = 100
"""Steps after which a gridworld episode is truncated (the paper's evaluation length)."""
GRIDWORLDS = ("ProcMaze-v0", "ButtonGrid-v0", "PanFlute-v0")
"""The gridworlds at the paper's default sizes."""
PAPER_SMALL = ("ProcMaze-4x4-v0", "ButtonGrid-4x4-v0")
"""Smaller sizes used in the paper's experiments (its configs: ProcMaze grid 4); registered with
Gymnasium beside the defaults (PanFlute's default, 5 pipes, is already the paper's)."""

MOVES = np.array([[0, 0], [-1, 0], [0, -1], [1, 0], [0, 1]], np.int32)
"""Row/column change of actions 0 no-op, 1 up, 2 left, 3 down, 4 right."""


def _coin(key: jax.Array, p: float) -> jax.Array:
    return jax.random.uniform(key) < p


def _check_probability(p: float | None) -> None:
    if p is not None and not 0.0 <= p <= 1.0:
        raise ValorlError(f"a spontaneous-event probability must be in [0, 1], got {p}")


def _suffix(p: float | None) -> str:
    return "" if p is None else f"-p{p!r}"


@dataclasses.dataclass(frozen=True)
class GridWorld:
    """What every gridworld shares: uint8 flat observations, no sticky actions, the time limit,
    and the probability of its spontaneous event (`spontaneous`; None: the paper's)."""

    obs_dtype: ClassVar[Any] = jnp.uint8
    max_episode_steps: ClassVar[int] = MAX_EPISODE_STEPS
    frames: ClassVar[bool] = True
    """Boolean observations (stored as uint8 in {0, 1}), as MinAtar's frames."""
    sticky_actions: ClassVar[float] = 0.0
    """The paper's environments have none."""
    time_limited: bool = dataclasses.field(default=True, kw_only=True)
    """Truncate episodes after `max_episode_steps` (evaluation); off in training."""

    def for_training(self) -> GridWorld:
        """The world as the paper trains in it: no time limit."""
        return dataclasses.replace(self, time_limited=False)

    def _truncation(self, time: jax.Array, terminated: jax.Array) -> tuple[jax.Array, jax.Array]:
        time = time + 1
        return time, (time >= MAX_EPISODE_STEPS) & ~terminated & self.time_limited

    @property
    def spontaneous_p(self) -> float:
        p = getattr(self, "spontaneous", None)
        return self.paper_spontaneous_p if p is None else float(p)

    @property
    def paper_spontaneous_p(self) -> float:
        raise NotImplementedError


# ---- ProcMaze --------------------------------------------------------------------------------


@flax.struct.dataclass
class MazeState:
    pos: jax.Array
    """(2,) int32 row, column of the player."""
    goal: jax.Array
    """(2,) int32 row, column of the goal."""
    walls: jax.Array
    """(g, g) bool."""
    time: jax.Array


def _neighbour_table(g: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat index of each cell's up/left/down/right neighbour (clipped) and whether it is on
    the grid: two (g·g, 4) arrays."""
    rows, cols = np.divmod(np.arange(g * g), g)
    r = rows[:, None] + MOVES[1:, 0]
    c = cols[:, None] + MOVES[1:, 1]
    on_grid = (r >= 0) & (r < g) & (c >= 0) & (c < g)
    return np.clip(r, 0, g - 1) * g + np.clip(c, 0, g - 1), on_grid


def carve_maze(key: jax.Array, g: int) -> jax.Array:
    """A random depth-first-search maze: (g, g) bool walls.

    From a uniform start cell, a stack walks the grid: the top cell opens a uniformly chosen
    closed neighbour that touches no other open cell and pushes it, or is popped when it has
    none. The open cells form a tree (each opened next to exactly one open cell), hence are all
    connected. One `lax.while_loop` of at most 2·g² iterations (each cell is pushed and popped
    once)."""
    n = g * g
    neighbours, on_grid = (jnp.asarray(a) for a in _neighbour_table(g))
    start_key, walk_key = jax.random.split(key)
    start = jax.random.randint(start_key, (), 0, n)
    opened = jnp.zeros(n, bool).at[start].set(True)
    stack = jnp.zeros(n, jnp.int32).at[0].set(start)

    def body(carry):
        opened, stack, top, key = carry
        key, pick_key = jax.random.split(key)
        cell = stack[top - 1]
        candidates = neighbours[cell]  # (4,)
        open_around = (opened[neighbours[candidates]] & on_grid[candidates]).sum(-1)
        can_open = on_grid[cell] & ~opened[candidates] & (open_around == 1)
        choice = jax.random.categorical(pick_key, jnp.where(can_open, 0.0, -jnp.inf))
        chosen = candidates[choice]
        grow = can_open.any()
        opened = jnp.where(grow, opened.at[chosen].set(True), opened)
        stack = jnp.where(grow, stack.at[top].set(chosen), stack)
        return opened, stack, jnp.where(grow, top + 1, top - 1), key

    opened = jax.lax.while_loop(lambda c: c[2] > 0, body, (opened, stack, 1, walk_key))[0]
    return ~opened.reshape(g, g)


@dataclasses.dataclass(frozen=True)
class ProcMaze(GridWorld):
    """A new random maze every episode; reach the goal (module docstring)."""

    grid_size: int = 10
    spontaneous: float | None = None
    """Probability per step of being teleported onto the goal; None: the paper's."""

    num_actions: ClassVar[int] = 5
    channels: ClassVar[int] = 4  # player, goal, wall, empty

    def __post_init__(self) -> None:
        if self.grid_size < 2:
            raise ValorlError(f"a ProcMaze needs a grid of at least 2x2, got {self.grid_size}")
        _check_probability(self.spontaneous)

    @property
    def id(self) -> str:
        g = self.grid_size
        size = "" if g == 10 else f"-{g}x{g}"
        return f"ProcMaze{size}{_suffix(self.spontaneous)}-v0"

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.grid_size * self.grid_size * self.channels,)

    @property
    def paper_spontaneous_p(self) -> float:
        g = self.grid_size
        return 0.1 / ((g + 1) * math.ceil(g / 2) - g % 2)

    def observe(self, state: MazeState) -> jax.Array:
        g = self.grid_size
        player = jnp.zeros((g, g), bool).at[state.pos[0], state.pos[1]].set(True)
        goal = jnp.zeros((g, g), bool).at[state.goal[0], state.goal[1]].set(True)
        planes = jnp.stack([player, goal, state.walls, ~state.walls], axis=-1)
        return planes.reshape(-1).astype(jnp.uint8)

    def state_from_obs(self, obs: jax.Array) -> MazeState:
        g = self.grid_size
        planes = obs.reshape(g * g, self.channels)
        cell = lambda c: jnp.stack(jnp.divmod(jnp.argmax(planes[:, c]), g)).astype(jnp.int32)
        walls = planes[:, 2].astype(bool).reshape(g, g)
        return MazeState(cell(0), cell(1), walls, jnp.zeros((), jnp.int32))

    def reset(self, key: jax.Array) -> tuple[jax.Array, MazeState]:
        g = self.grid_size
        maze_key, pos_key, goal_key = jax.random.split(key, 3)
        walls = carve_maze(maze_key, g)
        logits = jnp.where(walls.reshape(-1), -jnp.inf, 0.0)
        draw = lambda k: jnp.stack(jnp.divmod(jax.random.categorical(k, logits), g))
        state = MazeState(
            draw(pos_key).astype(jnp.int32),
            draw(goal_key).astype(jnp.int32),
            walls,
            jnp.zeros((), jnp.int32),
        )
        return self.observe(state), state

    def step(self, key: jax.Array, state: MazeState, action: jax.Array):
        g = self.grid_size
        terminated = jnp.all(state.pos == state.goal)  # the step out of the goal ends it
        target = jnp.clip(state.pos + jnp.asarray(MOVES)[action], 0, g - 1)
        pos = jnp.where(state.walls[target[0], target[1]], state.pos, target)
        pos = jnp.where(_coin(key, self.spontaneous_p), state.goal, pos)
        time, truncated = self._truncation(state.time, terminated)
        state = state.replace(pos=pos.astype(jnp.int32), time=time)
        return self.observe(state), state, jnp.float32(-1.0), terminated, truncated


# ---- ButtonGrid ------------------------------------------------------------------------------


@flax.struct.dataclass
class ButtonState:
    pos: jax.Array
    """(2,) int32 row, column of the player."""
    buttons: jax.Array
    """(num_buttons,) int32 flat cell index of each button (distinct)."""
    on: jax.Array
    """(num_buttons,) bool."""
    time: jax.Array


@dataclasses.dataclass(frozen=True)
class ButtonGrid(GridWorld):
    """Switch every button on, continuing (module docstring)."""

    grid_size: int = 10
    num_buttons: int = 3
    spontaneous: float | None = None
    """Probability per step of every button switching on; None: the paper's."""

    num_actions: ClassVar[int] = 5
    channels: ClassVar[int] = 3  # player, button on, button off

    def __post_init__(self) -> None:
        if self.grid_size < 1 or not 1 <= self.num_buttons <= self.grid_size**2:
            raise ValorlError(
                f"a ButtonGrid needs 1 to {self.grid_size**2} buttons on a grid of at least "
                f"1x1, got {self.num_buttons} on {self.grid_size}x{self.grid_size}"
            )
        _check_probability(self.spontaneous)

    @property
    def id(self) -> str:
        g, b = self.grid_size, self.num_buttons
        size = "" if g == 10 else f"-{g}x{g}"
        buttons = "" if b == 3 else f"-{b}buttons"
        return f"ButtonGrid{size}{buttons}{_suffix(self.spontaneous)}-v0"

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.grid_size * self.grid_size * self.channels,)

    @property
    def paper_spontaneous_p(self) -> float:
        return 1.0 / (10 * self.grid_size**2)

    def observe(self, state: ButtonState) -> jax.Array:
        g = self.grid_size
        player = jnp.zeros(g * g, bool).at[state.pos[0] * g + state.pos[1]].set(True)
        on = jnp.zeros(g * g, bool).at[state.buttons].set(state.on)
        off = jnp.zeros(g * g, bool).at[state.buttons].set(~state.on)
        return jnp.stack([player, on, off], axis=-1).reshape(-1).astype(jnp.uint8)

    def state_from_obs(self, obs: jax.Array) -> ButtonState:
        g = self.grid_size
        planes = obs.reshape(g * g, self.channels).astype(bool)
        pos = jnp.stack(jnp.divmod(jnp.argmax(planes[:, 0]), g)).astype(jnp.int32)
        buttons = jnp.nonzero(planes[:, 1] | planes[:, 2], size=self.num_buttons)[0]
        buttons = buttons.astype(jnp.int32)
        return ButtonState(pos, buttons, planes[buttons, 1], jnp.zeros((), jnp.int32))

    def _layout(self, key: jax.Array, time: jax.Array) -> ButtonState:
        g = self.grid_size
        pos_key, button_key = jax.random.split(key)
        pos = jax.random.randint(pos_key, (2,), 0, g, jnp.int32)
        buttons = jax.random.choice(button_key, g * g, (self.num_buttons,), replace=False)
        on = jnp.zeros(self.num_buttons, bool)
        return ButtonState(pos, buttons.astype(jnp.int32), on, time)

    def reset(self, key: jax.Array) -> tuple[jax.Array, ButtonState]:
        state = self._layout(key, jnp.zeros((), jnp.int32))
        return self.observe(state), state

    def step(self, key: jax.Array, state: ButtonState, action: jax.Array):
        g = self.grid_size
        coin_key, layout_key = jax.random.split(key)
        success = state.on.all()  # rewarded the step after all are on
        pos = jnp.clip(state.pos + jnp.asarray(MOVES)[action], 0, g - 1).astype(jnp.int32)
        moved = jnp.any(pos != state.pos)
        on = state.on ^ (moved & (state.buttons == pos[0] * g + pos[1]))
        on = on | _coin(coin_key, self.spontaneous_p)
        time, truncated = self._truncation(state.time, jnp.bool_(False))
        moved_on = ButtonState(pos, state.buttons, on, time)
        fresh = self._layout(layout_key, time)
        state = jax.tree.map(lambda a, b: jnp.where(success, a, b), fresh, moved_on)
        reward = success.astype(jnp.float32)
        return self.observe(state), state, reward, jnp.bool_(False), truncated


# ---- PanFlute --------------------------------------------------------------------------------


@flax.struct.dataclass
class PipeState:
    cells: jax.Array
    """(n(n+1)/2,) bool: pipe 0's cell, pipe 1's two cells, ..., first cell of each first."""
    time: jax.Array


@dataclasses.dataclass(frozen=True)
class PanFlute(GridWorld):
    """Pipes of lengths 1..n shifted every step; fill every end at once (module docstring)."""

    num_pipes: int = 5
    spontaneous: float | None = None
    """Probability per step of every pipe's last cell becoming 1; None: the paper's."""

    def __post_init__(self) -> None:
        if self.num_pipes < 1:
            raise ValorlError(f"a PanFlute needs at least one pipe, got {self.num_pipes}")
        _check_probability(self.spontaneous)

    @property
    def id(self) -> str:
        pipes = "" if self.num_pipes == 5 else f"-{self.num_pipes}pipes"
        return f"PanFlute{pipes}{_suffix(self.spontaneous)}-v0"

    @property
    def num_actions(self) -> int:
        return self.num_pipes

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.num_pipes * (self.num_pipes + 1) // 2,)

    @property
    def paper_spontaneous_p(self) -> float:
        return 1.0 / self.num_pipes**2

    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per flat cell: its pipe, whether it is its pipe's first cell, whether its last."""
        pipe = np.concatenate([np.full(i + 1, i) for i in range(self.num_pipes)])
        first = np.concatenate([np.arange(i + 1) == 0 for i in range(self.num_pipes)])
        last = np.concatenate([np.arange(i + 1) == i for i in range(self.num_pipes)])
        return pipe, first, last

    def observe(self, state: PipeState) -> jax.Array:
        return state.cells.astype(jnp.uint8)

    def state_from_obs(self, obs: jax.Array) -> PipeState:
        return PipeState(obs.astype(bool), jnp.zeros((), jnp.int32))

    def reset(self, key: jax.Array) -> tuple[jax.Array, PipeState]:
        del key
        state = PipeState(jnp.zeros(self.obs_shape, bool), jnp.zeros((), jnp.int32))
        return self.observe(state), state

    def step(self, key: jax.Array, state: PipeState, action: jax.Array):
        pipe, first, last = self.layout()
        cells = state.cells
        reward = cells[last].all().astype(jnp.float32)
        shifted = jnp.concatenate([jnp.zeros(1, bool), cells[:-1]])  # each cell from the one before
        cells = jnp.where(first, pipe == action, shifted)
        cells = cells | (last & _coin(key, self.spontaneous_p))
        time, truncated = self._truncation(state.time, jnp.bool_(False))
        state = PipeState(cells, time)
        return self.observe(state), state, reward, jnp.bool_(False), truncated


# ---- ids -------------------------------------------------------------------------------------

_P = r"(?:-p(?P<p>[0-9.e+-]+?))?"
_PATTERNS = (
    (ProcMaze, re.compile(rf"ProcMaze(?:-(?P<g>\d+)x(?P<g2>\d+))?{_P}-v0")),
    (
        ButtonGrid,
        re.compile(rf"ButtonGrid(?:-(?P<g>\d+)x(?P<g2>\d+))?(?:-(?P<b>\d+)buttons)?{_P}-v0"),
    ),
    (PanFlute, re.compile(rf"PanFlute(?:-(?P<n>\d+)pipes)?{_P}-v0")),
)


def is_gridworld(env_id: str | None) -> bool:
    """Whether `env_id` names one of the gridworlds (at any size)."""
    return env_id is not None and any(p.fullmatch(env_id) for _, p in _PATTERNS)


def gridworld(env_id: str) -> ProcMaze | ButtonGrid | PanFlute:
    """The gridworld an id names (its inverse is `env.id`)."""
    for cls, pattern in _PATTERNS:
        m = pattern.fullmatch(env_id)
        if m is None:
            continue
        parts = m.groupdict()
        if parts.get("g") and parts["g"] != parts["g2"]:
            raise ValorlError(f"{env_id}: gridworlds are square, got {parts['g']}x{parts['g2']}")
        kwargs: dict[str, Any] = {}
        if parts.get("g"):
            kwargs["grid_size"] = int(parts["g"])
        if parts.get("b"):
            kwargs["num_buttons"] = int(parts["b"])
        if parts.get("n"):
            kwargs["num_pipes"] = int(parts["n"])
        if parts.get("p"):
            try:
                kwargs["spontaneous"] = float(parts["p"])
            except ValueError:
                raise ValorlError(f"{env_id}: bad spontaneous probability {parts['p']!r}") from None
        return cls(**kwargs)
    raise ValorlError(f"unknown gridworld {env_id!r}; choose from {', '.join(GRIDWORLDS)}")
