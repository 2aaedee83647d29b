"""The report as one self-contained HTML page.

The page opens as a plain file with no server and no network: inline CSS, no scripts, system
fonts, figures embedded as base64 PNG data URIs, tables as real `<table>`s. Every value shown
comes from the summary dict (`summary.json`), and all text is escaped.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

SECTIONS = {
    "aggregates": "Aggregate scores",
    "intervals": "Interval estimates",
    "profile": "Performance profile",
    "improvement": "Probability of improvement",
    "curves": "Learning curves",
    "per-dataset": "Per-dataset scores",
    "diagnostics": "Value diagnostics",
    "runs": "Runs",
}
"""Section ids and headings, in page order (after the header and its warnings)."""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: #1f2328; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.3em; margin-top: 2.2em; padding-bottom: 0.25em;
  border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
p.meta { color: #57606a; margin: 0.2em 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
  background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 4px; word-break: break-all; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; }
nav a, a { color: #0969da; text-decoration: none; }
nav a:hover, a:hover { text-decoration: underline; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c66; border-radius: 6px;
  padding: 0.6em 1em; margin: 1em 0; }
.warnings h3 { margin: 0.2em 0; }
.warnings ul { margin: 0.3em 0; padding-left: 1.3em; }
.ok { color: #1a7f37; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.35em 0.7em; vertical-align: top; }
th { background: #f6f8fa; text-align: left; font-weight: 600; }
table.runs td:not(:first-child) { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.88em; }
.note { color: #57606a; font-size: 0.92em; }
"""


def render(summary: dict[str, Any], images: dict[str, tuple[str, bytes] | None]) -> str:
    """The HTML page. `images` maps a figure name to (file name, PNG bytes), or None."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>valorl report: {escape(_title(summary))}</title>",
        f"<style>{CSS}</style>",
        "</head><body><main>",
        _header(summary),
        _aggregates(summary),
        _section("intervals", _intervals(summary, images)),
        _section("profile", _profile(summary, images)),
        _section("improvement", _improvement(summary, images)),
        _section("curves", _curves(summary, images)),
        _section("per-dataset", _per_dataset(summary)),
        _section("diagnostics", _diagnostics(summary)),
        _section("runs", _runs(summary)),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


# ---- building blocks ---------------------------------------------------------------------------


def _section(key: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{SECTIONS[key]}</h2>\n{body}\n</section>'


def _table(header: list[str], rows: list[list[tuple[str, bool]]], cls: str = "") -> str:
    """A table; each cell is (html, numeric)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if num else f"<td>{c}</td>" for c, num in row)
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(est: dict[str, Any] | None, digits: int = 1) -> str:
    """`65.0 [50.1, 80.3]`; without an interval (one seed) just the point."""
    if est is None or est.get("point") is None:
        return "–"
    if est.get("low") is None or est.get("high") is None:
        return _num(est["point"], digits)
    return (
        f"{_num(est['point'], digits)} "
        f"<span class='note'>[{_num(est['low'], digits)}, {_num(est['high'], digits)}]</span>"
    )


def _figure(images: dict[str, tuple[str, bytes] | None], name: str, alt: str, caption: str) -> str:
    image = images.get(name)
    if image is None:
        return ""
    file_name, png = image
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
        f'<figcaption>{caption} Also saved as <a href="{escape(file_name)}">'
        f"{escape(file_name)}</a>.</figcaption></figure>"
    )


def _title(summary: dict[str, Any]) -> str:
    algorithms = len(summary["algorithms"])
    tasks = len(summary["tasks"])
    return f"{algorithms} algorithm{'s' * (algorithms != 1)} on {tasks} task{'s' * (tasks != 1)}"


def _percent(summary: dict[str, Any]) -> str:
    return f"{100 * summary['confidence']:g}%"


# ---- sections ----------------------------------------------------------------------------------


def _header(summary: dict[str, Any]) -> str:
    run_dirs = len(summary["runs"])
    seeds = sum(len(r["seeds"]) for r in summary["runs"])
    unfinished = sum(not r["finished"] for r in summary["runs"])
    tasks = ", ".join(escape(t["name"]) for t in summary["tasks"])
    nav = "".join(f'<li><a href="#{k}">{v}</a></li>' for k, v in SECTIONS.items())
    if summary["warnings"]:
        items = "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"])
        warnings = f'<div class="warnings" id="warnings"><h3>Warnings</h3><ul>{items}</ul></div>'
    else:
        warnings = '<p class="ok" id="warnings">No warnings.</p>'
    return f"""<header id="summary">
<h1>valorl report</h1>
<p class="meta">{escape(_title(summary))}: {run_dirs} run director{"ies" if run_dirs != 1 else "y"}
({unfinished} unfinished), {seeds} runs (seeds). Created {escape(summary["created"])} with valorl
{escape(summary["valorl_version"])}.</p>
<p class="meta">Tasks: {tasks}. Scores: {escape(summary["score_unit"])} at each run's final
evaluation, averaged over its evaluation episodes.</p>
<p class="meta">Command: <code>{escape(summary["command"])}</code></p>
<nav><ul>{nav}</ul></nav>
{warnings}
</header>"""


def _aggregates(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    names = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}
    header = ["algorithm", "runs per task", "tasks"] + [names.get(m, m) for m in metrics]
    rows = []
    for algorithm in summary["algorithms"]:
        est = summary["aggregates"][algorithm["label"]]
        rows.append(
            [
                (escape(algorithm["label"]), False),
                (str(algorithm["runs_per_task"]), True),
                (str(len(algorithm["tasks"])), True),
            ]
            + [(_interval(est[m]), True) for m in metrics]
        )
    gap = (
        " Optimality gap: how far scores fall short of 100 on average (lower is better)."
        if "optimality_gap" in metrics
        else ""
    )
    body = f"""<p>Point estimates with {_percent(summary)} stratified-bootstrap intervals
({summary["bootstrap_reps"]} resamples of runs within each task; Agarwal et al. 2021). Each seed
of a run is one run. Mean and median are over tasks of the per-task mean; IQM is the mean of the
middle 50% of all run × task scores.{gap}</p>
{_table(header, rows, "aggregates")}"""
    return _section("aggregates", body)


def _intervals(summary: dict[str, Any], images) -> str:
    return _figure(
        images,
        "interval_estimates",
        "interval estimates per metric and algorithm",
        f"Bars: {_percent(summary)} bootstrap intervals; black ticks: point estimates.",
    )


def _profile(summary: dict[str, Any], images) -> str:
    return (
        "<p>For each threshold τ, the fraction of runs whose score exceeds τ (averaged over "
        "tasks); a curve above another is better everywhere. Shaded: pointwise "
        f"{_percent(summary)} bootstrap bands.</p>"
        + _figure(images, "performance_profile", "performance profiles", "Performance profiles.")
    )


def _improvement(summary: dict[str, Any], images) -> str:
    labels = [a["label"] for a in summary["algorithms"]]
    if len(labels) < 2:
        return "<p>Needs at least two algorithms.</p>"
    pairs = {(p["x"], p["y"]): p for p in summary["probability_of_improvement"]}
    rows = []
    for x in labels:
        row = [(escape(x), False)]
        for y in labels:
            row.append(("–", True) if x == y else (_interval(pairs[(x, y)], 2), True))
        rows.append(row)
    header = ["P(row > column)"] + [escape(y) for y in labels]
    return (
        f"<p>P(X &gt; Y): the chance that a run of X scores higher than a run of Y on the same "
        f"task (ties count half), averaged over the tasks both were run on, with "
        f"{_percent(summary)} bootstrap intervals. 0.5 means no difference.</p>"
        + _table(header, rows, "improvement")
        + _figure(
            images,
            "probability_of_improvement",
            "probability of improvement for each pair of algorithms",
            "Each pair once: X on the left, Y on the right.",
        )
    )


def _curves(summary: dict[str, Any], images) -> str:
    if not summary["learning_curves"]:
        return "<p>No learning curves: no algorithm's runs share an evaluation step.</p>"
    per_task = " One panel per task follows the aggregate." if len(summary["tasks"]) > 1 else ""
    return (
        f"<p>IQM of the {escape(summary['score_unit'])} at each evaluation over training, across "
        f"runs and tasks, with pointwise {_percent(summary)} bootstrap bands (whole runs "
        f"resampled).{per_task}</p>"
        + _figure(images, "learning_curves", "learning curves", "Sample-efficiency curves.")
    )


def _per_dataset(summary: dict[str, Any]) -> str:
    header = [
        "algorithm",
        "dataset",
        f"final score ({_percent(summary)} t-interval)",
        "seeds",
        "steps",
        f"final return ({_percent(summary)} t-interval)",
    ]
    rows = []
    for row in summary["per_task"]:
        steps = ", ".join(f"{s:,}" for s in row["steps"])
        planned = ", ".join(f"{s:,}" for s in row["planned_steps"])
        if row["steps"] != row["planned_steps"]:
            steps += f" of {planned}"
        if row["unfinished"]:
            steps += " (unfinished)"
        unit = "" if row["unit"] == "normalised score" else " <span class='note'>(return)</span>"
        rows.append(
            [
                (escape(row["algorithm"]), False),
                (escape(row["task"]), False),
                (_interval(row["score"]) + unit, True),
                (str(row["seeds"]), True),
                (escape(steps), True),
                (_interval(row["return"]), True),
            ]
        )
    return (
        "<p>Every seed of every run, per algorithm and dataset: mean over seeds with a Student-t "
        "interval.</p>" + _table(header, rows, "per-dataset")
    )


def _diagnostics(summary: dict[str, Any]) -> str:
    hint = "run <code>valorl diagnose RUN_DIR</code>"
    if not summary["diagnostics"]:
        return f"<p>No diagnostics ({hint}).</p>"
    parts = [
        "<p>The learned Q-values against the discounted Monte-Carlo returns G observed in the "
        "data, in reward units: bias is mean(Q − G) (far above 0: over-estimation); TD errors are "
        "root-mean-square Bellman residuals on the training episodes and on held-out ones "
        "(<code>valorl train --holdout</code>).</p>"
    ]
    for diag in summary["diagnostics"]:
        seeds = diag.get("seeds") or []
        rows = [
            [(escape(str(seed)), True)]
            + [
                _seed_cell(diag.get(k), i)
                for k in ("q_mean", "bias", "td_error_train", "td_error_heldout")
            ]
            for i, seed in enumerate(seeds)
        ]
        mc = diag.get("mc_return_mean")
        meta = (
            f"step {escape(str(diag.get('step', '–')))}; "
            f"{escape(str(diag.get('heldout_episodes', '–')))} held-out and "
            f"{escape(str(diag.get('train_episodes', '–')))} training episodes; "
            f"mean Monte-Carlo return {_num(mc, 3) if isinstance(mc, int | float) else '–'}"
            + (
                f"; Q of chunks of {escape(str(diag['chunk_length']))} actions, h-step TD errors"
                if isinstance(diag.get("chunk_length"), int) and diag["chunk_length"] > 1
                else ""
            )
        )
        columns = ["seed", "Q mean", "bias mean(Q − G)", "TD error (train)", "TD error (held-out)"]
        table = _table(columns, rows, "diagnostics")
        if "q_mean" not in diag:  # trained online: read on its own episodes only
            meta = f"step {escape(str(diag.get('step', '–')))}; trained online, no dataset"
            table = ""
        parts.append(
            f"<h3>{escape(diag['algorithm'])} on {escape(diag['task'])}</h3>"
            f"<p class='meta'><code>{escape(diag['path'])}</code>: {meta}</p>{table}"
        )
        diverged, bounds = diag.get("q_diverged"), diag.get("return_range")
        if isinstance(diverged, list) and any(diverged) and len(diverged) == len(seeds):
            numeric = isinstance(bounds, list) and len(bounds) == 2
            numeric = numeric and all(isinstance(b, int | float) for b in bounds)
            low, high = bounds if numeric else (None, None)  # a damaged file: dashes
            named = ", ".join(escape(str(s)) for s, d in zip(seeds, diverged, strict=True) if d)
            parts.append(
                f"<p class='note'>The critic of seed(s) {named} has diverged: its mean Q lies "
                f"beyond [{_num(low, 3)}, {_num(high, 3)}], the discounted returns the data's "
                "rewards allow, by more than the range's width (or a reward penalty dominates "
                "it).</p>"
            )
        settled = diag.get("q_settled")
        if isinstance(settled, list) and len(settled) == len(seeds) and not all(settled):
            named = ", ".join(
                escape(str(s)) for s, ok in zip(seeds, settled, strict=True) if not ok
            )
            parts.append(
                f"<p class='note'>The critic of seed(s) {named} had not settled: its mean Q "
                "still moved over the last fifth of training by more than 3% of the discounted "
                "returns the data's rewards allow, so part of its bias is rewards it has yet "
                "to back up.</p>"
            )
        if isinstance(diag.get("on_policy"), dict):
            parts.append(_on_policy(diag["on_policy"], seeds))
        if isinstance(diag.get("model"), dict):
            parts.append(_model_errors(diag["model"], seeds))
    if summary["without_diagnostics"]:
        missing = ", ".join(f"<code>{escape(p)}</code>" for p in summary["without_diagnostics"])
        parts.append(f"<p class='note'>No diagnostics for {missing} ({hint}).</p>")
    return "\n".join(parts)


def _on_policy(checked: dict[str, Any], seeds: list[Any]) -> str:
    """The critic on each seed's own episodes (`valorl diagnose --episodes`)."""
    keys = ("return", "q_mean", "return_to_go_mean", "bias", "td_error")
    rows = [
        [(escape(str(seed)), True)] + [_seed_cell(checked.get(k), i) for k in keys]
        for i, seed in enumerate(seeds)
    ]
    return (
        f"<p>On the policy's own episodes ({escape(str(checked.get('episodes', '–')))} per "
        f"seed in <code>{escape(str(checked.get('env', '–')))}</code>): Q at the state-actions "
        "it visits against the discounted return it then collects, G (bias far above 0: the "
        "critic over-rates the learned policy itself).</p>"
        + _table(
            ["seed", "episode return", "Q mean", "G mean", "bias mean(Q − G)", "TD error"],
            rows,
            "on-policy",
        )
    )


def _model_errors(model: dict[str, Any], seeds: list[Any]) -> str:
    """The dynamics model's open-loop errors k steps ahead, per seed."""
    obs = model.get("obs_mse") or []
    horizon = max((len(row) for row in obs if isinstance(row, list)), default=0)
    rows = [
        [(escape(str(seed)), True)]
        + [_seed_cell(obs[i] if i < len(obs) else None, k) for k in range(horizon)]
        + [_seed_cell(model.get("reward_mse"), i)]
        for i, seed in enumerate(seeds)
    ]
    split = "held-out" if model.get("split") == "heldout" else "training"
    return (
        f"<p>Dynamics model: mean squared error of open-loop predictions k steps ahead "
        f"(elites' mean, logged actions) on {escape(str(model.get('episodes', '–')))} "
        f"{split} episodes, and of one-step rewards.</p>"
        + _table(
            ["seed", *(f"k = {k + 1}" for k in range(horizon)), "reward (k = 1)"],
            rows,
            "model-errors",
        )
    )


def _seed_cell(values: Any, i: int) -> tuple[str, bool]:
    """Seed `i`'s entry of a per-seed diagnostics list, or a dash where there is none."""
    ok = isinstance(values, list) and i < len(values) and isinstance(values[i], int | float)
    return (_num(values[i], 3) if ok else "–"), True


def _runs(summary: dict[str, Any]) -> str:
    rows = []
    for run in summary["runs"]:
        status = (
            "finished"
            if run["finished"]
            else f"unfinished: step {run['step']:,} of {run['steps']:,}"
        )
        rows.append(
            [
                (f"<code>{escape(run['path'])}</code>", False),
                (escape(run["algorithm"]), False),
                (escape(run["task"]), False),
                (escape(", ".join(map(str, run["seeds"]))), True),
                (status, False),
                (f"{run['evaluations']} × {run['episodes']}", True),
            ]
        )
    header = ["run directory", "algorithm", "dataset", "seeds", "status", "evaluations × episodes"]
    return _table(header, rows, "runs")
