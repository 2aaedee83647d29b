"""What a finished run produced: per-seed returns and scores, read back from its directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from valorl.data.dataset import DatasetInfo
from valorl.stats import mean_interval
from valorl.training.run_dir import RunDir


@dataclasses.dataclass
class RunResult:
    """What a finished (or resumed-and-finished) run produced."""

    path: Path
    eval_steps: np.ndarray
    """(evaluations,) the step of each evaluation round."""
    returns: np.ndarray
    """(seeds, evaluations, episodes) undiscounted returns."""
    scores: np.ndarray | None
    """Same shape, normalised (0 = random, 100 = reference best); None without references."""
    successes: np.ndarray | None = None
    """Same shape, whether each episode ended in success; None for environments that do not
    report `info["success"]`."""

    @property
    def final_success_rates(self) -> np.ndarray | None:
        """Per-seed success rate at the last evaluation; None without successes."""
        if self.successes is None or not self.successes.shape[1]:
            return None
        return self.successes[:, -1].mean(axis=-1)

    @property
    def final_scores(self) -> np.ndarray | None:
        """Per-seed mean normalised score at the last evaluation."""
        return None if self.scores is None else self.scores[:, -1].mean(axis=-1)

    @property
    def final_returns(self) -> np.ndarray | None:
        """Per-seed mean return at the last evaluation; None if the run never evaluated."""
        return self.returns[:, -1].mean(axis=-1) if self.returns.shape[1] else None

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunResult:
        run = RunDir(run_dir)
        evals = run.evaluations()
        returns = evals.get("returns", np.zeros((len(run.config()["seeds"]), 0, 0)))
        return cls(
            path=run.path,
            eval_steps=evals.get("steps", np.zeros(0, int)),
            returns=returns,
            scores=evals.get("normalized_scores"),
            successes=evals.get("successes"),
        )


def write_result(
    run: RunDir,
    info: DatasetInfo,
    eval_steps: list[int],
    eval_returns: np.ndarray,
    step: int,
    eval_successes: np.ndarray | None = None,
) -> None:
    """Finish `run` with result.json: final per-seed returns, scores and success rates (where
    the environment reports success), with 95% intervals."""
    result: dict[str, Any] = {"step": step, "seeds": run.config()["seeds"]}
    if eval_steps:
        final = eval_returns[:, -1].mean(axis=-1)
        result["final_return_per_seed"] = final.tolist()
        scores = info.normalized_score(final)
        if scores is not None:
            mean, low, high = mean_interval(scores)
            result["final_score_per_seed"] = scores.tolist()
            result["final_score"] = {"mean": mean, "ci95": [low, high]}
        if eval_successes is not None and eval_successes.shape[1]:
            rates = eval_successes[:, -1].mean(axis=-1)
            mean, low, high = mean_interval(rates)
            result["final_success_rate_per_seed"] = rates.tolist()
            result["final_success_rate"] = {"mean": mean, "ci95": [low, high]}
    run.write_result(result)
