"""How far back from the goal a critic's values reach on OGBench's puzzle: Q on the data a run
trained on, by how many button presses each row's state is from the task's goal.

    python benchmarks/puzzle_values.py \
        runs/chunking-1m-100k/fql-n-puzzle-3x3-play-1m-singletask-task4-sparse-v0

OGBench's puzzle-RxC is "Lights Out": a press flips its button and the four next to it, so a
state's distance from the goal is the fewest presses that flip exactly the buttons that differ
(`valorl.data.ogbench.presses_to_goal`), not how many differ. Task 4 of puzzle-3x3 starts 9
presses away (every button once), the farthest any state can be. A critic that has backed the
goal's value up k presses tells states apart up to k presses and reads a floor beyond; a policy
that starts beyond that has nothing to climb. With the sparse reward (−1 per step until solved)
and γ 0.99, a state d steps from the goal is worth −100·(1 − 0.99^d).

Prints, per distance, the data's rows there, their mean Monte-Carlo return (the play data's,
which rarely reaches this goal), and each seed's mean Q at the data's actions (a chunk critic:
at its chunks, on the rows whose chunk is whole), with the task's start marked.

`--episodes N` also plays each seed's policy N episodes in the task's environment (chunks
open-loop, fresh noise at every decision) and prints how often it presses a button against the
data's rate, and its distance in presses at the start, at its closest and at the end: a policy
that presses rarely, or presses at random, shows there.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import jax
import numpy as np
from common import BenchmarkParser

from valorl.data.ogbench import (
    minari_trajectories,
    prepare,
    presses_to_goal,
    single_task_name,
    task_goal,
    transition_states,
)
from valorl.errors import ValorlError
from valorl.eval.policy import load_policy
from valorl.training.diagnostics import q_on_training_data
from valorl.training.run_dir import RunDir


def task_start(task_env: str) -> tuple[np.ndarray, int, int]:
    """The button states a single-task puzzle environment starts from, and its grid's rows and
    columns."""
    prepare()
    env = gym.make(task_env)
    try:
        env.reset(seed=0)
        u = env.unwrapped
        return np.asarray(u._cur_button_states).copy(), u._num_rows, u._num_cols
    finally:
        env.close()


def presses(buttons: np.ndarray) -> int:
    """How many steps of one episode's button states (steps + 1, buttons) change them."""
    return int((buttons[1:] != buttons[:-1]).any(axis=1).sum())


def play(run: str, env_id: str, goal: np.ndarray, rows: int, cols: int, episodes: int) -> None:
    """Each seed's policy for `episodes` episodes of the task: its presses, and its distance from
    the goal in presses at the start, at its closest and at the end."""
    policy = load_policy(run)
    env = gym.make(env_id)
    key = jax.random.key(0)
    print("| seed | episode | steps | presses | from the goal: start, closest, end | solved |")
    print("|---:|---:|---:|---:|---|---|")
    for seed_index in range(len(policy.seeds)):
        for episode in range(episodes):
            obs, _ = env.reset(seed=episode)
            states, queue, done, info = [env.unwrapped._cur_button_states.copy()], [], False, {}
            while not done:
                if not queue:
                    key, sub = jax.random.split(key)
                    action = policy(obs, seed_index=seed_index, key=sub)
                    queue = list(action) if action.ndim == 2 else [action]
                obs, _, terminated, truncated, info = env.step(queue.pop(0))
                states.append(env.unwrapped._cur_button_states.copy())
                done = terminated or truncated
            states = np.asarray(states)
            distance = presses_to_goal(states, goal, rows, cols)
            print(
                f"| {seed_index} | {episode} | {len(states) - 1} | {presses(states)} | "
                f"{distance[0]}, {distance.min()}, {distance[-1]} | {bool(info.get('success'))} |"
            )
    env.close()


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("runs", nargs="+", help="run directories trained on a puzzle task")
    parser.add_argument(
        "--episodes", type=int, default=0, help="episodes to play per seed (default: none)"
    )
    args = parser.parse_args()
    for run in args.runs:
        env_id = RunDir(run).config()["data"]["env_id"]  # puzzle-3x3-singletask-task4-v0
        parsed = single_task_name(env_id or "")
        if parsed is None or not parsed[0].startswith("puzzle"):
            raise ValorlError(f"{run} did not train on a single-task puzzle dataset")
        base_env, task, _ = parsed
        read = q_on_training_data(run)
        q, returns, counted, data = read.q, read.returns, read.counted, read.data
        goal = task_goal(base_env, task).buttons
        start, rows, cols = task_start(env_id)
        trajectories = minari_trajectories(data.info.source)
        _, buttons = transition_states(trajectories, len(data), data.info.name)
        data_presses = sum(presses(t["button_states"]) for t in trajectories)
        # one enumeration of the press sets for the start and every row
        distances = presses_to_goal(np.vstack([start, buttons]), goal, rows, cols)
        start_distance, distance = int(distances[0]), distances[1:]
        seeds = q.shape[0]
        print(f"\n{run} at step {read.step}: task {task} starts {start_distance} presses away")
        print(f"the data press a button every {len(data) / data_presses:.1f} steps")
        columns = "".join(f" Q seed {i} |" for i in range(seeds))
        print(f"| presses | rows | MC return |{columns}")
        print("|---:|---:|---:|" + "---:|" * seeds)
        for d in range(rows * cols + 1):
            at = counted & (distance == d)
            if not at.any():
                continue
            mark = " (start)" if d == start_distance else ""
            cells = " | ".join(f"{x:.1f}" for x in q[:, at].mean(axis=1))
            print(f"| {d}{mark} | {at.sum()} | {returns[at].mean():.1f} | {cells} |")
        if args.episodes:
            play(run, env_id, goal, rows, cols, args.episodes)


if __name__ == "__main__":
    try:
        main()
    except ValorlError as exc:
        sys.exit(f"error: {exc}")
