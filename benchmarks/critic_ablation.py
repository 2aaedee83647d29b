"""IQL with different critic heads on datasets valorl builds itself; IQM with 95% intervals.

    python benchmarks/critic_ablation.py --out runs/ablation            # all of it
    python benchmarks/critic_ablation.py --out runs/ablation --seeds 2  # a quicker look

Builds the datasets with `valorl collect` (if missing), trains IQL with each head through
`valorl train` (all seeds of a run in one process), then aggregates every run's final
normalised score over (seeds x datasets): IQM with a 95% stratified-bootstrap interval, and
per dataset the mean with a 95% Student-t interval. Prints Markdown tables. Finished runs are
reused, so an interrupted ablation resumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import DATASETS, BenchmarkParser, ensure_dataset, iqm_cell, mean_cell, valorl

from valorl.training.results import RunResult

HEADS = ("mse", "hl-gauss", "c51")
COMMON = "--steps 30000 --log-every 2000 --eval-every 10000 --eval-episodes 10 --hidden-dims 64,64"


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    scores: dict[str, dict[str, np.ndarray]] = {head: {} for head in HEADS}
    for dataset, (_, iql_flags) in DATASETS.items():
        data_dir = ensure_dataset(out, dataset)
        for head in HEADS:
            run = out / f"{dataset.split('/')[-1]}-iql-{head}"
            valorl(
                "train",
                "iql",
                "--dataset",
                str(data_dir),
                "--critic",
                head,
                "--seeds",
                str(args.seeds),
                *COMMON.split(),
                *iql_flags.split(),
                "--out",
                str(run),
                "--quiet",
            )
            scores[head][dataset] = RunResult.load(run).final_scores

    print(
        "\n| critic head | IQM over seeds x datasets (95% stratified bootstrap CI) | "
        + " | ".join(f"{d} mean (95% CI)" for d in DATASETS)
        + " |"
    )
    print("|---|---|" + "---|" * len(DATASETS))
    for head in HEADS:
        matrix = np.stack([scores[head][d] for d in DATASETS], axis=1)  # (seeds, datasets)
        cells = [mean_cell(scores[head][d]) for d in DATASETS]
        print(f"| {head} | {iqm_cell(matrix)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
