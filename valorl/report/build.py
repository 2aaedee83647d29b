"""Building a report directory: gather runs, compute, draw, write; all or nothing.

    OUT/
      report.html     the page (self-contained: figures embedded, no network needed)
      summary.json    every number on the page
      *.png           the figures

The directory is built under a temporary name next to OUT and renamed into place at the end,
so a failure leaves nothing half-written. An existing non-empty OUT is refused unless `force`,
and even then only if it holds an earlier report (so `--force` cannot wipe an unrelated folder).
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from valorl._version import __version__
from valorl.errors import ValorlError
from valorl.report import figures
from valorl.report.analyze import Settings, analyze
from valorl.report.gather import gather
from valorl.report.html import render
from valorl.ui import progress_bar

HTML = "report.html"
SUMMARY = "summary.json"


def build_report(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike = "report",
    *,
    force: bool = False,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Write a report on `run_dirs` (run directories, or directories holding runs) to `out`
    and return its summary (the content of `summary.json`).

    Args:
        run_dirs: directories made by `valorl train`, finished or not.
        out: the report directory to create.
        force: replace an earlier report in `out`.
        reps: bootstrap resamples for every interval.
        confidence: coverage of every interval (0.95 for 95%).
        seed: seed of the bootstrap resamples (the report is deterministic given it).
    """
    out = Path(out)
    if not run_dirs:
        raise ValorlError("no run directories given")
    if reps < 1:
        raise ValorlError(f"--bootstrap-reps must be at least 1, got {reps}")
    if not 0 < confidence < 1:
        raise ValorlError(f"--confidence must be between 0 and 1, got {confidence}")
    _check_out(out, force)
    settings = Settings(reps=reps, confidence=confidence, seed=seed)
    command = _command(run_dirs, out, force, settings)
    study = gather(run_dirs)
    with progress_bar(progress) as bar:
        stages = 2 + len(figures.FIGURES)
        task = bar.add_task("report", total=stages, rate="", note="bootstrap intervals")
        summary = {
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command,
            "valorl_version": __version__,
        } | analyze(study, settings)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        try:
            images = {}
            for name, file_name in figures.FIGURES.items():
                bar.update(task, advance=1, note=file_name)
                fig = getattr(figures, name)(summary)
                if fig is None:
                    images[name] = None
                    continue
                png = figures.render_png(fig)
                (tmp / file_name).write_bytes(png)
                images[name] = (file_name, png)
            summary["figures"] = [image[0] for image in images.values() if image is not None]
            bar.update(task, advance=1, note="writing")
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
            (tmp / HTML).write_text(render(summary, images), encoding="utf-8")
            _move_into_place(tmp, out)
            bar.update(task, advance=1, note="done")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return summary


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValorlError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise ValorlError(
            f"--out {out} exists and is not empty; choose another --out, or pass --force to "
            "replace the report in it"
        )
    if not ((out / SUMMARY).is_file() or (out / HTML).is_file()):
        raise ValorlError(
            f"--out {out} is not empty and holds no earlier report, so --force does not replace "
            "it; choose another --out"
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished report to `out`; an earlier one is removed only after that."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.tmp-old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _command(run_dirs: Sequence, out: Path, force: bool, settings: Settings) -> str:
    """The `valorl report` command line that builds this report."""
    words = ["valorl", "report", *map(str, run_dirs), "--out", str(out)]
    if force:
        words.append("--force")
    defaults = Settings()
    flags = {"reps": "--bootstrap-reps", "confidence": "--confidence", "seed": "--seed"}
    for name, flag in flags.items():
        if getattr(settings, name) != getattr(defaults, name):
            words += [flag, str(getattr(settings, name))]
    return shlex.join(words)
