"""MBPO with a model ensemble against a single model with a Lipschitz-regularised critic.

    python benchmarks/mbpo_lipschitz.py --out runs/mbpo-lipschitz
    python benchmarks/mbpo_lipschitz.py --out runs/mbpo-lipschitz --arms robust-grid

Tests the claim of Zheng et al. ("Is Model Ensemble Necessary? Model-based RL via a Single Model
with Lipschitz Regularized Value Function", ICLR 2023) at CPU scale: MBPO (valorl train mbpo
--mode online) on InvertedDoublePendulum-v5 (or `--env Hopper-v5`: then the whole of OUT is that
environment's) with

    ensemble       7 probabilistic members, 5 elites (MBPO's model)
    single-prob    one probabilistic model
    single-det     one deterministic model
    single-det-sn  one deterministic model, spectrally normalised critic
    single-det-robust   one deterministic model, robust loss (ε 0.01, λ 1, 5 PGD steps)
    single-det-vagram   one deterministic model trained by VaGraM's value-gradient loss
    sac            SAC at the same update-to-data ratio, no model

and with `--arms robust-grid` the robust loss over ε ∈ {0.001, 0.01} × λ ∈ {0.1, 1} (or one point
of it by name, e.g. `--arms robust-eps0.001-lambda0.1`). Every arm trains the same seeds
together (vmapped) with the same settings (`COMMON`, and MBPO's target entropy for the
environment, `TARGET_ENTROPY`), scaled down from MBPO's (see
BENCHMARKS.md for the factors), for `--online-steps` environment steps; an arm
trained longer is compared at that budget. Finished runs are reused and interrupted ones
resume, so the script can be stopped and started again.

Prints, per arm, the final greedy return (mean over seeds, 95% t-interval), the return at each
evaluation, the critic's Lipschitz estimate (largest ‖∇_s Q‖ on a batch; mean over seeds at the
end), and the wall-clock split into model fitting, rollouts and the rest (environment steps and
agent updates); writes learning curves to `OUT/curves.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import BenchmarkParser, mean_cell, plot_curves, valorl

COMMON = (
    "--mode online --start-steps 1000 --log-every 250 "
    "--eval-every 1000 --eval-episodes 5 --seeds 3 --utd 5 --quiet"
)
MODEL = (
    "--model-hidden-dims 200,200,200 --model-max-epochs 20 --rollout-batch 5000 "
    "--rollout-length 1 --rollout-every 250 --rollout-retain 4"
)
SINGLE_DET = "--model-members 1 --model-elites 1 --model-kind deterministic"
TARGET_ENTROPY = {
    "InvertedDoublePendulum-v5": "-0.5",
    "Hopper-v5": "-1",
    "HalfCheetah-v5": "-3",
    "Walker2d-v5": "-3",
}
"""SAC's target entropy in MBPO's per-environment configs (examples/config/*/0.py), for every
arm, SAC's included; other environments keep SAC's −|A|."""
ARMS = {
    "ensemble": f"mbpo {MODEL} --model-members 7 --model-elites 5",
    "single-prob": f"mbpo {MODEL} --model-members 1 --model-elites 1",
    "single-det": f"mbpo {MODEL} {SINGLE_DET}",
    "single-det-sn": f"mbpo {MODEL} {SINGLE_DET} --spectral-norm true",
    "single-det-robust": f"mbpo {MODEL} {SINGLE_DET} --robust-coef 1 --robust-radius 0.01",
    "single-det-vagram": f"mbpo {MODEL} {SINGLE_DET} --model-loss vagram",
    "sac": "sac",
}
GRID = {
    f"robust-eps{eps}-lambda{lam}": (
        f"mbpo {MODEL} {SINGLE_DET} --robust-coef {lam} --robust-radius {eps}"
    )
    for eps in ("0.001", "0.01")
    for lam in ("0.1", "1")
}


def summary(run: Path, budget: int) -> dict:
    """Returns per seed at each evaluation up to `budget` environment steps (a run trained
    longer is read at that budget), the Lipschitz estimate and the wall-clock split there."""
    with np.load(run / "evaluations.npz") as f:
        keep = f["steps"] <= budget
        steps, returns = f["steps"][keep], f["returns"].mean(axis=-1)[:, keep]  # (seeds, rounds)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    lines = [x for x in lines if x["step"] <= budget]
    lipschitz = [x["critic/lipschitz"] for x in lines if "critic/lipschitz" in x]
    total = sum(x.get("wall_s", 0.0) for x in lines)
    fit = sum(x.get("time/model_fit_s", 0.0) for x in lines)
    rollouts = sum(x.get("time/rollouts_s", 0.0) for x in lines)
    return {
        "steps": steps,
        "returns": returns,
        "lipschitz": float(np.mean(lipschitz[-1])) if lipschitz else float("nan"),
        "wall": (total, fit, rollouts, total - fit - rollouts),
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/mbpo-lipschitz")
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"comma-separated, of {', '.join(ARMS)}; robust-grid (all of {', '.join(GRID)})",
    )
    parser.add_argument("--env", default="InvertedDoublePendulum-v5")
    parser.add_argument("--online-steps", type=int, default=4000)
    parser.add_argument("--skip-report", action="store_true", help="train only")
    parser.add_argument("--report-only", action="store_true", help="read the runs, train none")
    args = parser.parse_args()
    out = Path(args.out)
    arms: dict[str, str] = {}
    for name in args.arms.split(","):
        if name != "robust-grid" and name not in ARMS | GRID:
            parser.error(f"unknown arm {name!r}")
        arms |= GRID if name == "robust-grid" else {name: (ARMS | GRID)[name]}
    for name, flags in {} if args.report_only else arms.items():
        agent, *rest = flags.split()
        steps = ["--online-steps", str(args.online_steps)]
        env = ["--env", args.env, *steps]
        if args.env in TARGET_ENTROPY:
            env += ["--target-entropy", TARGET_ENTROPY[args.env]]
        valorl("train", agent, *COMMON.split(), *env, *rest, "--out", str(out / name))
    if args.skip_report:
        return
    results = {name: summary(out / name, args.online_steps) for name in arms}
    rounds = next(iter(results.values()))["steps"]
    print(
        f"\n| arm | final return (95% CI) | {' | '.join(f'{s:,}' for s in rounds)} | "
        "Lipschitz | wall s: total / model fit / rollouts / rest |"
    )
    print("|---|---:|" + "---:|" * len(rounds) + "---:|---|")
    for name, r in results.items():
        curve = " | ".join(f"{v:.0f}" for v in r["returns"].mean(axis=0))
        wall = " / ".join(f"{w:.0f}" for w in r["wall"])
        print(
            f"| {name} | {mean_cell(r['returns'][:, -1])} | {curve} | {r['lipschitz']:.1f} | "
            f"{wall} |"
        )
    curves = {name: (r["steps"], r["returns"]) for name, r in results.items()}
    plot_curves(curves, f"MBPO on {args.env}", out / "curves.png")


if __name__ == "__main__":
    main()
