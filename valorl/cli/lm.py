"""`valorl lm`: small language models on verifiable tasks (see valorl/lm/)."""

from __future__ import annotations

import argparse

from valorl.errors import ValorlError
from valorl.launch.args import add_old_spelling
from valorl.ui import out

DESCRIPTION = """\
Value learning for language models at a scale trained from scratch on this machine: a small
decoder-only transformer (character tokens) on tasks with exact verifiers (addition and
multiplication with answers written least-significant digit first, digit sorting), with
in-distribution test problems and longer, out-of-distribution ones.

  pretrain  a base model: next-token prediction over whole demonstrations, from scratch
  sft       supervised fine-tuning on the demonstrations' answers
  rl        a policy-gradient estimator on the model's own rollouts scored by the verifier
            (--estimator grpo | ppo | reinforce | hpt-rl | sft, or its parts one by one)
  hpt       Hybrid Post-Training: per prompt, SFT on the demonstration when at most --gate of
            its rollouts are correct, RL on the rollouts otherwise (Lv et al. 2025)
  value     a value model of a frozen policy's samples by TD(lambda) (VAS, Han et al. 2024)
  decode    accuracy of a policy under a decoding method: sampling, value-augmented sampling
            (VAS), step-level Q, best-of-N by the learned value or by the verifier

Every run is a directory (config, metrics, evaluations, checkpoint) that resumes where it
stopped; post-training and value runs start from another run (--init-from), seed for seed.
"""

EPILOG = """\
example (a weak base model, then GRPO and HPT from it, 5 seeds):
  valorl lm pretrain --task addition --steps 1500 --seeds 5 --out runs/lm/base
  valorl lm rl --init-from runs/lm/base --estimator grpo --steps 300 --out runs/lm/grpo
  valorl lm hpt --init-from runs/lm/base --gate 0 --steps 300 --out runs/lm/hpt
  valorl lm value --init-from runs/lm/base --steps 300 --out runs/lm/value
  valorl lm decode runs/lm/base --value runs/lm/value --method vas --beta 3
"""


def add_lm_parser(commands) -> None:
    parser = commands.add_parser(
        "lm",
        help="small language models on verifiable tasks: SFT, RL, HPT, value-guided decoding",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stages = parser.add_subparsers(dest="lm_command", required=True, metavar="STAGE")
    for name, help_text in (
        ("pretrain", "train a base model from scratch on the task's demonstrations"),
        ("sft", "supervised fine-tuning on the demonstrations' answers (--init-from RUN)"),
        ("rl", "reinforcement learning from the verifier (--init-from RUN)"),
        ("hpt", "Hybrid Post-Training: SFT or RL per prompt by its success (--init-from RUN)"),
        ("value", "a value model of a frozen policy, by TD(lambda) (--init-from POLICY_RUN)"),
    ):
        stage = stages.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        _add_run_arguments(stage, name)
        stage.set_defaults(run=train_stage)
    decode = stages.add_parser(
        "decode",
        help="accuracy of a policy run under a decoding method, per seed with a 95%% interval",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_decode_arguments(decode)


def _add_run_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--out", required=True, help="the run directory to create or resume")
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained together")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument(
        "--learning-rate", type=float, default=1e-3 if stage == "pretrain" else 3e-4
    )
    parser.add_argument("--grad-clip", type=float, default=1.0, help="global gradient norm clip")
    parser.add_argument("--log-every", type=int, default=50, help="steps per metrics record")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=250,
        help="steps between greedy evaluations on the test and out-of-distribution problems",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if stage == "pretrain":
        parser.add_argument("--task", default="addition", help="addition, multiplication, sorting")
        parser.add_argument("--train-problems", type=int, default=20_000)
        parser.add_argument(
            "--eval-problems",
            type=int,
            default=256,
            help="test and out-of-distribution problems, each",
        )
        parser.add_argument("--problem-seed", type=int, default=0, help="draws the problem sets")
        parser.add_argument("--width", type=int, default=64)
        parser.add_argument("--depth", type=int, default=2, help="transformer blocks")
        parser.add_argument("--heads", type=int, default=4)
    else:
        parser.add_argument(
            "--init-from",
            required=True,
            metavar="RUN",
            help="the finished run to start from (its task and architecture are kept)",
        )
    if stage in ("pretrain", "sft"):
        batch = parser.add_argument(
            "--batch-size", type=int, default=64, help="demonstrations per step"
        )
        add_old_spelling(parser, "--batch", batch)
        return
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step")
    parser.add_argument(
        "--rollouts",
        type=int,
        default=8 if stage != "value" else 4,
        help="samples per prompt",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument(
        "--epochs",
        type=int,
        default=1 if stage != "value" else 2,
        help="gradient steps on each batch of samples",
    )
    if stage == "value":
        parser.add_argument("--lam", type=float, default=0.95, help="TD(lambda)'s lambda")
        return
    from valorl.lm.policy_gradient import ADVANTAGES, AGGREGATIONS, DENOMINATORS, ESTIMATORS, MASKS

    parser.add_argument(
        "--estimator",
        default="grpo" if stage == "rl" else "hpt-rl",
        choices=sorted(ESTIMATORS),
        help="a named setting of the unified policy-gradient estimator",
    )
    parser.add_argument("--mask", choices=MASKS, help="override: stabilisation mask")
    parser.add_argument("--denominator", choices=DENOMINATORS, help="override: pi_ref")
    parser.add_argument("--advantage", choices=ADVANTAGES, help="override: advantage estimate")
    parser.add_argument("--aggregation", choices=AGGREGATIONS, help="override: token averaging")
    parser.add_argument("--clip-epsilon", type=float, help="override: the clip's epsilon")
    if stage == "hpt":
        parser.add_argument(
            "--gate",
            type=int,
            default=0,
            help="SFT on a prompt's demonstration when at most this many rollouts are correct",
        )
        parser.add_argument("--hpt-mode", choices=("switch", "soft"), default="switch")
        parser.add_argument("--sft-weight", type=float, default=1.0, help="the SFT loss's weight")


def _objective(args: argparse.Namespace):
    import dataclasses

    from valorl.lm.objectives import NextToken, PolicyGradient, ValueLearning
    from valorl.lm.policy_gradient import ESTIMATORS

    stage = args.lm_command
    if stage in ("pretrain", "sft"):
        return NextToken(answer_only=stage == "sft", batch=args.batch_size)
    if stage == "value":
        return ValueLearning(args.prompts, args.rollouts, args.lam, args.temperature, args.epochs)
    overrides = {
        field: getattr(args, field)
        for field in ("mask", "denominator", "advantage", "aggregation", "clip_epsilon")
        if getattr(args, field) is not None
    }
    estimator = dataclasses.replace(ESTIMATORS[args.estimator], **overrides)
    hpt = {}
    if stage == "hpt":
        hpt = dict(hpt_gate=args.gate, hpt_mode=args.hpt_mode, sft_weight=args.sft_weight)
    return PolicyGradient(
        estimator, args.prompts, args.rollouts, args.temperature, args.epochs, **hpt
    )


def train_stage(args: argparse.Namespace) -> int:
    from valorl.lm.train import Architecture, LMRun, Problems, source_settings, train

    if args.lm_command == "pretrain":
        problems = Problems(args.task, args.train_problems, args.eval_problems, args.problem_seed)
        architecture = Architecture(args.width, args.depth, args.heads)
        init_from = None
    else:
        problems, architecture = source_settings(args.init_from)
        init_from = args.init_from
    if args.seeds < 1:
        raise ValorlError("--seeds must be at least 1")
    run = LMRun(
        stage=args.lm_command,
        objective=_objective(args),
        problems=problems,
        architecture=architecture,
        steps=args.steps,
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        learning_rate=args.learning_rate,
        grad_clip=args.grad_clip,
        log_every=args.log_every,
        eval_every=args.eval_every,
        init_from=init_from,
    )
    path = train(run, args.out, progress=not args.quiet)
    print_result(path)
    return 0


def print_result(path) -> None:
    """Per seed and mean (95% interval): greedy exact-match accuracy on the in-distribution
    test problems and the out-of-distribution ones; a value run's last metrics."""
    import json
    from pathlib import Path

    from rich.table import Table

    from valorl.stats import mean_interval

    result = json.loads((Path(path) / "result.json").read_text())
    table = Table(title=f"{path} ({result['stage']}, {result['steps']} steps)")
    table.add_column("")
    columns = [k for k in ("test_accuracy", "ood_accuracy") if k in result] or [
        k for k in result if k.startswith("value/")
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for i, seed in enumerate(result["seeds"]):
        table.add_row(f"seed {seed}", *(f"{result[c][i]:.3f}" for c in columns))
    if len(result["seeds"]) > 1:
        cells = []
        for column in columns:
            mean, low, high = mean_interval(result[column])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        table.add_row("mean [95% CI]", *cells)
    out.print(table)


def _add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    from valorl.lm.evaluate import METHODS

    parser.add_argument("policy", metavar="POLICY_RUN", help="a finished policy run")
    parser.add_argument(
        "--value",
        metavar="VALUE_RUN",
        help="a value run of that policy (`valorl lm value`): for vas, step-q, best-of-n-value",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="sample",
        help="greedy; sample; vas: value-augmented sampling (top-k logits + beta * centred V); "
        "step-q: the best of --n continuations of --step-tokens tokens by V; best-of-n-value / "
        "best-of-n-verifier: the best of --n complete answers by V / by the verifier (ceiling)",
    )
    parser.add_argument("--split", choices=("test", "ood"), default="test")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=3.0, help="VAS's value weight")
    parser.add_argument("--top-k", type=int, default=10, help="VAS's candidates per token")
    parser.add_argument("--n", type=int, default=8, help="answers (best-of-n), continuations")
    parser.add_argument("--step-tokens", type=int, default=2, help="step-level Q's step length")
    parser.add_argument("--key", type=int, default=0, help="seeds the sampling")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    parser.set_defaults(run=decode)


def decode(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from valorl.lm.evaluate import Decoding, decode_accuracy
    from valorl.stats import mean_interval

    method = Decoding(
        args.method, args.temperature, args.beta, args.top_k, args.n, args.step_tokens
    )
    result = decode_accuracy(args.policy, method, args.value, args.split, args.key)
    table = Table(title=f"{args.policy}: {args.method} on the {args.split} problems")
    for column in ("", "exact match", "policy tokens / problem", "scored / problem"):
        table.add_column(column, justify="right")
    for i, seed in enumerate(result.seeds):
        table.add_row(
            f"seed {seed}", f"{result.accuracy[i]:.3f}", f"{result.policy_tokens[i]:.1f}",
            f"{result.scored[i]:.1f}",
        )  # fmt: skip
    mean, low, high = mean_interval(result.accuracy)
    table.add_row("mean [95% CI]", f"{mean:.3f} [{low:.3f}, {high:.3f}]", "", "")
    out.print(table)
    out.print(f"{result.tokens_per_second:,.0f} policy tokens sampled per second (compiled)")
    if args.json:
        record = {
            "policy": args.policy, "value": args.value, "split": args.split,
            "decoding": vars(method), "seeds": result.seeds,
            "accuracy": result.accuracy.tolist(),
            "policy_tokens": result.policy_tokens.tolist(), "scored": result.scored.tolist(),
            "seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
        }  # fmt: skip
        from valorl.data.files import atomic_write

        atomic_write(args.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0
