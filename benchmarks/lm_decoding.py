"""Value-guided decoding of a frozen policy: sampling vs VAS vs step-level Q vs best-of-N.

    python benchmarks/lm_decoding.py --policy runs/lm-post-training/sft --out runs/lm-decoding

Tests the claims of Han et al. 2024 ("Value Augmented Sampling for Language Model Alignment
and Personalization", Sec. 5) that a value model of a frozen policy's own samples, added to its
top-k logits, raises reward without touching the policy's weights, and sets it beside two
coarser uses of the same value: choosing among sampled continuations (step-level Q) and
choosing the best of N complete answers (best-of-N by the learned value, the fair comparison;
by the verifier itself, the ceiling).

A value model is trained by TD(lambda) (gamma 1, lambda 0.95) on `--value-steps` x 32 prompts
x 4 samples of the policy, seed for seed; then every method decodes the policy's 256
in-distribution test problems. Prints exact-match accuracy (mean over seeds, 95% t-interval)
with what each method spent per problem: tokens sampled from the policy and candidates scored
by the value (or the verifier). Finished runs and decodings are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import mean_cell, valorl

METHODS = {
    "greedy": ["--method", "greedy"],
    "sample": ["--method", "sample"],
    "vas-b1": ["--method", "vas", "--beta", "1"],
    "vas-b3": ["--method", "vas", "--beta", "3"],
    "vas-b10": ["--method", "vas", "--beta", "10"],
    "step-q-4x2": ["--method", "step-q", "--n", "4", "--step-tokens", "2"],
    "bon-value-4": ["--method", "best-of-n-value", "--n", "4"],
    "bon-value-16": ["--method", "best-of-n-value", "--n", "16"],
    "bon-verifier-4": ["--method", "best-of-n-verifier", "--n", "4"],
    "bon-verifier-16": ["--method", "best-of-n-verifier", "--n", "16"],
}
USES_VALUE = ("vas", "step-q", "best-of-n-value")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True, help="a finished policy run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--value-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    value = args.out / "value"
    steps, seeds = str(args.value_steps), str(args.seeds)
    valorl("lm", "value", "--init-from", str(args.policy), "--steps", steps, "--seeds", seeds,
           "--log-every", "25", "--quiet", "--out", str(value))  # fmt: skip
    for name, flags in METHODS.items():
        target = args.out / f"decode-{name}.json"
        if target.exists():
            continue
        extra = ["--value", str(value)] if flags[1] in USES_VALUE else []
        valorl("lm", "decode", str(args.policy), *flags, *extra, "--json", str(target))
    print(f"{'method':16} {'exact match %':>20} {'policy tokens':>14} {'scored':>8}")
    for name in METHODS:
        record = json.loads((args.out / f"decode-{name}.json").read_text())
        accuracy = 100 * np.asarray(record["accuracy"])
        print(
            f"{name:16} {mean_cell(accuracy):>20} {np.mean(record['policy_tokens']):>14.1f}"
            f" {np.mean(record['scored']):>8.1f}"
        )


if __name__ == "__main__":
    main()
