"""Action chunking on OGBench single-task data: FQL, FQL-n, QC-FQL and QC (best-of-N), next
to the success rates the QC paper reports at the same number of gradient steps.

    python benchmarks/chunking.py --out runs/chunking
    python benchmarks/chunking.py --datasets puzzle-3x3-play-singletask-task4-sparse-v0 \
        --steps 30000

Arms (Li, Zhou & Levine 2025, "Reinforcement Learning with Action Chunking", Sec. 5):

    fql       FQL: one action, one-step returns
    fql-n     FQL with uncorrected 5-step returns and one action
    qc-fql    FQL over chunks of 5 actions
    qc        a chunk critic (h = 5) and the best of N samples of a BC flow over chunks
    rebrac    ReBRAC, the one-step baseline with a deterministic actor: TD3 with LayerNorm
              critics and BC penalties on actor and target (valorl's defaults, β_actor 0.1,
              β_critic 0.01; the QC paper tunes them per domain)

The three FQL arms use α = 100, as QC's README runs all three on every domain (FQL's own README
uses 300 on scene and 1000 on puzzle; BENCHMARKS.md's first rows were measured so).

Scaled down from the paper for a 2-core CPU, and said so in BENCHMARKS.md: 2x256 networks
(the paper's 4x512), `--samples` 8 flow samples for QC (the paper's 32), the zoo's 100-episode
datasets (OGBench's 1000), `--eval-episodes` per seed (the paper's 50). The datasets are the
zoo's sparse single-task variants (reward −1 until every subtask is solved, 0 then; QC's
`--sparse`), built on first use. Finished runs are reused, interrupted ones resume from their
last checkpoint (written every 10 minutes of training).

Prints the final success rate per arm and dataset (mean over seeds with a 95% t-interval) next
to the published success on the same task at 100k offline steps (QC's plot data,
ogbench-individual.pkl).
"""

from __future__ import annotations

from pathlib import Path

from common import BenchmarkParser, final_success, mean_cell, train_arms

from valorl.data.ogbench import single_task_name

DATASETS = (
    "scene-play-singletask-task2-sparse-v0",
    "puzzle-3x3-play-singletask-task4-sparse-v0",
)
ALPHA = 100
"""FQL's α in every FQL arm (QC's README)."""
PUBLISHED_100K = {
    ("scene-play", 2): {
        "fql": 0.216,
        "fql-n": 0.106,
        "qc-fql": 0.614,
        "qc": 0.975,
        "rebrac": 0.06,
    },
    ("puzzle-3x3-play", 4): {
        "fql": 0.0,
        "fql-n": 0.63,
        "qc-fql": 0.216,
        "qc": 0.95,
        "rebrac": 0.005,
    },
}
"""Success on (dataset, task) at 100k offline steps, 4x512 networks, 1M-transition datasets (QC's
plot data, `plot_data/ogbench-individual.pkl`, keys ('scene-play-task2', method) and
('puzzle-3x3-play-task4', method); ReBRAC's entry is the paper's ReBRAC baseline)."""


def paper_task(dataset: str) -> tuple[str, int] | None:
    """The (dataset, task) of the paper's runs that a single-task dataset stands for: the zoo's
    100k and 1M builds of one dataset both stand for OGBench's (1M)."""
    parsed = single_task_name(dataset)
    if parsed is None:
        return None
    base, task, _ = parsed
    return base.removesuffix("-v0").removesuffix("-1m"), task


def arms(samples: int) -> dict[str, str]:
    return {
        "fql": f"fql --alpha {ALPHA}",
        "fql-n": f"fql --alpha {ALPHA} --n-step 5",
        "qc-fql": f"fql --alpha {ALPHA} --horizon 5",
        "qc": f"qc --horizon 5 --samples {samples}",
        "rebrac": "rebrac",
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/chunking")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--arms", default="fql,fql-n,qc-fql,qc")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8, help="QC's N (the paper's 32)")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--skip-report", action="store_true", help="train only")
    args = parser.parse_args()
    out, datasets, names = Path(args.out), args.datasets.split(","), args.arms.split(",")
    common = f"--steps {args.steps} --log-every 1000 --eval-every {args.steps // 2} "
    common += f"--eval-episodes {args.eval_episodes} --seeds {args.seeds} --quiet "
    common += "--hidden-dims 256,256 --batch-size 256 --checkpoint-every 10min"
    train_arms(out, datasets, names, lambda name, _: arms(args.samples)[name], common)
    if args.skip_report:
        return
    setting = f"{args.steps} gradient steps, {args.seeds} seeds x {args.eval_episodes} episodes"
    print(f"\nsuccess rate (%) after {setting} (published at 100k steps in parentheses)\n")
    print(f"| arm | {' | '.join(datasets)} |")
    print("|---|" + "---:|" * len(datasets))
    for name in names:
        cells = []
        for dataset in datasets:
            published = PUBLISHED_100K.get(paper_task(dataset), {}).get(name)
            success = final_success(out / f"{name}-{dataset}")
            shown = "–" if published is None else f"{100 * published:.0f}"
            cells.append(f"{mean_cell(100 * success)} ({shown})")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
