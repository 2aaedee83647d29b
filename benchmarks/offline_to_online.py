"""Offline-to-online fine-tuning: IQL, CQL and Cal-QL pre-trained on a zoo dataset then
fine-tuned online, against RLPD-style hybrid SAC and SAC from scratch at the same budget.

    MINARI_DATASETS_PATH=... python benchmarks/offline_to_online.py --out runs/o2o
    python benchmarks/offline_to_online.py --datasets hopper-medium-replay-v0 --online-steps 10000

Tests the claim of Nakamoto et al. ("Cal-QL: Calibrated Offline RL Pre-Training for Efficient
Online Fine-Tuning", NeurIPS 2023, Fig. 1 and Table 1): CQL's value is so conservative that its
score dips when fine-tuning starts, while Cal-QL, whose pushed-down Q-values are bounded below by
Monte-Carlo returns (Eq. 5), keeps its pre-trained score and improves from there.

Arms, on every dataset (its own environment), the same seeds trained together (vmapped), each
with `--online-steps` environment steps and one update per step:

    iql     `--offline-steps` of IQL, then fine-tuning on offline data ∪ replay (IQL's code)
    cql     the same with CQL, batches half offline, half replay (Cal-QL's protocol)
    calql   the same with Cal-QL (CQL's α 5 and Cal-QL's learning rates, valorl's defaults)
    rlpd    hybrid SAC from the first step: batches half offline, half replay (RLPD's
            symmetric sampling), LayerNorm critics; RLPD's UTD of 20 and 10-critic ensemble are
            left out so that every arm makes the same number of updates
    sac     SAC from scratch, no data

Scaled down from the papers' 1M pre-training steps and 1M fine-tuning steps. The zoo's datasets
are smaller than D4RL's and scored against the zoo's references (see BENCHMARKS.md), so scores
are not D4RL's. Finished runs are reused, interrupted ones resume.

Prints, per arm and dataset, the normalised score at the end of pre-training, the lowest score
in the first third of fine-tuning (the dip), and the final score (means over seeds with 95%
t-intervals); writes the fine-tuning curves to OUT/curves-DATASET.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import BenchmarkParser, mean_cell, plot_curves, valorl

from valorl.data.sources import load_dataset

DATASETS = ("hopper-medium-replay-v0", "halfcheetah-medium-replay-v0")
PRETRAINED = ("iql", "cql", "calql")
ARMS = {
    "iql": "iql --mode offline-to-online",
    "cql": "cql --mode offline-to-online --offline-ratio 0.5",
    "calql": "calql --mode offline-to-online --offline-ratio 0.5",
    "rlpd": "sac --mode hybrid --offline-ratio 0.5 --layer-norm true --start-steps 1000",
    "sac": "sac --mode online --start-steps 1000",
}


def train(out: Path, name: str, dataset: str, offline: int, online: int, seeds: int) -> None:
    agent, *flags = ARMS[name].split()
    env = load_dataset(dataset).info.env_id
    data = ["--env", env] if name == "sac" else ["--dataset", dataset]
    steps = ["--online-steps", str(online)]
    if name in PRETRAINED:
        steps += ["--offline-steps", str(offline)]
    common = f"--seeds {seeds} --log-every 500 --eval-every {online // 10} --eval-episodes 10"
    run = str(out / f"{name}-{dataset}")
    valorl("train", agent, *data, *flags, *steps, *common.split(), "--quiet", "--out", run)


def fine_tuning_curve(run: Path, dataset, offline: int) -> tuple[np.ndarray, np.ndarray]:
    """Environment steps of fine-tuning (0 = end of pre-training) and normalised scores per seed
    and evaluation."""
    with np.load(run / "evaluations.npz") as f:
        steps, returns = f["steps"], f["returns"].mean(axis=-1)
    if run.name.split("-")[0] in PRETRAINED:
        steps = steps - offline
    return steps, dataset.info.normalized_score(returns)


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/o2o")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--offline-steps", type=int, default=10_000)
    parser.add_argument("--online-steps", type=int, default=6_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-report", action="store_true", help="train only")
    args = parser.parse_args()
    out, names = Path(args.out), args.arms.split(",")
    for dataset in args.datasets.split(","):
        for name in names:
            train(out, name, dataset, args.offline_steps, args.online_steps, args.seeds)
    if args.skip_report:
        return
    for dataset in args.datasets.split(","):
        data = load_dataset(dataset)
        runs = {n: out / f"{n}-{dataset}" for n in names}
        curves = {n: fine_tuning_curve(run, data, args.offline_steps) for n, run in runs.items()}
        print(
            f"\n{dataset}: {args.offline_steps:,} pre-training steps, {args.online_steps:,} "
            f"environment steps, {args.seeds} seeds, normalised score"
        )
        print("| arm | end of pre-training | lowest in first third | final |")
        print("|---|---:|---:|---:|")
        for n, (steps, scores) in curves.items():
            start = mean_cell(scores[:, steps == 0][:, 0]) if n in PRETRAINED else "–"
            early = (steps >= 0) & (steps <= args.online_steps // 3)
            dip = mean_cell(scores[:, early].min(axis=1)) if early.any() else "–"
            print(f"| {n} | {start} | {dip} | {mean_cell(scores[:, -1])} |")
        plot_curves(
            {n: (s[s >= 0], v[:, s >= 0]) for n, (s, v) in curves.items()},
            f"{dataset}: fine-tuning",
            out / f"curves-{dataset}.png",
            ylabel="normalised score",
        )


if __name__ == "__main__":
    main()
