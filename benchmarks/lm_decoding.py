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

import json
from pathlib import Path

import numpy as np
from common import BenchmarkParser, mean_cell, valorl

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


def pairwise_auc(score: np.ndarray, reward: np.ndarray, groups: np.ndarray | None = None) -> float:
    """P(score of a correct answer > score of a wrong one), ties half; within each group (a
    prompt's samples) only when `groups` is given."""
    wins, pairs = 0.0, 0
    for g in [None] if groups is None else np.unique(groups):
        keep = slice(None) if g is None else groups == g
        pos, neg = score[keep][reward[keep] > 0.5], score[keep][reward[keep] < 0.5]
        wins += (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        pairs += len(pos) * len(neg)
    return wins / max(pairs, 1)


def value_as_verifier(policy: Path, value: Path, seed: int, prompts: int = 256, n: int = 8):
    """How well V of a complete answer tells right from wrong among the policy's samples of
    test prompts: pooled over prompts, and within a prompt's samples (what best-of-N needs);
    the policy's own log-likelihood of the answer beside it."""
    import jax

    from valorl.lm.model import forward, token_logprobs
    from valorl.lm.objectives import sample_rollouts
    from valorl.lm.train import load_params, policy_model, source_settings, task_data

    problems, architecture = source_settings(policy)
    data = task_data(problems)
    model = policy_model(architecture, problems)
    params = jax.tree.map(lambda x: x[0], load_params(policy, (seed,)))
    values = jax.tree.map(lambda x: x[0], load_params(value, (seed,)))
    batch = sample_rollouts(model, params, data.test, jax.random.key(seed), prompts, n, 1.0)
    start = data.test.prompts.shape[1] - 1
    length = np.asarray(batch.mask.sum(1), int)
    v = np.asarray(forward(model.clone(outputs=1), values, batch.sequences))
    v_final = v[np.arange(len(length)), start + length, 0]
    logp = np.asarray(token_logprobs(model, params, batch.sequences)[:, start:] * batch.mask)
    reward, groups = np.asarray(batch.reward), np.repeat(np.arange(prompts), n)
    return {
        "reward": float(reward.mean()),
        "V pooled": pairwise_auc(v_final, reward),
        "V within a prompt": pairwise_auc(v_final, reward, groups),
        "log-likelihood within a prompt": pairwise_auc(logp.sum(1), reward, groups),
    }


def main() -> None:
    parser = BenchmarkParser(__doc__)
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
    print("\nV of a complete answer as a verifier (AUC: P(V(right) > V(wrong))), test prompts:")
    for seed in range(args.seeds):
        cells = value_as_verifier(args.policy, value, seed)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in cells.items()))


if __name__ == "__main__":
    main()
