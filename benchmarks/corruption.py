"""IQL, RIQL, TD3+BC, CQL and BC on randomly corrupted data; IQM with 95% intervals.

    python benchmarks/corruption.py --out runs/corruption             # all of it (5 seeds)
    python benchmarks/corruption.py --out runs/corruption --seeds 2   # a quicker look

Builds the datasets of `common.DATASETS` with `valorl collect` (if missing), writes one copy of
each with 30% of its transitions corrupted per kind (Yang et al. 2023's random corruptions of
observations, actions, rewards and dynamics, scale 1: `valorl corrupt`), trains every agent on
the clean data and on each copy through `valorl train` (all seeds of a run in one process),
then aggregates every run's final normalised score. Per kind of corruption: the IQM over
(seeds x datasets) with a 95% stratified-bootstrap interval; "all corrupted" pools the four
kinds as tasks (seeds x datasets x kinds). Prints a Markdown table. Finished runs and written
datasets are reused, so an interrupted benchmark resumes.

Agents run with their paper defaults, plus the per-dataset settings of `common.DATASETS`
(e.g. γ = 0.95 on Pendulum) for every agent that has that hyperparameter.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
from common import DATASETS, BenchmarkParser, ensure_dataset, iqm_cell, short_name, valorl

from valorl.agents import AGENTS
from valorl.training.results import RunResult

AGENT_NAMES = ("iql", "riql", "td3_bc", "cql", "bc")
KINDS = ("obs", "actions", "rewards", "dynamics")
CORRUPTION = "--mode random --rate 0.3 --scale 1.0 --seed 0"
NETWORKS = "--hidden-dims 64,64"


def agent_flags(agent: str, flags: str) -> list[str]:
    """The `--name value` pairs of `flags` that are hyperparameters of `agent`."""
    fields = {f.name for f in dataclasses.fields(AGENTS[agent])}
    tokens = flags.split()
    kept = []
    for name, value in zip(tokens[::2], tokens[1::2], strict=True):
        if name.removeprefix("--").replace("-", "_") in fields:
            kept += [name, value]
    return kept


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/corruption")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30_000, help="gradient steps per run")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--collect-steps", type=int, default=None, help="override the datasets' sizes (smoke runs)"
    )
    parser.add_argument("--agents", default=",".join(AGENT_NAMES))
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated subset of the datasets"
    )
    args = parser.parse_args()
    out = Path(args.out)
    agents = args.agents.split(",")
    datasets = {d: DATASETS[d] for d in args.datasets.split(",")}
    conditions = ("clean", *KINDS)
    common = [
        *NETWORKS.split(),
        "--steps",
        str(args.steps),
        "--eval-every",
        str(min(args.steps, 10_000)),
        "--log-every",
        str(min(args.steps, 2000)),
        "--eval-episodes",
        str(args.eval_episodes),
        "--seeds",
        str(args.seeds),
        "--quiet",
    ]
    # scores[agent][condition][dataset]: final normalised score per seed
    scores = {a: {c: {} for c in conditions} for a in agents}
    for dataset, (collect_flags, dataset_flags) in datasets.items():
        if args.collect_steps is not None:
            collect_flags = re.sub(r"--steps \d+", f"--steps {args.collect_steps}", collect_flags)
        clean_dir = ensure_dataset(out, dataset, collect_flags)
        data_dirs = {"clean": clean_dir}
        for kind in KINDS:
            name = f"{short_name(dataset).rsplit('-v', 1)[0]}-{kind}-random"
            data_dirs[kind] = out / "data" / name
            if not data_dirs[kind].exists():
                valorl(
                    "corrupt",
                    str(clean_dir),
                    "--kind",
                    kind,
                    *CORRUPTION.split(),
                    "--id",
                    f"valorl/{name}-v0",
                    "--out",
                    str(data_dirs[kind]),
                    "--quiet",
                )
        for agent in agents:
            for condition, data_dir in data_dirs.items():
                run = out / f"{data_dir.name}-{agent}"
                valorl(
                    "train",
                    agent,
                    "--dataset",
                    str(data_dir),
                    *common,
                    *agent_flags(agent, dataset_flags),
                    "--out",
                    str(run),
                )
                scores[agent][condition][dataset] = RunResult.load(run).final_scores

    print(
        "\n| agent | "
        + " | ".join(f"{c} IQM (95% CI)" for c in conditions)
        + " | all corrupted IQM (95% CI) |"
    )
    print("|---|" + "---|" * (len(conditions) + 1))
    for agent in agents:
        cells = []
        for condition in conditions:
            by_dataset = scores[agent][condition]
            cells.append(iqm_cell(np.stack([by_dataset[d] for d in datasets], axis=1)))
        pooled = np.stack(
            [scores[agent][k][d] for k in KINDS for d in datasets], axis=1
        )  # (seeds, kinds x datasets)
        print(f"| {agent} | " + " | ".join(cells) + f" | {iqm_cell(pooled)} |")


if __name__ == "__main__":
    main()
