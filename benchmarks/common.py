"""Pieces the benchmark scripts share: their command line, the `valorl` command, the datasets
valorl builds itself, and the interval cells of their Markdown tables."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from valorl.eval.aggregate import interval_estimate, iqm
from valorl.stats import mean_interval

DATASETS = {
    # id: (collect flags, IQL flags fixed for every variant on this dataset)
    "valorl/pendulum-mixed-v0": (
        "--env Pendulum-v1 --policy random:share=3 --policy pendulum-swingup:noise=0.3 "
        "--steps 60000",
        "--discount 0.95",
    ),
    "valorl/mountaincar-sparse-v0": (
        "--env MountainCarContinuous-v0 --policy random:share=9 "
        "--policy mountaincar-pump:noise=0.5 --steps 100000",
        "--normalize-observations true",
    ),
}


class BenchmarkParser(argparse.ArgumentParser):
    """A benchmark's command line: `--help` prints the script's whole docstring (its arms, its
    scale against the papers', how to rerun it) and every option's default."""

    def __init__(self, doc: str) -> None:
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in (
            action.help or ""
        ):
            default = "default: %(default)s"
            action.help = f"{action.help} ({default})" if action.help else default
        return action


def valorl(*args: str) -> None:
    """Run the `valorl` command installed next to this Python, echoing it first."""
    command = [str(Path(sys.executable).with_name("valorl")), *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def train_arms(
    out: Path, datasets: list[str], names: list[str], recipe: Callable[[str, str], str], flags: str
) -> None:
    """Train (or resume, or reuse) run OUT/NAME-DATASET of every arm on every dataset, each
    with `flags` and its `recipe(name, dataset)` ("agent --flag value ...")."""
    for dataset in datasets:
        for name in names:
            agent, *own = recipe(name, dataset).split()
            run = str(out / f"{name}-{dataset}")
            valorl("train", agent, "--dataset", dataset, *flags.split(), *own, "--out", run)


def short_name(dataset_id: str) -> str:
    return dataset_id.split("/")[-1]


def ensure_dataset(out: Path, dataset_id: str, collect_flags: str | None = None) -> Path:
    """The dataset's directory under `out/data`, collected with `valorl collect` if missing."""
    data_dir = out / "data" / short_name(dataset_id)
    if not data_dir.exists():
        flags = collect_flags if collect_flags is not None else DATASETS[dataset_id][0]
        valorl("collect", *flags.split(), "--id", dataset_id, "--out", str(data_dir), "--quiet")
    return data_dir


def iqm_cell(matrix: np.ndarray, reps: int = 5000) -> str:
    """IQM of a (runs, tasks) score matrix with its 95% stratified-bootstrap interval."""
    point, low, high = interval_estimate(matrix, iqm, reps=reps)
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def mean_cell(values: np.ndarray) -> str:
    """Mean over seeds with its 95% Student-t interval (nan for one seed)."""
    m, lo, hi = mean_interval(values)
    return f"{m:.1f} [{lo:.1f}, {hi:.1f}]"


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    path: Path,
    ylabel: str = "return",
    xlabel: str = "environment steps",
) -> None:
    """Learning curves, name -> (environment steps, values per seed and step): the mean over
    seeds with a 95% normal band, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (steps, values) in curves.items():
        mean = values.mean(axis=0)
        sem = values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0 * mean
        ax.plot(steps, mean, label=name)
        ax.fill_between(steps, mean - 1.96 * sem, mean + 1.96 * sem, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"curves: {path}")


def final_success(run: Path) -> np.ndarray:
    """Each seed's success rate at a run's last evaluation, shape (seeds,)."""
    with np.load(run / "evaluations.npz") as f:
        return f["successes"][:, -1].mean(axis=-1)
