"""Running a sweep: expand the spec, skip what is finished, train the rest, report once.

    OUT/
      sweep.json           the spec and every group's `valorl train` command line
      <group>/             one run directory per group (all its seeds), as `valorl train` makes
      <group>.error.log    the full error of a group that failed
      report/              `valorl report` over every finished group

Re-running the same sweep trains nothing that finished and resumes what did not, from each
run's last checkpoint; a re-run of a finished sweep does no work at all.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import threading
from pathlib import Path
from typing import Any

from valorl.data.files import atomic_write
from valorl.errors import ValorlError
from valorl.sweep.backends import make_backend
from valorl.sweep.spec import Group, expand, load_spec
from valorl.training.run_dir import METRICS, RunDir
from valorl.ui import console, progress_bar

MANIFEST = "sweep.json"
REPORT = "report"


@dataclasses.dataclass
class SweepResult:
    out: Path
    groups: list[Group]
    trained: list[str]
    """Groups trained (or resumed) by this call."""
    failures: dict[str, str]
    """Group name -> one-line error."""
    report: Path | None

    def run_dirs(self) -> list[Path]:
        """Run directories of the finished groups."""
        return [self.out / g.name for g in self.groups if RunDir(self.out / g.name).finished]


def run_sweep(
    spec: str | Path | dict[str, Any],
    out: str | Path,
    *,
    backend: str = "local",
    address: str | None = None,
    cpus_per_group: float = 1.0,
    gpus_per_group: float = 0.0,
    max_retries: int = 3,
    report: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Train every group of `spec` (a TOML path or its parsed dict; see valorl/sweep/spec.py)
    under `out`, then write one report over all of them to `out/report`.

    Args:
        backend: "local" (groups one after another in this process) or "ray".
        address: the Ray cluster ("auto", "HOST:PORT"); default: start one on 127.0.0.1.
        cpus_per_group, gpus_per_group: the resources each group's Ray task asks for.
        max_retries: how often Ray restarts a group whose worker died.
    """
    spec_dict = load_spec(spec) if isinstance(spec, str | Path) else spec
    groups = expand(spec_dict)
    runner = make_backend(backend, address, cpus_per_group, gpus_per_group, max_retries)
    out = Path(out).absolute()  # Ray workers need not share this working directory
    if out.exists() and not out.is_dir():
        raise ValorlError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, spec_dict, groups)
    tally = Tally(out, groups)
    todo = [g for g in groups if not tally.is_finished(g)]
    if not todo:
        console.print(f"all {len(groups)} groups of the sweep in {out} are finished")
    else:
        done = len(groups) - len(todo)
        console.print(
            f"sweep: {len(todo)} of {len(groups)} groups to train ({done} finished before), "
            f"{tally.total_runs} runs in all, backend {backend}"
        )
        jobs = [(g, g.train_argv(out / g.name)) for g in todo]
        with _Display(tally, progress):
            runner.run(jobs, tally)
    result = SweepResult(out, groups, [g.name for g in todo], dict(tally.failures), None)
    finished = result.run_dirs()
    if report and finished and (todo or not (out / REPORT).is_dir()):
        from valorl.report import build_report

        build_report(finished, out / REPORT, force=True)
    if report and (out / REPORT).is_dir():
        result.report = out / REPORT
    return result


class Tally:
    """Each group's state (pending, running, finished, failed) and progress, for the display.
    Progress within a running group is read from its run's metrics, so it works the same for
    groups trained here and on Ray workers."""

    def __init__(self, out: Path, groups: list[Group]):
        self.out, self.groups = out, groups
        self.total_runs = sum(len(g.seeds) for g in groups)
        self.running: set[str] = set()
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def is_finished(self, group: Group) -> bool:
        return RunDir(self.out / group.name).finished

    def started(self, group: Group) -> None:
        with self._lock:
            self.running.add(group.name)
            error_log(self.out, group).unlink(missing_ok=True)

    def finished(self, group: Group) -> None:
        with self._lock:
            self.running.discard(group.name)

    def failed(self, group: Group, message: str, details: str) -> None:
        with self._lock:
            self.running.discard(group.name)
            self.failures[group.name] = message.strip().splitlines()[-1] if message else "failed"
        error_log(self.out, group).write_text(details)
        console.print(f"[red]failed[/red] {group.name}: {self.failures[group.name]}")

    def counts(self) -> tuple[int, int, int, float]:
        """Runs (seeds) finished, running and failed, and runs' worth of progress made."""
        done = running = failed = 0
        progress = 0.0
        with self._lock:
            for g in self.groups:
                n = len(g.seeds)
                if g.name in self.failures:
                    failed += n
                elif self.is_finished(g):
                    done += n
                    progress += n
                elif g.name in self.running:
                    fraction = _fraction(self.out / g.name / METRICS, g)
                    running += n if fraction > 0 else 0  # a Ray task may still be queued
                    progress += n * fraction
        return done, running, failed, progress


def _fraction(metrics: Path, group: Group) -> float:
    """How far a run is, from the last line of its metrics.jsonl (0 before the first)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().splitlines()
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return 0.0
    online = "env_step" in last  # offline-to-online logs gradient steps, then env steps
    step = group.offline_steps + last["env_step"] if online else last.get("step", 0)
    return min(step / group.total_steps, 1.0)


def error_log(out: Path, group: Group) -> Path:
    """Where the full traceback of a failed group is kept."""
    return out / f"{group.name}.error.log"


class _Display:
    """One progress display for the whole sweep, refreshed every second from the tally."""

    def __init__(self, tally: Tally, enabled: bool):
        self.tally, self.enabled = tally, enabled
        self.bar = progress_bar(enabled)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Display:
        self.bar.__enter__()
        self.task = self.bar.add_task("sweep", total=self.tally.total_runs, rate="", note="")
        self._refresh()
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._refresh()
        self.bar.__exit__(*exc_info)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._refresh()

    def _refresh(self) -> None:
        done, running, failed, progress = self.tally.counts()
        note = f"runs: {done} done, {running} running, {failed} failed"
        self.bar.update(self.task, completed=progress, note=note)


def _write_manifest(out: Path, spec: dict[str, Any], groups: list[Group]) -> None:
    """sweep.json: the spec and each group's command line; rewritten only when it changes."""
    manifest = {
        "spec": spec,
        "groups": [
            {
                "name": g.name,
                "agent": g.agent,
                "source": g.source,
                "mode": g.mode,
                "grid": g.point,
                "seeds": g.seeds,
                "command": shlex.join(["valorl", *g.command(out / g.name)]),
            }
            for g in groups
        ],
    }
    text = json.dumps(manifest, indent=2) + "\n"
    path = out / MANIFEST
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, text.encode())
