"""Decoupled Q-chunking on OGBench goal-conditioned data: DQC against Q-chunking with the long
chunk, with the short chunk, and one-step, next to goal-conditioned IQL.

    python benchmarks/goal_chunking.py --out runs/goal-chunking
    python benchmarks/goal_chunking.py --datasets cube-single-play-v0 --steps 20000

Arms (Li, Park & Levine 2025, "Decoupled Q-Chunking", Sec. 6 and its reference code, where the
baselines are the same code without the chunk critic: the critic over the policy's chunk is
trained on the n-step target directly, V by the same quantile backup):

    dqc      critic over h = 25, action critic over h_a = 5 distilled by the κ_d = 0.8 expectile,
             value by the κ_b = 0.93 quantile, policy over 5
    qc-25    h = h_a = 25: the action critic is the chunk critic (QC with the long chunk)
    qc-5     h = h_a = 5 (QC with the short chunk)
    os       h = h_a = 1 (one-step), κ_b = 0.5

κ_b and κ_d per arm are the reference's for its smallest cube task (experiments/reproduce.py,
cube-triple; it has no cube-double settings), γ its 0.999.
    gciql    IQL with OGBench's GCIQL rewards (0 at the goal, −1 elsewhere), its critic
             (expectile 0.9, GELU with LayerNorm after each activation, constant actor rate) and
             its actor's own goals (later states of each row's trajectory); not OGBench's GCIQL
             itself, which extracts with DDPG+BC, draws value goals' offsets geometrically and
             puts LayerNorm in its value net too

Every chunked arm uses values as probabilities (`bce`), success rewards, OGBench's oracle goals
(the cubes' positions, DQC's `oraclerep`) and min-of-two critics for extraction (the
reference's choice for cube tasks), best of 32 flow samples. Scaled down for a 2-core CPU and
said so in BENCHMARKS.md: 2x256 networks (the reference's 4x1024), batch 256 (its 4096),
`--steps` gradient steps (its 1M), the zoo's 100-trajectory datasets (100k transitions; DQC's
are 100M-1B on other tasks), `--eval-episodes` per seed split over OGBench's five tasks (its 50
per task). Finished runs are reused, interrupted ones resume.

Prints the final success rate per arm (mean over seeds, 95% t-interval).
"""

from __future__ import annotations

from pathlib import Path

from common import BenchmarkParser, final_success, mean_cell, train_arms

CHUNKED = "--goals oracle --q-reduce min --discount 0.999 --distill-expectile 0.8"
ARMS = {
    "dqc": f"dqc --horizon 25 --action-horizon 5 {CHUNKED} --value-quantile 0.93",
    "qc-25": f"dqc --horizon 25 --action-horizon 25 {CHUNKED} --value-quantile 0.93",
    "qc-5": f"dqc --horizon 5 --action-horizon 5 {CHUNKED} --value-quantile 0.93",
    "os": f"dqc --horizon 1 --action-horizon 1 {CHUNKED} --value-quantile 0.5",
    "gciql": "iql --goals oracle --goal-reward negative --actor-goals future --expectile 0.9 "
    "--layer-norm true --norm-after-activation true --activation gelu --actor-lr-schedule "
    "constant",
}


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/goal-chunking")
    parser.add_argument("--datasets", default="cube-double-play-v0")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=10, help="a multiple of 5")
    parser.add_argument("--skip-report", action="store_true", help="train only")
    args = parser.parse_args()
    out, datasets, names = Path(args.out), args.datasets.split(","), args.arms.split(",")
    common = f"--steps {args.steps} --log-every 1000 --eval-every {args.steps} "
    common += f"--eval-episodes {args.eval_episodes} --seeds {args.seeds} --quiet "
    common += "--hidden-dims 256,256 --batch-size 256"
    train_arms(out, datasets, names, lambda name, _: ARMS[name], common)
    if args.skip_report:
        return
    setting = f"{args.steps} gradient steps, {args.seeds} seeds x {args.eval_episodes} episodes"
    print(f"\nsuccess rate (%) over OGBench's five tasks after {setting}\n")
    print(f"| arm | {' | '.join(datasets)} |")
    print("|---|" + "---:|" * len(datasets))
    for name in names:
        cells = [mean_cell(100 * final_success(out / f"{name}-{d}")) for d in datasets]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
