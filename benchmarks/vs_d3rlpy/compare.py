"""valorl against d3rlpy 2.8.1: IQL, TD3+BC and BC on the same Minari datasets, with the same
gradient steps, batch size, networks, discount, seeds and hyperparameters; one table of final
normalised scores and training throughput.

    bash benchmarks/vs_d3rlpy/setup.sh        # d3rlpy's own environment, once
    python benchmarks/vs_d3rlpy/compare.py --datasets valorl/pendulum-mixed-v0 \\
        --algos iql td3_bc bc --steps 30000 --seeds 5 --batch-size 256 --hidden 256,256 \\
        --eval-episodes 10 --out runs/vs-d3rlpy

Runs in valorl's environment. A dataset is anything `valorl.load_dataset` reads that is a
Minari directory (a local Minari id, or the directory itself), since d3rlpy reads it too. For
each dataset and algorithm:

  - valorl: `valorl.train` trains all seeds together (vmapped) in ten equal chunks and
    evaluates once, at the end. Its updates/s come from the run's metrics.jsonl, which records
    each chunk's steps and wall time; the first chunk includes compilation and is left out.
  - d3rlpy: `d3rlpy_side.py` runs in d3rlpy's environment (`--d3rlpy-python`) on the same
    dataset directory, one seed after another, with every hyperparameter taken from valorl's
    agent config so both libraries use valorl's defaults (the paper settings); its updates/s
    leave out the same first tenth of the steps. What is and is not matched between the
    libraries is listed in d3rlpy_side.py's docstring.

Both libraries' returns are normalised with the dataset's reference returns (0 = random, 100 =
reference best) and aggregated over seeds: the interquartile mean with its 95%
stratified-bootstrap interval. Seeds 0..K-1 in both, evaluated on the same episode starts.

Every finished piece is cached under --out (valorl's run directory and summary, and each
d3rlpy seed's JSON line), in a directory named by the dataset's content hash and the settings,
so an interrupted benchmark resumes where it stopped and a rerun only prints the table. (A
valorl run resumed from a checkpoint times one more compiling chunk, which lowers its rate.)
Writes the table and all raw numbers to OUT/results.json.

Throughput is measured while nothing else of the benchmark runs, valorl and d3rlpy one after
the other; background load on the machine affects both. On a loaded machine torch's default
OpenMP threads spin against the load and d3rlpy slows down many times: `--torch-threads 1`
(or OMP_WAIT_POLICY=PASSIVE) avoids that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import valorl
from valorl.agents import Agent
from valorl.data.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import iqm_cell, short_name  # benchmarks/common.py

HERE = Path(__file__).resolve().parent
ALGOS = ("iql", "td3_bc", "bc")
CHUNKS = 10  # valorl's training chunks; the first (compilation) is left out of updates/s


def hidden_dims(text: str) -> tuple[int, ...]:
    return tuple(int(h) for h in text.split(","))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        required=True,
        help="local Minari ids or Minari dataset directories",
    )
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--steps", type=int, default=30_000, help="gradient steps per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--hidden", type=hidden_dims, default=(256, 256), help="hidden layer sizes, every network"
    )
    parser.add_argument("--discount", type=float, default=0.99, help="IQL and TD3+BC")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/vs-d3rlpy"))
    parser.add_argument(
        "--d3rlpy-python",
        type=Path,
        default=HERE / ".venv/bin/python",
        help="python of the d3rlpy environment (made by setup.sh)",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch threads for d3rlpy (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.steps % (2 * CHUNKS):
        parser.error(
            f"--steps must be a multiple of {2 * CHUNKS} (ten equal chunks of an even "
            f"number of steps, for TD3+BC's two batches per update), got {args.steps}"
        )
    if args.seeds < 1 or args.eval_episodes < 1:
        parser.error("--seeds and --eval-episodes must be at least 1")
    if not args.d3rlpy_python.is_file():
        raise SystemExit(
            f"compare.py: no d3rlpy environment at {args.d3rlpy_python}; run "
            "`bash benchmarks/vs_d3rlpy/setup.sh` or pass --d3rlpy-python"
        )
    return args


def load(name: str) -> Dataset:
    """The dataset, checked to be a Minari directory with an environment and references."""
    ds = valorl.load_dataset(name)
    source = Path(ds.info.source)
    if not any((d / "metadata.json").is_file() for d in (source, source / "data")):
        raise valorl.ValorlError(f"{name}: d3rlpy reads Minari datasets; {source} is not one")
    if ds.info.env_id is None:
        raise valorl.ValorlError(f"{name}: the dataset names no environment to evaluate in")
    if ds.info.ref_min_score is None or ds.info.ref_max_score is None:
        raise valorl.ValorlError(f"{name}: no reference returns, so no normalised scores")
    return ds


def make_agent(algo: str, args: argparse.Namespace) -> Agent:
    shared: dict[str, Any] = dict(hidden_dims=args.hidden, batch_size=args.batch_size)
    if algo != "bc":
        shared["discount"] = args.discount
    return valorl.make_agent(algo, **shared)


def d3rlpy_options(agent: Agent, ds: Dataset) -> dict[str, Any]:
    """d3rlpy_side.py's options for valorl's settings of `agent` (True: a bare flag)."""
    options: dict[str, Any] = {
        "hidden": ",".join(map(str, agent.hidden_dims)),
        "batch-size": agent.batch_size,
        "normalize-observations": agent.normalize_observations,
    }
    if agent.reward_normalization == "return_range":
        returns = ds.episode_returns()
        options["return-range"] = f"{float(returns.min())!r},{float(returns.max())!r}"
    if agent.name == "bc":
        return options | {"lr": agent.lr}
    options |= {
        "discount": agent.discount,
        "tau": agent.tau,
        "actor-lr": agent.actor_lr,
        "critic-lr": agent.critic_lr,
    }
    if agent.name == "td3_bc":
        return options | {
            "alpha": agent.alpha,
            "policy-noise": agent.policy_noise,
            "noise-clip": agent.noise_clip,
            "policy-freq": agent.policy_freq,
        }
    if agent.value_lr != agent.critic_lr:
        raise valorl.ValorlError("d3rlpy's IQL trains Q and V with one learning rate")
    return options | {
        "expectile": agent.expectile,
        "beta": agent.beta,
        "max-weight": agent.max_weight,
        "cosine-actor-lr": agent.actor_lr_schedule == "cosine",
    }


def command_line(options: dict[str, Any]) -> list[str]:
    """`--name=value` per option (negative numbers too), a bare `--name` for True, nothing for
    False or None."""
    return [
        f"--{name}" if value is True else f"--{name}={value}"
        for name, value in options.items()
        if value is not False and value is not None
    ]


def cell_dir(args: argparse.Namespace, ds: Dataset, algo: str) -> Path:
    """Where one dataset and algorithm's pieces are cached: named by the data's content hash
    and every setting but the seed count (valorl's run is per seed count, d3rlpy's per seed)."""
    hidden = "x".join(map(str, args.hidden))
    settings = f"{args.steps}steps-b{args.batch_size}-h{hidden}-g{args.discount}"
    return (
        args.out
        / f"{short_name(ds.info.name)}-{ds.fingerprint()[:8]}"
        / f"{algo}-{settings}-ep{args.eval_episodes}"
    )


def run_valorl(agent: Agent, ds: Dataset, args: argparse.Namespace, cell: Path) -> dict[str, Any]:
    """Train every seed together (or reuse the finished run); returns and throughput."""
    summary = cell / f"valorl-{args.seeds}seeds.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    result = valorl.train(
        agent,
        ds,
        steps=args.steps,
        seeds=args.seeds,
        log_every=args.steps // CHUNKS,
        eval_every=args.steps,
        eval_episodes=args.eval_episodes,
        out=cell / f"valorl-{args.seeds}seeds",
    )
    chunks = [json.loads(line) for line in (result.path / "metrics.jsonl").open()]
    steps = np.diff([0] + [c["step"] for c in chunks])
    wall = np.array([c["wall_s"] for c in chunks])
    total = float(steps[1:].sum() * args.seeds / wall[1:].sum())
    record = {
        "library": "valorl",
        "version": valorl.__version__,
        "seeds": list(range(args.seeds)),
        "returns": result.returns[:, -1].tolist(),
        "updates_per_s": total,
        "updates_per_s_per_seed": total / args.seeds,
        "train_s": float(wall.sum()),
        "first_chunk_s": float(wall[0]),
        "run": str(result.path),
    }
    summary.write_text(json.dumps(record, indent=1))
    return record


def run_d3rlpy(
    agent: Agent, ds: Dataset, args: argparse.Namespace, cell: Path
) -> list[dict[str, Any]]:
    """Each seed's JSON line from d3rlpy_side.py, running only the seeds not cached yet."""

    def path(seed: int) -> Path:
        return cell / f"d3rlpy-seed{seed}.json"

    missing = [s for s in range(args.seeds) if not path(s).is_file()]
    if missing:
        options = {
            "dataset-dir": ds.info.source,
            "env": ds.info.env_id,
            "algo": agent.name,
            "steps": args.steps,
            "untimed-steps": args.steps // CHUNKS,
            "eval-episodes": args.eval_episodes,
            "torch-threads": args.torch_threads,
            **d3rlpy_options(agent, ds),
        }
        script = HERE / "d3rlpy_side.py"
        command = [str(args.d3rlpy_python), str(script), *command_line(options), "--seeds"]
        command += map(str, missing)
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout or ():
                if line.startswith("{"):
                    record = json.loads(line)
                    path(record["seed"]).write_text(json.dumps(record, indent=1))
                    print(
                        f"  d3rlpy seed {record['seed']}: {record['updates_per_s']:.1f} "
                        f"updates/s, mean return {np.mean(record['returns']):.1f}",
                        flush=True,
                    )
        if proc.returncode:
            raise valorl.ValorlError(
                f"d3rlpy_side.py failed (exit {proc.returncode}) on {ds.info.name} "
                f"{agent.name}; its messages are above"
            )
    return [json.loads(path(s).read_text()) for s in range(args.seeds)]


def summarise(
    ds: Dataset, valorl_run: dict[str, Any], d3rlpy_runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per-seed scores and both libraries' table cells for one dataset and algorithm."""
    valorl_scores = ds.info.normalized_score(np.mean(valorl_run["returns"], axis=1))
    d3rlpy_scores = ds.info.normalized_score([np.mean(r["returns"]) for r in d3rlpy_runs])
    # d3rlpy runs one seed after another: its rate over all seeds is total steps / total time
    d3rlpy_steps = sum(r["timed_steps"] for r in d3rlpy_runs)
    d3rlpy_rate = d3rlpy_steps / sum(r["timed_s"] for r in d3rlpy_runs)
    return {
        "valorl": {
            **valorl_run,
            "scores": valorl_scores.tolist(),
            "score_iqm": iqm_cell(valorl_scores[:, None]),
        },
        "d3rlpy": {
            "seeds": d3rlpy_runs,
            "scores": d3rlpy_scores.tolist(),
            "score_iqm": iqm_cell(d3rlpy_scores[:, None]),
            "updates_per_s": d3rlpy_rate,
        },
        "ratio": valorl_run["updates_per_s"] / d3rlpy_rate,
        "ratio_per_seed": valorl_run["updates_per_s_per_seed"] / d3rlpy_rate,
    }


def table(cells: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| dataset | algorithm | valorl score IQM [95% CI] | d3rlpy score IQM [95% CI] | "
        "valorl updates/s, all seeds (per seed) | d3rlpy updates/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        v, d = c["valorl"], c["d3rlpy"]
        lines.append(
            f"| {c['dataset']} | {c['algo']} | {v['score_iqm']} | {d['score_iqm']} | "
            f"{v['updates_per_s']:,.0f} ({v['updates_per_s_per_seed']:,.0f}) | "
            f"{d['updates_per_s']:,.1f} | {c['ratio']:.1f}× |"
        )
    hidden = ",".join(map(str, args.hidden))
    lines += [
        "",
        f"{args.seeds} seeds, {args.steps} gradient steps each, batch {args.batch_size}, "
        f"hidden {hidden}, {args.eval_episodes} evaluation episodes per seed. Scores: final "
        "returns normalised with the dataset's references (0 = random, 100 = reference best), "
        "IQM over seeds [95% stratified-bootstrap interval]. Updates/s: gradient steps "
        "(batches) per second, sampling included, leaving out the first "
        f"{100 // CHUNKS}% of training (valorl's compilation). valorl trains its seeds together "
        "(vmapped): 'all seeds' counts every seed's steps, '(per seed)' divides by the seed "
        "count. d3rlpy trains one seed at a time, so its rate per seed is also its rate over "
        "all seeds. ratio = valorl all seeds / d3rlpy: how much sooner valorl finishes the "
        "same seeds.",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    try:
        datasets = {name: load(name) for name in args.datasets}
        cells = []
        for name, ds in datasets.items():
            for algo in args.algos:
                agent = make_agent(algo, args)
                cell = cell_dir(args, ds, algo)
                cell.mkdir(parents=True, exist_ok=True)
                print(f"== {name} / {algo}: valorl, {args.seeds} seeds together", flush=True)
                valorl_run = run_valorl(agent, ds, args, cell)
                print(f"== {name} / {algo}: d3rlpy, one seed at a time", flush=True)
                d3rlpy_runs = run_d3rlpy(agent, ds, args, cell)
                cells.append(
                    {
                        "dataset": ds.info.name,
                        "source": ds.info.source,
                        "algo": algo,
                        **summarise(ds, valorl_run, d3rlpy_runs),
                    }
                )
    except valorl.ValorlError as exc:
        raise SystemExit(f"compare.py: {exc}") from None
    text = table(cells, args)
    print(text)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "table": text, "cells": cells}, indent=1)
    )
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
