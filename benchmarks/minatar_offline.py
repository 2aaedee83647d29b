"""Offline RL on the MinAtar zoo: BC, discrete CQL, discrete IQL and DQN on medium and mixed data.

    python benchmarks/minatar_offline.py --out runs/minatar-offline            # BENCHMARKS.md
    python benchmarks/minatar_offline.py --out runs/minatar-offline --steps 2000  # a quick look

Builds the zoo datasets it needs (`valorl/<game>-minatar-{medium,mixed}-v0`; checked against
their recipes' checksums), trains every agent on each with all seeds in one process, and
evaluates greedily in the game with the sticky actions the data was collected with (0.1).
Every agent uses the same batch size (32, DQN's on MinAtar; discrete BC and IQL default to 256,
which costs 8x more per step on 2 CPU cores).
Prints each run's final normalised score (0 = uniform random, 100 = the zoo's DQN expert
acting greedily) per dataset (mean over seeds, 95% Student-t interval) and per agent the IQM
over datasets × seeds with a 95% stratified-bootstrap interval. Finished runs are reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import BenchmarkParser, iqm_cell, mean_cell, valorl

from valorl.training.results import RunResult

AGENTS = ("bc_discrete", "cql_discrete", "iql_discrete", "dqn")
GAMES = ("breakout", "spaceinvaders")
KINDS = ("medium", "mixed")


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/minatar-offline")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--kinds", default=",".join(KINDS), help="datasets of each game")
    parser.add_argument(
        "--batch-size", default="32", help="every agent's batch size (DQN's MinAtar default)"
    )
    args = parser.parse_args()
    out, agents = Path(args.out), args.agents.split(",")
    kinds = args.kinds.split(",")
    datasets = [f"valorl/{g}-minatar-{k}-v0" for g in args.games.split(",") for k in kinds]
    scores: dict[str, dict[str, np.ndarray]] = {a: {} for a in agents}
    for dataset in datasets:
        for agent in agents:
            run = out / f"{agent}-{dataset.split('/')[-1]}"
            valorl(
                "train", agent, "--dataset", dataset, "--steps", str(args.steps),
                "--log-every", str(args.steps // 4), "--eval-every", str(args.steps // 2),
                "--eval-episodes", "10", "--seeds", str(args.seeds),
                "--batch-size", args.batch_size, "--out", str(run), "--quiet",
            )  # fmt: skip
            scores[agent][dataset] = RunResult.load(run).final_scores
    names = [d.split("/")[-1].removesuffix("-v0") for d in datasets]
    print(f"\nNormalised score after {args.steps:,} gradient steps, {args.seeds} seeds:\n")
    print("| agent | IQM (95% CI) | " + " | ".join(f"{n} mean (95% CI)" for n in names) + " |")
    print("|---|---|" + "---|" * len(datasets))
    for agent in agents:
        matrix = np.stack([scores[agent][d] for d in datasets], axis=1)
        cells = [mean_cell(scores[agent][d]) for d in datasets]
        print(f"| {agent} | {iqm_cell(matrix)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
