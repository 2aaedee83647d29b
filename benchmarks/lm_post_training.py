"""SFT, GRPO, SFT then GRPO, and Hybrid Post-Training from one weak base model, on addition.

    python benchmarks/lm_post_training.py --out runs/lm-post-training
    python benchmarks/lm_post_training.py --out runs/lm-post-training --task multiplication

Tests the claim of Lv et al. 2025 ("Towards a Unified View of Large Language Model
Post-Training", arXiv 2509.04419, Table 1): HPT, which per prompt trains by SFT on the
demonstration when no rollout of it is correct and by RL on the rollouts otherwise, beats SFT
alone, GRPO alone and the sequential recipe SFT then GRPO, in distribution and out of it.

A base model is pre-trained (next-token prediction over whole demonstrations) for
`--base-steps`, few enough that it stays weak; every arm starts from it, seed for seed, and
gets the same number of training steps, `--steps`:

    sft        SFT on the demonstrations' answers, 32 demonstrations a step
    grpo       GRPO (group-normalised advantages, clip 0.2): 32 prompts x 8 rollouts a step
    sft-grpo   SFT for half the steps, then GRPO for the other half (half the rollouts)
    hpt        HPT's released switch: gate 0 (SFT on a prompt's demonstration when 0 of its 8
               rollouts are correct), its RL part without std normalisation or clipping

Scaled down from the paper's 7B models, 500 steps of 128 prompts x 8 rollouts and 8192-token
answers to a 2-block width-64 character transformer (~0.1M parameters) on 1-3-digit
addition (out of distribution: 4-5 digits). Finished runs are reused, interrupted ones
resume. Prints greedy exact-match accuracy (mean over seeds, 95% t-interval) on the test and
out-of-distribution problems for the base and every arm, and writes OUT/curves.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import BenchmarkParser, mean_cell, plot_curves, valorl

ARMS = ("sft", "grpo", "sft-grpo", "hpt")


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--task", default="addition")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--base-steps", type=int, default=500)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--skip-report", action="store_true", help="train only")
    args = parser.parse_args()
    out, half = args.out, args.steps // 2
    common = ["--seeds", str(args.seeds), "--eval-every", str(args.eval_every), "--quiet"]
    common += ["--log-every", "25"]
    base = out / "base"
    valorl("lm", "pretrain", "--task", args.task, "--steps", str(args.base_steps),
           *common, "--out", str(base))  # fmt: skip
    start = ["--init-from", str(base), *common]
    valorl("lm", "sft", *start, "--steps", str(args.steps), "--batch-size", "32", "--out",
           str(out / "sft"))  # fmt: skip
    valorl("lm", "rl", *start, "--estimator", "grpo", "--steps", str(args.steps), "--out",
           str(out / "grpo"))  # fmt: skip
    valorl("lm", "sft", *start, "--steps", str(half), "--batch-size", "32", "--out",
           str(out / "sft-half"))  # fmt: skip
    valorl("lm", "rl", "--init-from", str(out / "sft-half"), *common, "--estimator", "grpo",
           "--steps", str(args.steps - half), "--out", str(out / "sft-grpo"))  # fmt: skip
    valorl("lm", "hpt", *start, "--gate", "0", "--steps", str(args.steps), "--out",
           str(out / "hpt"))  # fmt: skip
    if not args.skip_report:
        report(out, half)


def accuracy(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, test accuracy (seeds, rounds), ood accuracy, tokens generated per second)."""
    with np.load(run / "evaluations.npz") as f:
        steps, test, ood = f["steps"], f["returns"].mean(-1), f["ood_returns"].mean(-1)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = np.array([r["tokens_per_s"] for r in records[1:]] or [np.nan])
    return steps, test, ood, rates


def report(out: Path, offset: int) -> None:
    rows = {"base": out / "base", **{arm: out / arm for arm in ARMS}}
    print(f"{'arm':10} {'test accuracy %':>22} {'out-of-distribution %':>24}  tokens/s")
    curves = {}
    for name, run in rows.items():
        steps, test, ood, rates = accuracy(run)
        print(
            f"{name:10} {mean_cell(100 * test[:, -1]):>22} {mean_cell(100 * ood[:, -1]):>24}"
            f"  {np.median(rates):,.0f}"
        )
        if name == "sft-grpo":  # its first half is the SFT run's
            sft_steps, sft_test, _, _ = accuracy(out / "sft-half")
            steps = np.concatenate([sft_steps, steps + offset])
            test = np.concatenate([sft_test, test], axis=1)
        if name != "base":
            curves[name] = (steps, 100 * test)
    plot_curves(curves, "post-training from one base (test accuracy)", out / "curves.png",
                ylabel="exact match %", xlabel="training steps")  # fmt: skip


if __name__ == "__main__":
    main()
