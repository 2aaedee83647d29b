"""Online DQN on MinAtar with each critic head: learning curves, and "Stop Regressing" scaled down.

    python benchmarks/minatar_dqn.py --out runs/minatar-dqn                 # every game and head
    python benchmarks/minatar_dqn.py --out runs/minatar-dqn --frames 20000 --curve-frames 20000

BENCHMARKS.md's numbers came from `--games Breakout-MinAtar --frames 150000` (all heads; the
huber arm stopped at 415k of its 500k steps for time) and `--games
SpaceInvaders-MinAtar,Asterix-MinAtar --heads huber --frames 100000 --curve-frames 100000`.

Trains `valorl train dqn --mode online --env GAME` with every seed of a run in one process (the
compiled loop, seeds vmapped) for each game and critic head: huber (DQN as Young & Tian 2019
train it), mse, and the classification heads of Farebrother et al. 2024 ("Stop Regressing"):
hl-gauss, two-hot and c51 (a distributional backup). Classification heads get a fixed value
support, as online runs have no dataset to fit one to. The huber arm runs longer
(`--curve-frames`) for the learning curves; its evaluation at `--frames` (the same training up
to there: ε and the learning rate do not depend on the run's length, and the replay buffer
holds every transition) is the huber entry of the head comparison. Finished runs are reused,
so an interrupted benchmark resumes (and an interrupted run resumes from its checkpoint).

Prints, per game, each head's final greedy evaluation return (mean over seeds, 95% Student-t
interval) and over games × seeds the IQM of DQN-normalised scores, (R − R_random) /
(R_huber − R_random) with R_huber the mean final return of the huber arm (JOWA's
"DQN-normalised"), with a 95% stratified-bootstrap interval; and writes learning curves to
`OUT/curves-GAME.png`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import BenchmarkParser, iqm_cell, mean_cell, valorl

from valorl.envs.gymnax_envs import make_jax_env, random_returns

GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "SpaceInvaders-MinAtar")
HEADS = ("huber", "mse", "hl-gauss", "two-hot", "c51")
SUPPORT = ("-5", "25")
"""[vmin, vmax] of the classification heads: MinAtar rewards are 0 or 1 per step, and at γ 0.99
returns of these games at our budgets stay well inside."""


def run_dir(out: Path, game: str, head: str) -> Path:
    return out / f"dqn-{head}-{game.split('-')[0].lower()}"


def evaluations(out: Path, game: str, head: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, returns (seeds, rounds, episodes)) of a run so far: a run stopped before its
    end still has every evaluation it reached."""
    with np.load(run_dir(out, game, head) / "evaluations.npz") as f:
        return f["steps"], f["returns"]


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", default="runs/minatar-dqn")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--frames", type=int, default=150_000, help="environment steps per seed, head comparison"
    )
    parser.add_argument(
        "--curve-frames", type=int, default=500_000, help="environment steps of the huber arm"
    )
    parser.add_argument("--skip-report", action="store_true", help="train only")
    parser.add_argument(
        "--report-only", action="store_true", help="report the runs as far as they got"
    )
    parser.add_argument("--utd", default="0.25", help="updates per environment step")
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--heads", default=",".join(HEADS))
    args = parser.parse_args()
    out, games, heads = Path(args.out), args.games.split(","), args.heads.split(",")
    eval_every = 25_000 if args.frames % 25_000 == 0 else args.frames // 5
    for game in [] if args.report_only else games:
        for head in heads:
            frames = args.curve_frames if head == "huber" else args.frames
            support = (
                ["--vmin", SUPPORT[0], "--vmax", SUPPORT[1]]
                if head
                in (
                    "hl-gauss",
                    "two-hot",
                    "c51",
                )
                else []
            )
            valorl(
                "train", "dqn", "--mode", "online", "--env", game, "--critic", head, *support,
                "--online-steps", str(frames), "--utd", args.utd,
                "--start-steps", "5000", "--eps-decay-steps", "20000",
                "--log-every", str(eval_every // 5), "--eval-every", str(eval_every),
                "--eval-episodes", "10", "--seeds", str(args.seeds),
                "--out", str(run_dir(out, game, head)), "--quiet",
            )  # fmt: skip

    if args.skip_report:
        return
    finals: dict[str, dict[str, np.ndarray]] = {h: {} for h in heads}
    budgets = {}
    for game in games:
        # The comparison budget of a game: the last evaluation every head reached.
        budgets[game] = min(int(evaluations(out, game, h)[0][-1]) for h in heads)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for head in heads:
            steps, returns = evaluations(out, game, head)
            per_seed = returns.mean(axis=2)  # (seeds, rounds)
            finals[head][game] = per_seed[:, list(steps).index(budgets[game])]
            mean, sem = per_seed.mean(0), per_seed.std(0, ddof=1) / np.sqrt(len(per_seed))
            ax.plot(steps, mean, label=head)
            ax.fill_between(steps, mean - 1.96 * sem, mean + 1.96 * sem, alpha=0.2)
        ax.axvline(budgets[game], color="grey", lw=0.5)
        ax.set(title=f"DQN on {game} ({args.seeds} seeds)", xlabel="environment steps",
               ylabel="greedy return (10 episodes)")  # fmt: skip
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"curves-{game}.png", dpi=120)
        plt.close(fig)

    print("\nGreedy evaluation returns at each game's comparison budget (environment steps):")
    print("\n| head | " + " | ".join(f"{g} at {budgets[g]:,} (95% CI)" for g in games) + " |")
    print("|---|" + "---|" * len(games))
    for head in heads:
        print(f"| {head} | " + " | ".join(mean_cell(finals[head][g]) for g in games) + " |")
    if "huber" in heads:
        randoms = {g: float(random_returns(make_jax_env(g), 100).mean()) for g in games}
        print("\nrandom-policy returns: " + ", ".join(f"{g} {r:.2f}" for g, r in randoms.items()))
        print("\n| head | IQM DQN-normalised score over games × seeds (95% stratified bootstrap) |")
        print("|---|---|")
        for head in heads:
            matrix = np.stack(
                [
                    (finals[head][g] - randoms[g]) / (finals["huber"][g].mean() - randoms[g])
                    for g in games
                ],
                axis=1,
            )
            print(f"| {head} | {iqm_cell(matrix)} |")


if __name__ == "__main__":
    main()
