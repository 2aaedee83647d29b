"""The run directory: one training run's configuration, metrics, evaluations and checkpoint.

    RUN/
      config.json        what was run (agent, hyperparameters, data, schedule); written once
      metrics.jsonl      one line per chunk of updates: step, throughput, per-seed metrics
      evaluations.npz    steps (E,), returns and normalized scores (seeds, E, episodes)
      checkpoint.msgpack latest state of every seed (see checkpoint.py)
      checkpoints/       with `keep_checkpoints`: step-<N>.msgpack, every checkpoint kept
      result.json        written last: its presence means the run finished
      trackers.json      with `--logger wandb|mlflow`: the tracker's run id (see loggers.py)

Every file is replaced atomically, and the directory itself appears only once its config is
complete, so an interrupted run is always resumable and never half-written. A process holds
an exclusive lock on the run while it trains (its pid is in `.lock`), and Ctrl-C (SIGINT) then
stops it right after its next checkpoint, so no finished work is lost; a second Ctrl-C stops it
at once. A logger attached while it trains (`attach_logger`) receives every metrics record and
evaluation round too, and is closed with the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from valorl.data.files import atomic_write
from valorl.errors import ValorlError
from valorl.training.loggers import MetricLogger, NullLogger

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVALUATIONS = "evaluations.npz"
CHECKPOINT = "checkpoint.msgpack"
KEPT_CHECKPOINTS = "checkpoints"
RESULT = "result.json"
LOCK = ".lock"


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_file = None
        self._stop_requested = False
        self._previous_handler = None
        self.keep_checkpoints = False
        """Keep every checkpoint written (behaviour policies at several stages of training)."""
        self._logger: MetricLogger = NullLogger()

    # ---- creation and identity -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        config: dict[str, Any],
        upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> RunDir:
        """Create the run with `config`, or reopen an existing run started with the same
        config (to resume it). A different config in an existing run is an error; `upgrade`
        first brings the existing config up to this version of valorl (settings added since
        it was written, at their defaults)."""
        run = cls(path)
        if run.path.exists():
            existing = run.config()
            if upgrade is not None:
                existing = upgrade(existing)
            diffs = _config_diffs(existing, config)
            if diffs:
                raise ValorlError(
                    f"{run.path} holds a run with a different configuration "
                    f"({'; '.join(diffs[:3])}); choose another --out"
                )
        else:
            tmp = run.path.with_name(f".{run.path.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            os.rename(tmp, run.path)
        return run

    def config(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / CONFIG).read_text())
        except FileNotFoundError:
            raise ValorlError(f"{self.path} is not a valorl run (no {CONFIG})") from None
        except json.JSONDecodeError as exc:
            raise ValorlError(f"{self.path / CONFIG} is not valid JSON: {exc}") from None

    # ---- locking ------------------------------------------------------------------------------

    def __enter__(self) -> RunDir:
        lock_file = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "?"
            lock_file.close()
            raise ValorlError(
                f"{self.path} is being trained by another process (pid {holder})"
            ) from None
        lock_file.truncate(0)  # the holder's pid, for that message and for `kill`
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
        logger, self._logger = self._logger, NullLogger()
        logger.close(exc)  # last, so a tracker failing to close cannot keep the run locked

    def _request_stop(self, signum, frame) -> None:
        """First Ctrl-C: finish the chunk in progress and stop after its checkpoint. The
        default handler comes back, so a second Ctrl-C interrupts immediately."""
        self._stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    # ---- files -------------------------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        """Ctrl-C was pressed: the loop checkpoints after the current chunk, then stops."""
        return self._stop_requested

    @property
    def finished(self) -> bool:
        return (self.path / RESULT).is_file()

    def checkpoint_bytes(self, step: int | None = None) -> bytes | None:
        """The latest checkpoint, or the kept one of `step`; None if there is none."""
        if step is not None and step not in self.kept_checkpoints():
            kept = ", ".join(map(str, self.kept_checkpoints())) or "none"
            raise ValorlError(f"{self.path} kept no checkpoint at step {step} (kept: {kept})")
        path = self.path / CHECKPOINT if step is None else self.kept_checkpoints()[step]
        return path.read_bytes() if path.is_file() else None

    def kept_checkpoints(self) -> dict[int, Path]:
        """Step -> file of every checkpoint kept with `keep_checkpoints`, in step order."""
        files = (self.path / KEPT_CHECKPOINTS).glob("step-*.msgpack")
        return dict(sorted((int(f.stem.removeprefix("step-")), f) for f in files))

    def write_checkpoint(self, data: bytes, step: int) -> None:
        """Replace the checkpoint (of `step`), and with `keep_checkpoints` keep it under its
        step too (a hard link: no extra space); raises KeyboardInterrupt afterwards if Ctrl-C
        was pressed."""
        atomic_write(self.path / CHECKPOINT, data)
        if self.keep_checkpoints:
            kept = self.path / KEPT_CHECKPOINTS / f"step-{step:09d}.msgpack"
            kept.parent.mkdir(exist_ok=True)
            kept.unlink(missing_ok=True)  # a step redone after a resume
            os.link(self.path / CHECKPOINT, kept)
        if self._stop_requested:
            raise KeyboardInterrupt

    def attach_logger(self, logger: MetricLogger) -> None:
        """Also send metrics and evaluations to `logger` (an experiment tracker, see
        loggers.py) until the run's lock is released, which closes it."""
        self._logger = logger

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._logger.log(record["step"], record)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def drop_metrics_after(self, step: int) -> None:
        """Forget metrics of chunks that a resumed run will redo."""
        kept = [r for r in self.metrics() if r["step"] <= step]
        atomic_write(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write_evaluations(
        self,
        steps: np.ndarray,
        returns: np.ndarray,
        scores: np.ndarray | None,
        successes: np.ndarray | None = None,
        extra: dict[str, np.ndarray] | None = None,
    ) -> None:
        """evaluations.npz: steps, returns, normalised scores (with references) and successes
        (seeds × rounds × episodes booleans, for environments that report success), and any
        `extra` arrays a kind of run records beside them."""
        arrays = dict(steps=np.asarray(steps), returns=np.asarray(returns))
        arrays |= {name: np.asarray(value) for name, value in (extra or {}).items()}
        if scores is not None:
            arrays["normalized_scores"] = np.asarray(scores)
        if successes is not None:
            arrays["successes"] = np.asarray(successes, bool)
        tmp = self.path / f".{EVALUATIONS}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.path / EVALUATIONS)
        latest = None if scores is None else np.asarray(scores)[:, -1]
        self._logger.log_evaluation(int(steps[-1]), np.asarray(returns)[:, -1], latest)

    def evaluations(self) -> dict[str, np.ndarray]:
        path = self.path / EVALUATIONS
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write(self.path / RESULT, (json.dumps(result, indent=2) + "\n").encode())

    def result(self) -> dict[str, Any]:
        return json.loads((self.path / RESULT).read_text())


def _config_diffs(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[str]:
    """Human-readable differences between two configs, ignoring the valorl version."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key == "valorl_version":
            continue
        name = f"{where}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diffs(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs
