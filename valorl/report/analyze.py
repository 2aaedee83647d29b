"""The numbers of a report: aggregates, profiles, improvement probabilities, curves.

Everything here works on a gathered `Study` and returns plain JSON-ready values (`summary.json`
is exactly this); figures and the HTML page only draw what is computed here. Intervals are
stratified-bootstrap percentile intervals (`valorl.eval.aggregate`), except the per-dataset
table, which gives a Student-t interval over seeds (`valorl.stats.mean_interval`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from valorl.eval import aggregate
from valorl.report.gather import Study, format_value
from valorl.stats import mean_interval

PROFILE_POINTS = 101


@dataclasses.dataclass(frozen=True)
class Settings:
    """How intervals are estimated."""

    reps: int = 2000
    """Bootstrap resamples."""
    confidence: float = 0.95
    seed: int = 0
    """Seed of the bootstrap resamples."""


def analyze(study: Study, settings: Settings) -> dict[str, Any]:
    """The report's numbers; see the keys below (also documented in the HTML page)."""
    normalized = all(study.normalized.values())
    metrics = [m for m in aggregate.METRICS if normalized or m != "optimality_gap"]
    if not normalized:
        study.warnings.append(
            "optimality gap (distance to a normalised score of 100) is left out: some tasks "
            "have raw returns"
        )
    matrices = {a.label: study.matrix(a) for a in study.algorithms}
    return {
        "score_unit": "normalised score" if normalized else "score (raw return where unnormalised)",
        "normalized": normalized,
        "confidence": settings.confidence,
        "bootstrap_reps": settings.reps,
        "bootstrap_seed": settings.seed,
        "metrics": metrics,
        "tasks": [
            {"name": t, "normalized": study.normalized[t], "unit": _unit(study, t)}
            for t in study.tasks
        ],
        "algorithms": [
            {
                "label": a.label,
                "agent": a.agent,
                "settings": {k: _json(v) for k, v in a.settings.items()},
                "run_dirs": [str(r.path) for r in a.runs],
                "tasks": matrices[a.label][1],
                "runs_per_task": int(matrices[a.label][0].shape[0]),
                "scores": _json(matrices[a.label][0]),
            }
            for a in study.algorithms
        ],
        "aggregates": {
            label: {
                m: _interval(
                    aggregate.interval_estimate(
                        matrix,
                        aggregate.METRICS[m],
                        reps=settings.reps,
                        confidence=settings.confidence,
                        seed=settings.seed,
                    )
                )
                for m in metrics
            }
            for label, (matrix, _) in matrices.items()
        },
        "performance_profile": _profiles(matrices, settings),
        "probability_of_improvement": _improvements(matrices, settings),
        "learning_curves": _curves(study, settings),
        "per_task": _per_task(study, settings),
        "runs": [
            {
                "path": str(r.path),
                "algorithm": r.algorithm,
                "agent": r.agent,
                "task": r.task,
                "seeds": r.seeds,
                "finished": r.finished,
                "step": r.last_step,
                "steps": r.steps,
                "evaluations": len(r.eval_steps),
                "episodes": r.episodes,
                "final_return_per_seed": _json(r.returns[:, -1]),
                "final_score_per_seed": None if r.scores is None else _json(r.scores[:, -1]),
            }
            for r in study.runs
        ],
        "diagnostics": [
            {"path": str(r.path), "algorithm": r.algorithm, "task": r.task, **r.diagnostics}
            for r in study.runs
            if r.diagnostics is not None
        ],
        "without_diagnostics": [str(r.path) for r in study.runs if r.diagnostics is None],
        "warnings": study.warnings,
    }


def _profiles(matrices: dict[str, tuple[np.ndarray, list[str]]], settings: Settings) -> dict:
    """Performance profiles on one grid of thresholds spanning every final score."""
    every = np.concatenate([m.ravel() for m, _ in matrices.values()])
    low, high = float(every.min()), float(every.max())
    pad = 0.05 * (high - low) if high > low else 1.0
    thresholds = np.linspace(low - pad, high + pad, PROFILE_POINTS)
    profiles = {}
    for label, (matrix, _) in matrices.items():
        point, lo, hi = aggregate.profile_interval(
            matrix,
            thresholds,
            reps=settings.reps,
            confidence=settings.confidence,
            seed=settings.seed,
        )
        profiles[label] = {"point": _json(point), "low": _json(lo), "high": _json(hi)}
    return {"thresholds": _json(thresholds), "profiles": profiles}


def _improvements(
    matrices: dict[str, tuple[np.ndarray, list[str]]], settings: Settings
) -> list[dict[str, Any]]:
    """P(X > Y) for every ordered pair of algorithms, on the tasks both were run on."""
    pairs = []
    for x, (mx, tx) in matrices.items():
        for y, (my, ty) in matrices.items():
            if x == y:
                continue
            shared = [t for t in tx if t in ty]
            entry: dict[str, Any] = {"x": x, "y": y, "tasks": shared}
            if shared:
                entry |= _interval(
                    aggregate.probability_of_improvement_interval(
                        mx[:, [tx.index(t) for t in shared]],
                        my[:, [ty.index(t) for t in shared]],
                        reps=settings.reps,
                        confidence=settings.confidence,
                        seed=settings.seed,
                    )
                )
            else:
                entry |= {"point": None, "low": None, "high": None}
            pairs.append(entry)
    return pairs


def _curves(study: Study, settings: Settings) -> dict[str, Any]:
    """IQM over training steps with a bootstrap band, over all tasks and per task."""
    curves: dict[str, Any] = {}
    for algorithm in study.algorithms:
        steps, scores, tasks = study.curves(algorithm)
        if len(steps) == 0:
            study.warnings.append(
                f"{algorithm.label}: its runs share no evaluation step, so it has no learning curve"
            )
            continue

        def band(values: np.ndarray) -> dict[str, Any]:
            point, low, high = aggregate.curve_interval(
                values,
                aggregate.iqm,
                reps=settings.reps,
                confidence=settings.confidence,
                seed=settings.seed,
            )
            return {"point": _json(point), "low": _json(low), "high": _json(high)}

        curves[algorithm.label] = {
            "steps": _json(steps),
            "all_tasks": band(scores),
            "per_task": {t: band(scores[:, [i]]) for i, t in enumerate(tasks)},
        }
    return curves


def _per_task(study: Study, settings: Settings) -> list[dict[str, Any]]:
    """Per algorithm and task, over all its seeds: final score and return with t-intervals."""
    rows = []
    for algorithm in study.algorithms:
        for task, entries in study.cells(algorithm).items():
            scores = [study.seed_values(run)[i, -1] for _, run, i in entries]
            returns = [run.returns[i, -1] for _, run, i in entries]
            runs = list(dict.fromkeys(run for _, run, _ in entries))
            rows.append(
                {
                    "algorithm": algorithm.label,
                    "task": task,
                    "unit": _unit(study, task),
                    "score": _interval(mean_interval(scores, settings.confidence)),
                    "return": _interval(mean_interval(returns, settings.confidence)),
                    "seeds": len(entries),
                    "steps": sorted({r.last_step for r in runs}),
                    "planned_steps": sorted({r.steps for r in runs}),
                    "unfinished": sum(not r.finished for r in runs),
                }
            )
    return rows


def _unit(study: Study, task: str) -> str:
    return "normalised score" if study.normalized[task] else "return"


def _interval(values: tuple[float, float, float]) -> dict[str, float | None]:
    point, low, high = (_json(float(v)) for v in values)
    return {"point": point, "low": low, "high": high}


def _json(value: Any) -> Any:
    """Strict JSON: arrays as lists, NaN and infinities as null, settings as their text."""
    if isinstance(value, np.ndarray):
        return [_json(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return format_value(value)
