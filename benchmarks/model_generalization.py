"""Experience replay vs a learned model vs the true model on the gridworlds of Young, Ramesh,
Kirsch & Schmidhuber, "The Benefits of Model-Based Generalization in Reinforcement Learning"
(ICML 2023, Sec. 5, Fig. 4).

    python benchmarks/model_generalization.py --out runs/model-generalization    # full (below)
    python benchmarks/model_generalization.py --out /tmp/mg-smoke --steps 1500 --seeds 2 \\
        --start-steps 300 --hidden-dims 16 --eval-episodes 4                       # smoke

The full command is the first line: the paper's small configurations (ProcMaze 4x4,
ButtonGrid 4x4 with 3 buttons, PanFlute with 5 pipes), its high-data regime (one update per
environment step) cut to `--steps` 100,000 environment steps per seed (the paper: 1M), 5 seeds
vmapped per run; `--regime low` is its low-data regime (10 updates per step, the paper: 100k
steps). The paper's ButtonGrid size in Fig. 4 is not in its code supplement; 4x4 is this
script's choice, like ProcMaze's 4x4 (the supplement's configs).

Three arms, each `valorl train AGENT --mode online --env ENV` (the compiled loop, seeds
vmapped), under the paper's controls: the same Q-network (three 200-unit ELU layers), γ 0.9,
squared TD error with the plain DQN target, target copy every 100 updates, replay of 100k
transitions, 1000 steps before learning, softmax(Q/T) exploration, and 320 transitions per Q
update:

    er        dqn with batches of 320 replayed transitions
    model     model_dqn: Q only on 32 replayed starts x 10 steps of a learned model
              (valorl.models.binary), the model trained on the same 32 rows
    perfect   perfect_model_dqn: the same rollouts in the true environment

Step size and temperature per arm, environment and regime are the paper's grid-search winners
(the supplement's README table; the model's own step size 2e-4, its configs'). Differences
from the paper, stated: Adam has β2 0.999 and no weight decay (the paper: AdamW β2 0.99,
weight decay 1e-6), ε 1e-5 as the paper; greedy evaluation episodes start fresh (the paper's
continuing evaluations also start from a reset). Evaluation: `--eval-episodes` (32, as the paper)
greedy episodes of 100 steps (ProcMaze: return until the goal; the continuing two: reward
summed over 100 steps, i.e. 100 x the paper's reward rate) every `--steps`/20 steps. Training
has no time limit, as the paper's (since 2026-12-02; the results recorded before truncated
training episodes at 100 steps too).

Finished runs are reused and an interrupted run resumes from its checkpoint, so re-running the
same command continues. Prints per environment each arm's return averaged over the last
quarter of its evaluations (mean over seeds, 95% Student-t interval) and writes learning curves
to `OUT/curves-ENV.png`. The paper's claim to check: the learned model beats replay on these
environments (and the perfect model bounds what a model could give).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import BenchmarkParser, mean_cell, valorl

ENVS = ("ProcMaze-4x4-v0", "ButtonGrid-4x4-v0", "PanFlute-v0")
ARMS = ("er", "model", "perfect")
AGENT = {"er": "dqn", "model": "model_dqn", "perfect": "perfect_model_dqn"}
TUNED = {
    # (regime, arm, environment family): (step size, temperature), the supplement's README
    ("high", "model", "ProcMaze"): (2e-4, 0.8),
    ("high", "model", "ButtonGrid"): (2e-4, 1.6),
    ("high", "model", "PanFlute"): (1e-4, 0.4),
    ("high", "perfect", "ProcMaze"): (1e-4, 0.4),
    ("high", "perfect", "ButtonGrid"): (2e-4, 0.0125),
    ("high", "perfect", "PanFlute"): (2e-4, 0.1),
    ("high", "er", "ProcMaze"): (5e-5, 0.1),
    ("high", "er", "ButtonGrid"): (5e-5, 0.0125),
    ("high", "er", "PanFlute"): (1e-4, 0.1),
    ("low", "model", "ProcMaze"): (2.5e-5, 0.4),
    ("low", "model", "ButtonGrid"): (5e-5, 0.4),
    ("low", "model", "PanFlute"): (2e-4, 0.2),
    ("low", "perfect", "ProcMaze"): (4e-4, 0.4),
    ("low", "perfect", "ButtonGrid"): (2e-4, 0.0125),
    ("low", "perfect", "PanFlute"): (1e-4, 0.1),
    ("low", "er", "ProcMaze"): (2.5e-5, 1.6),
    ("low", "er", "ButtonGrid"): (2.5e-5, 0.1),
    ("low", "er", "PanFlute"): (3.125e-6, 0.8),
}
UTD = {"high": 1, "low": 10}


def run_dir(out: Path, regime: str, env: str, arm: str) -> Path:
    """OUT/REGIME-ENV-ARM, ENV the environment id without its version, sizes included
    (`high-panflute-8pipes-er`), so that two sizes of one gridworld keep apart."""
    return out / f"{regime}-{env.lower().removesuffix('-v0')}-{arm}"


def arm_flags(arm: str, env: str, regime: str, hidden: str) -> list[str]:
    lr, temperature = TUNED[regime, arm, env.split("-")[0]]
    flags = [
        "--hidden-dims", hidden, "--activation", "elu", "--discount", "0.9", "--critic", "mse",
        "--double-q", "false",
        "--target-update-every", "100", "--exploration", "softmax",
        "--temperature", str(temperature), "--critic-lr", str(lr), "--adam-eps", "1e-5",
    ]  # fmt: skip
    if arm == "er":
        return [*flags, "--batch-size", "320"]
    flags += ["--batch-size", "32", "--rollout-length", "10"]
    if arm == "model":
        return [*flags, "--model-hidden-dims", hidden, "--model-lr", "2e-4"]
    return [*flags, "--simulator", env]


def evaluations(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, per-seed mean returns (seeds, rounds)) of a run so far."""
    with np.load(path / "evaluations.npz") as f:
        return f["steps"], f["returns"].mean(axis=2)


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/model-generalization")
    parser.add_argument("--regime", choices=("high", "low"), default="high")
    parser.add_argument("--steps", type=int, default=100_000, help="environment steps per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--start-steps", type=int, default=1000)
    parser.add_argument("--hidden-dims", default="200,200,200")
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out, envs, arms = Path(args.out), args.envs.split(","), args.arms.split(",")
    eval_every = max(args.steps // 20, 1)
    for env in [] if args.report_only else envs:
        for arm in arms:
            valorl(
                "train", AGENT[arm], "--mode", "online", "--env", env,
                *arm_flags(arm, env, args.regime, args.hidden_dims),
                "--online-steps", str(args.steps), "--utd", str(UTD[args.regime]),
                "--start-steps", str(args.start_steps), "--buffer-size", "100000",
                "--log-every", str(eval_every), "--eval-every", str(eval_every),
                "--eval-episodes", str(args.eval_episodes), "--seeds", str(args.seeds),
                "--out", str(run_dir(out, args.regime, env, arm)), "--quiet",
            )  # fmt: skip

    rows = {arm: [] for arm in arms}
    for env in envs:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for arm in arms:
            steps, returns = evaluations(run_dir(out, args.regime, env, arm))
            last = max(1, len(steps) // 4)
            rows[arm].append(mean_cell(returns[:, -last:].mean(axis=1)))
            mean = returns.mean(0)
            sem = returns.std(0, ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else 0 * mean
            ax.plot(steps, mean, label=arm)
            ax.fill_between(steps, mean - 1.96 * sem, mean + 1.96 * sem, alpha=0.2)
        ax.set(title=f"{env}, {args.regime} data ({args.seeds} seeds)",
               xlabel="environment steps", ylabel="greedy return (100-step episodes)")  # fmt: skip
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"curves-{env}.png", dpi=120)
        plt.close(fig)

    print(f"\nGreedy return over the last quarter of evaluations ({args.regime} data, "
          f"{args.steps:,} steps, {args.seeds} seeds, mean [95% CI]):")  # fmt: skip
    print("\n| arm | " + " | ".join(envs) + " |")
    print("|---|" + "---|" * len(envs))
    for arm in arms:
        print(f"| {arm} | " + " | ".join(rows[arm]) + " |")


if __name__ == "__main__":
    main()
