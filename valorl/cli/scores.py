"""The scores table every training and evaluation command ends with."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from valorl.ui import out


def print_scores(title: str, rows: Sequence[tuple]) -> None:
    """One line per agent: normalised score and return as mean [95% interval] over seeds."""
    from valorl.stats import mean_interval

    def cell(values) -> str:
        if values is None:
            return "-"
        mean, low, high = mean_interval(values)
        if low != low:  # one seed: no interval
            return f"{mean:.1f}"
        return f"{mean:.1f} [{low:.1f}, {high:.1f}]"

    table = Table(title=title)
    table.add_column("agent")
    table.add_column("normalised score (95% CI)", justify="right")
    table.add_column("return (95% CI)", justify="right")
    table.add_column("seeds", justify="right")
    for name, _, returns, scores in rows:
        n = "-" if returns is None else str(len(returns))
        table.add_row(name, cell(scores), cell(returns), n)
    out.print(table)
    for name, path, _, _ in rows:
        out.print(f"  {name}: {path}")
