"""The scores table every training and evaluation command ends with."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from valorl.ui import out


def print_scores(title: str, rows: Sequence[tuple]) -> None:
    """One line per agent: normalised score and return as mean [95% interval] over seeds, and
    the success rate when a row has a fifth entry (per-seed success rates, or None)."""
    from valorl.stats import mean_interval

    def cell(values) -> str:
        if values is None:
            return "-"
        mean, low, high = mean_interval(values)
        if low != low:  # one seed: no interval
            return f"{mean:.1f}"
        return f"{mean:.1f} [{low:.1f}, {high:.1f}]"

    def cell_rate(values) -> str:
        if values is None:
            return "-"
        mean, low, high = mean_interval(values)
        return f"{mean:.2f}" if low != low else f"{mean:.2f} [{low:.2f}, {high:.2f}]"

    table = Table(title=title)
    table.add_column("agent")
    table.add_column("normalised score (95% CI)", justify="right")
    table.add_column("return (95% CI)", justify="right")
    table.add_column("seeds", justify="right")
    with_success = any(len(row) > 4 and row[4] is not None for row in rows)
    if with_success:
        table.add_column("success rate (95% CI)", justify="right")
    for name, _, returns, scores, *success in rows:
        n = "-" if returns is None else str(len(returns))
        rates = [cell_rate(success[0] if success else None)] if with_success else []
        table.add_row(name, cell(scores), cell(returns), n, *rates)
    out.print(table)
    for name, path, *_ in rows:
        out.print(f"  {name}: {path}")
