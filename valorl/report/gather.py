"""Gathering runs for a report: run directories in, algorithms × tasks score matrices out.

Each seed of a run directory is one *run* in the sense of Agarwal et al. (2021): one entry of
the (runs × tasks) score matrix. Runs are grouped into

- *tasks* by dataset (its name; the content fingerprint tells re-collected data apart), and
- *algorithms* by agent name plus every hyperparameter (and the training length) in which runs
  of the same agent on the same task differ, labelled by just those keys:
  `iql critic=hl-gauss`. Settings that differ only between tasks (tuned per domain, as papers
  do) keep one algorithm, with a warning naming them.

A run's score is its mean over evaluation episodes at its final evaluation: the normalised
score, or the raw return on a task whose dataset has no reference returns.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from valorl.errors import ValorlError
from valorl.training.run_dir import CONFIG, RunDir

DIAGNOSTICS = "diagnostics.json"

DERIVED_KEYS = ("critic.vmin", "critic.vmax")
"""Hyperparameters a run fits to its data when they are unset (a histogram head's support);
their differing between tasks goes without saying."""

DIAGNOSTICS_KEYS = ("step", "seeds", "q_mean", "mc_return_mean", "bias")
"""The least a `diagnostics.json` must hold to be shown; one of a run trained online holds
the first two and `on_policy` instead (its critic read on its own episodes only)."""


@dataclasses.dataclass(eq=False)
class Run:
    """One run directory: its identity and its per-seed evaluation history."""

    path: Path
    agent: str
    hyperparameters: dict[str, Any]
    """Flattened with dotted keys (`critic.type`, `ensemble.num_qs`), plus `steps`."""
    data_name: str
    fingerprint: str
    seeds: list[int]
    steps: int
    """Planned gradient steps."""
    finished: bool
    eval_steps: np.ndarray
    """(evaluations,) step of each evaluation round."""
    returns: np.ndarray
    """(seeds, evaluations) mean return over the round's episodes."""
    scores: np.ndarray | None
    """(seeds, evaluations) mean normalised score; None without reference returns."""
    episodes: int
    diagnostics: dict[str, Any] | None = None
    diagnostics_error: str | None = None
    task: str = ""
    algorithm: str = ""

    @property
    def last_step(self) -> int:
        return int(self.eval_steps[-1])


@dataclasses.dataclass
class Algorithm:
    label: str
    agent: str
    settings: dict[str, Any]
    """The hyperparameters that tell this algorithm apart from others of the same agent."""
    runs: list[Run]


@dataclasses.dataclass
class Study:
    """Every gathered run, grouped; the input of the analysis."""

    runs: list[Run]
    algorithms: list[Algorithm]
    tasks: list[str]
    normalized: dict[str, bool]
    """Per task: whether its scores are normalised (else raw returns)."""
    warnings: list[str]

    def seed_values(self, run: Run) -> np.ndarray:
        """(seeds, evaluations) scores of a run in its task's unit."""
        return run.scores if self.normalized[run.task] else run.returns

    def cells(self, algorithm: Algorithm) -> dict[str, list[tuple[int, Run, int]]]:
        """Per task (in study order), the algorithm's runs as (seed, run, seed index), by seed."""
        cells: dict[str, list[tuple[int, Run, int]]] = {}
        for task in self.tasks:
            entries = [
                (seed, run, i)
                for run in algorithm.runs
                if run.task == task
                for i, seed in enumerate(run.seeds)
            ]
            if entries:
                cells[task] = sorted(entries, key=lambda e: (e[0], str(e[1].path)))
        return cells

    def matrix(self, algorithm: Algorithm) -> tuple[np.ndarray, list[str]]:
        """The (runs, tasks) matrix of final scores over the tasks the algorithm was run on,
        with each task cut to the smallest number of seeds any of them has (lowest seeds)."""
        cells = self.cells(algorithm)
        n = min(len(v) for v in cells.values())
        columns = [
            [self.seed_values(run)[i, -1] for _, run, i in entries[:n]]
            for entries in cells.values()
        ]
        return np.array(columns, np.float64).T, list(cells)

    def curves(self, algorithm: Algorithm) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(steps, scores, tasks): the evaluation steps every run of the algorithm shares, and
        scores of shape (runs, tasks, steps), seeds cut as in `matrix`."""
        cells = self.cells(algorithm)
        n = min(len(v) for v in cells.values())
        common = None
        for run in algorithm.runs:
            steps = set(run.eval_steps.tolist())
            common = steps if common is None else common & steps
        steps = np.array(sorted(common or ()), np.int64)
        columns = []
        for entries in cells.values():
            column = []
            for _, run, i in entries[:n]:
                where = np.searchsorted(run.eval_steps, steps)
                column.append(self.seed_values(run)[i, where])
            columns.append(column)
        scores = np.array(columns, np.float64).reshape(len(cells), n, len(steps))
        return steps, scores.transpose(1, 0, 2), list(cells)


# ---- loading ----------------------------------------------------------------------------------


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run directories named by `paths`: each is a run, or a directory whose subdirectories
    include runs (`valorl report runs/`). The same run named twice counts once."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValorlError(f"{path} does not exist")
        if (path / CONFIG).is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(
                p for p in path.iterdir() if not p.name.startswith(".") and (p / CONFIG).is_file()
            )
            if not candidates:
                raise ValorlError(
                    f"{path} is not a valorl run (no {CONFIG}) and holds no runs; "
                    "pass directories made by `valorl train`"
                )
        else:
            raise ValorlError(f"{path} is not a valorl run: not a directory")
        for candidate in candidates:
            if all(candidate.resolve() != f.resolve() for f in found):
                found.append(candidate)
    return found


def load_run(path: Path) -> Run:
    """Read one run directory; a missing or empty evaluation history is an error."""
    run_dir = RunDir(path)
    config = run_dir.config()
    try:
        agent = config["agent"]["name"]
        hyperparameters = flatten(config["agent"]["hyperparameters"])
        data = config["data"]
        seeds = [int(s) for s in config["seeds"]]
        steps = int(config["schedule"]["steps"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValorlError(f"{path / CONFIG} is not a valorl run config (missing {exc})") from None
    try:
        evals = run_dir.evaluations()
    except (OSError, ValueError) as exc:
        raise ValorlError(f"{path / 'evaluations.npz'} cannot be read: {exc}") from None
    returns = evals.get("returns")
    if returns is None or returns.ndim != 3 or returns.shape[1] == 0 or returns.shape[2] == 0:
        raise ValorlError(
            f"{path} has no evaluations to report (trained with --eval-episodes 0, or stopped "
            "before its first evaluation); evaluate it with `valorl eval`"
        )
    scores = evals.get("normalized_scores")
    eval_steps = np.asarray(evals.get("steps", np.zeros(0)), np.int64)
    if (
        returns.shape[0] != len(seeds)
        or eval_steps.shape != (returns.shape[1],)
        or (scores is not None and scores.shape != returns.shape)
    ):
        raise ValorlError(
            f"{path / 'evaluations.npz'} does not match the run's {len(seeds)} seeds "
            f"(returns {returns.shape}, steps {eval_steps.shape})"
        )
    if not np.all(np.isfinite(returns)):
        raise ValorlError(f"{path / 'evaluations.npz'} holds non-finite returns")
    run = Run(
        path=path,
        agent=str(agent),
        hyperparameters=hyperparameters
        | {"steps": steps, "mode": config["schedule"].get("mode", "offline")},
        data_name=str(data.get("name") or data.get("source") or "data"),
        fingerprint=str(data.get("fingerprint") or ""),
        seeds=seeds,
        steps=steps,
        finished=run_dir.finished,
        eval_steps=eval_steps,
        returns=returns.mean(axis=-1),
        scores=None if scores is None else scores.mean(axis=-1),
        episodes=int(returns.shape[2]),
    )
    run.diagnostics, run.diagnostics_error = load_diagnostics(path)
    return run


def load_diagnostics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A run's `diagnostics.json` (written by `valorl diagnose`), or why it cannot be shown."""
    file = path / DIAGNOSTICS
    if not file.is_file():
        return None, None
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{file} cannot be read: {exc}"
    if not isinstance(data, dict):
        return None, f"{file} is not a JSON object"
    required = DIAGNOSTICS_KEYS[:2] if "on_policy" in data else DIAGNOSTICS_KEYS
    missing = [k for k in required if k not in data]
    if missing:
        return None, f"{file} lacks {', '.join(missing)}"
    return data, None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as one level with dotted keys; lists become tuples."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, name + ".")
        elif isinstance(value, list):
            flat[name] = tuple(value)
        else:
            flat[name] = value
    return flat


# ---- grouping ---------------------------------------------------------------------------------


def gather(paths: Sequence[str | os.PathLike]) -> Study:
    """Load the runs named by `paths` and group them into algorithms and tasks."""
    runs = [load_run(p) for p in expand_paths(paths)]
    warnings: list[str] = []
    tasks = _assign_tasks(runs, warnings)
    algorithms = _group_algorithms(runs)
    normalized = {t: all(r.scores is not None for r in runs if r.task == t) for t in tasks}
    study = Study(runs, algorithms, tasks, normalized, warnings)
    _check(study)
    return study


def _assign_tasks(runs: list[Run], warnings: list[str]) -> list[str]:
    """Tasks by dataset name; the same name with different contents becomes separate tasks."""
    tasks: list[str] = []
    by_name: dict[str, list[str]] = {}
    for run in runs:
        prints = by_name.setdefault(run.data_name, [])
        if run.fingerprint not in prints:
            prints.append(run.fingerprint)
    for run in runs:
        prints = by_name[run.data_name]
        run.task = run.data_name
        if len(prints) > 1:
            run.task = f"{run.data_name} ({run.fingerprint[:8] or 'no fingerprint'})"
        if run.task not in tasks:
            tasks.append(run.task)
    for name, prints in by_name.items():
        if len(prints) > 1:
            warnings.append(
                f"dataset {name} appears with {len(prints)} different contents (fingerprints): "
                "each is a separate task"
            )
    return tasks


def _group_algorithms(runs: list[Run]) -> list[Algorithm]:
    algorithms: list[Algorithm] = []
    for agent in dict.fromkeys(r.agent for r in runs):
        mine = [r for r in runs if r.agent == agent]
        keys = distinguishing_keys([r.hyperparameters for r in mine], [r.task for r in mine])
        groups: dict[tuple, list[Run]] = {}
        for run in mine:
            identity = tuple(_hashable(run.hyperparameters.get(k)) for k in keys)
            groups.setdefault(identity, []).append(run)
        for members in groups.values():
            settings = {k: members[0].hyperparameters.get(k) for k in keys}
            label = algorithm_label(agent, settings)
            for run in members:
                run.algorithm = label
            algorithms.append(Algorithm(label, agent, settings, members))
    return algorithms


def distinguishing_keys(configs: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """The hyperparameters that tell runs of one agent apart: every key in which two runs on
    the same task differ (among the runs that have the key: a key only some runs have, like
    the bin count of a histogram critic head, is told apart by the key that selects the head).

    A key that differs only between tasks (a support fitted to each dataset, a training length
    or an expectile chosen per domain, as papers do) is per-task tuning of one algorithm:
    those runs cannot be compared with each other anyway, only side by side across tasks."""
    names = list(dict.fromkeys(k for c in configs for k in c))
    keys = []
    for key in names:
        values: dict[str, set] = {}
        for config, task in zip(configs, tasks, strict=True):
            if key in config:
                values.setdefault(task, set()).add(_hashable(config[key]))
        if any(len(v) > 1 for v in values.values()):
            keys.append(key)
    return keys


def per_task_settings(algorithm: Algorithm) -> dict[str, dict[str, Any]]:
    """Hyperparameters that differ between the algorithm's tasks (never within one), except
    data-fitted ones: {key: {task: value}}."""
    varying = {}
    names = dict.fromkeys(k for r in algorithm.runs for k in r.hyperparameters)
    for key in names:
        if key in DERIVED_KEYS:
            continue
        by_task = {r.task: r.hyperparameters.get(key) for r in algorithm.runs}
        if len({_hashable(v) for v in by_task.values()}) > 1:
            varying[key] = by_task
    return varying


def algorithm_label(agent: str, settings: dict[str, Any]) -> str:
    """`iql critic=hl-gauss bins=101`: the agent and its distinguishing settings, each under its
    flag name (the last part of its key; a tagged head's type under the head's name), and
    skipping settings the algorithm does not have."""
    short = {k: k.split(".")[-2] if k.endswith(".type") else k.split(".")[-1] for k in settings}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    parts = [agent]
    for key, value in settings.items():
        if value is None:
            continue
        name = key if short[key] in clashes else short[key]
        parts.append(f"{name}={format_value(value)}")
    return " ".join(parts)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(format_value(v) for v in value)
    return str(value)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


# ---- checks -----------------------------------------------------------------------------------


def _check(study: Study) -> None:
    warnings = study.warnings
    for run in study.runs:
        if not run.finished:
            warnings.append(
                f"{run.path} is unfinished (last evaluation at step {run.last_step} of "
                f"{run.steps}): its scores are from that evaluation"
            )
        if run.diagnostics_error:
            warnings.append(run.diagnostics_error)
    raw = [t for t in study.tasks if not study.normalized[t]]
    if raw:
        warnings.append(
            f"no reference returns for {', '.join(raw)}: scores there are raw returns, not "
            "normalised scores"
            + (", so aggregates across tasks mix scales" if len(study.tasks) > 1 else "")
        )
    for algorithm in study.algorithms:
        cells = study.cells(algorithm)
        counts = {task: len(entries) for task, entries in cells.items()}
        if len(set(counts.values())) > 1:
            n = min(counts.values())
            shown = ", ".join(f"{c} on {t}" for t, c in counts.items())
            warnings.append(
                f"{algorithm.label} has different seed counts per task ({shown}): aggregates "
                f"use the {n} lowest seeds of each task"
            )
        for key, by_task in per_task_settings(algorithm).items():
            shown = "; ".join(f"{format_value(v)} on {t}" for t, v in by_task.items())
            warnings.append(
                f"{algorithm.label}: {key} differs between tasks ({shown}); treated as tuned "
                "per task"
            )
        missing = [t for t in study.tasks if t not in cells]
        if missing:
            warnings.append(
                f"{algorithm.label} was not run on {', '.join(missing)}: its aggregates cover "
                f"only {', '.join(cells)}"
            )
        if min(counts.values()) == 1:
            warnings.append(f"{algorithm.label} has a single seed per task: no spread to estimate")
        for task, entries in cells.items():
            seeds = [seed for seed, _, _ in entries]
            repeated = sorted({s for s in seeds if seeds.count(s) > 1})
            if repeated:
                warnings.append(
                    f"{algorithm.label} on {task} has seed(s) {', '.join(map(str, repeated))} "
                    "in more than one run directory: they count as separate runs"
                )
