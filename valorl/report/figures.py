"""The report's figures, drawn with matplotlib from the numbers in `summary.json`.

Figures are built as `matplotlib.figure.Figure` objects and rendered by the Agg canvas, never
through pyplot, so drawing needs no display and touches no global state. Each function takes
the summary dict (see `analyze.py`) and returns a figure, or None when there is nothing to draw.
The styles follow rliable's plots (Agarwal et al. 2021): horizontal interval bars per algorithm
with the point estimate marked, and curves with shaded bootstrap bands.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

METRIC_TITLES = {
    "mean": "Mean",
    "median": "Median",
    "iqm": "IQM",
    "optimality_gap": "Optimality gap (lower is better)",
}
DPI = 110


def colors(labels: list[str]) -> dict[str, Any]:
    """One colour per algorithm, the same in every figure."""
    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def _labels(summary: dict[str, Any]) -> list[str]:
    return [a["label"] for a in summary["algorithms"]]


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def interval_estimates(summary: dict[str, Any]) -> Figure:
    """One panel per aggregate metric: a bar over each algorithm's interval, a black tick at
    its point estimate."""
    labels = _labels(summary)
    metrics = summary["metrics"]
    color = colors(labels)
    height = 0.9 + 0.45 * len(labels)
    fig = Figure(figsize=(2.1 + 2.6 * len(metrics), height), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for row, label in enumerate(labels):
            est = summary["aggregates"][label][metric]
            point, low, high = est["point"], est["low"], est["high"]
            if low is not None and high is not None:
                width = max(high - low, 1e-9)
                ax.barh(row, width, left=low, height=0.6, color=color[label], alpha=0.75)
            if point is not None:
                ax.vlines(point, row - 0.3, row + 0.3, color="black", linewidth=1.8)
        ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
        ax.margins(x=0.12)
        _style(ax)
        ax.tick_params(axis="y", length=0)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].set_ylim(len(labels) - 0.4, -0.6)
    fig.supxlabel(summary["score_unit"], fontsize=10)
    return fig


def performance_profile(summary: dict[str, Any]) -> Figure:
    """Fraction of runs scoring above τ against τ, with a pointwise bootstrap band."""
    labels = _labels(summary)
    color = colors(labels)
    profile = summary["performance_profile"]
    tau = np.asarray(profile["thresholds"], np.float64)
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for label in labels:
        curve = profile["profiles"][label]
        ax.plot(tau, curve["point"], color=color[label], linewidth=2, label=label)
        ax.fill_between(tau, curve["low"], curve["high"], color=color[label], alpha=0.2)
    ax.set_xlabel(f"{summary['score_unit']} (τ)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize=9, frameon=False)
    _style(ax)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def probability_of_improvement(summary: dict[str, Any]) -> Figure | None:
    """P(X > Y) with its interval for each pair of algorithms (each pair once): X on the left
    axis, Y on the right, 0.5 marked as no difference."""
    labels = _labels(summary)
    pairs = [
        p
        for p in summary["probability_of_improvement"]
        if p["point"] is not None and labels.index(p["x"]) < labels.index(p["y"])
    ]
    if not pairs:
        return None
    color = colors(labels)
    fig = Figure(figsize=(7.5, 0.9 + 0.5 * len(pairs)), layout="constrained")
    ax = fig.subplots()
    for row, pair in enumerate(pairs):
        width = max(pair["high"] - pair["low"], 0.004)
        ax.barh(row, width, left=pair["low"], height=0.6, color=color[pair["x"]], alpha=0.75)
        ax.vlines(pair["point"], row - 0.3, row + 0.3, color="black", linewidth=1.8)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_yticks(range(len(pairs)), [p["x"] for p in pairs])
    ax.set_ylim(len(pairs) - 0.4, -0.6)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(len(pairs)), [p["y"] for p in pairs])
    right.spines[["top"]].set_visible(False)
    ax.set_xlabel("P(X > Y): the chance that a run of X (left) beats a run of Y (right)")
    _style(ax)
    return fig


def learning_curves(summary: dict[str, Any]) -> Figure | None:
    """IQM over training steps with a bootstrap band: over all tasks, then one panel per task
    when there are several."""
    curves = summary["learning_curves"]
    if not curves:
        return None
    labels = [label for label in _labels(summary) if label in curves]
    color = colors(_labels(summary))
    tasks = [t["name"] for t in summary["tasks"]]
    panels = [("all tasks", None)] + ([(t, t) for t in tasks] if len(tasks) > 1 else [])
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4.6 * columns + 1.2, 3.4 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, task) in zip(axes, panels, strict=False):
        for label in labels:
            curve = curves[label]
            band = curve["all_tasks"] if task is None else curve["per_task"].get(task)
            if band is None:
                continue
            steps = np.asarray(curve["steps"], np.float64)
            ax.plot(steps, band["point"], color=color[label], linewidth=2, marker=".", label=label)
            ax.fill_between(steps, band["low"], band["high"], color=color[label], alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training steps")
        ax.set_ylabel(f"IQM {summary['score_unit']}" if task is None else "IQM score")
        _style(ax)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    if len(panels) == 1:
        axes[0].legend(handles, names, loc="best", fontsize=9, frameon=False)
    else:
        fig.legend(handles, names, loc="outside right upper", fontsize=9, frameon=False)
    return fig


FIGURES = {
    "interval_estimates": "interval_estimates.png",
    "performance_profile": "performance_profile.png",
    "probability_of_improvement": "probability_of_improvement.png",
    "learning_curves": "learning_curves.png",
}
"""The report's figures: the function of this module that draws each, and its file name."""


def render_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()
