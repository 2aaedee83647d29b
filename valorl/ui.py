"""Terminal progress for long work (training, collection): step, rate, ETA, latest score."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_console(stderr: bool = False) -> Console:
    """A rich console. When output is not a terminal (logs, pipes, CI), tables get 120 columns
    instead of 80 and plain text is never wrapped, so each message stays one greppable line."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=120, soft_wrap=True)
    return console


console = make_console(stderr=True)
"""Progress and notices (stderr)."""
out = make_console()
"""Results: tables and summaries (stdout)."""


def progress_bar(enabled: bool = True) -> Progress:
    """A progress display; tasks set `rate` and `note` fields ("412 upd/s", "score 73.1")."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        disable=not enabled,
    )
