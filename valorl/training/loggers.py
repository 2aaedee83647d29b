"""Experiment trackers that mirror a run's metrics: TensorBoard, Weights & Biases, MLflow.

RUN/metrics.jsonl and RUN/evaluations.npz stay the record of a run (reports and comparisons
read them); `--logger NAME` also sends every chunk's metrics and every evaluation round to a
tracker people already browse. Each tool is an optional extra, imported only when chosen.

Scalars. A metrics record holds per-seed lists (`"critic/loss": [0.5, 0.7]`, one value per seed
in config order; None where a seed has none, e.g. no episode finished in the chunk). Each list
becomes the mean over the seeds that have a value, `critic/loss/mean` (the curve to watch), and
one scalar per seed, `critic/loss/seed_<seed>` (the seed number itself, as `--seed` counts: the
curves that show one seed diverging), side by side in every tool's `critic` group. (Not
`critic/loss` for the mean: MLflow's file store keeps a metric as a file at its key's path, so
no key can also be the folder of others.) Numbers (`wall_s`, `env_step`) pass as they are; text
(`phase`) is no scalar and is left out. An evaluation round gives `eval/return` and, where the
dataset has reference scores, `eval/normalized_score`: per seed the mean over its episodes, and
their mean over seeds. The x-axis is always the record's `step`, as in metrics.jsonl.

Hyperparameters. config.json goes to each tool's store of them: TensorBoard's HParams
dashboard and MLflow's params (flattened to dotted keys, non-scalars as JSON), W&B's run config
(nested, as it is).

Resuming. An interrupted run redoes the chunks after its last checkpoint, and its metrics of
the chunk in flight at the interruption may have reached the tracker already. What each does:
- TensorBoard: every session writes a new event file in RUN/tensorboard/ and marks a restart
  at its first step, so readers that honour the mark (EventAccumulator,
  `tensorboard --load_fast=false`) drop the older points from that step on.
- W&B: the run's id is kept in RUN/trackers.json and the run resumed under it. Offline, every
  session is its own RUN/wandb/offline-run-* directory of that id; `wandb sync` uploads them
  into one run, and W&B ignores steps below the one a run has reached.
- MLflow: the run's id is kept in RUN/trackers.json, and the run continued (RUNNING again);
  a repeated chunk shows as two points at its step in the metric history.
"""

from __future__ import annotations

import abc
import importlib
import json
import math
import os
import secrets
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from valorl.data.files import atomic_write
from valorl.errors import ValorlError

LOGGERS = ("tensorboard", "wandb", "mlflow")
"""The trackers `--logger` can name; each is the name of its extra too (`valorl[wandb]`)."""

TRACKERS = "trackers.json"
"""In the run directory: the tracker's run ids (W&B, MLflow), so a resumed run continues them."""

Scalar = bool | int | float | str


class MetricLogger(Protocol):
    """Where a run's metrics go besides its own files (`RunDir.attach_logger`)."""

    def log(self, step: int, record: dict[str, Any]) -> None:
        """One chunk's metrics record, as appended to metrics.jsonl."""

    def log_evaluation(self, step: int, returns: np.ndarray, scores: np.ndarray | None) -> None:
        """One evaluation round: returns (and normalized scores), shaped (seeds, episodes)."""

    def close(self, error: BaseException | None = None) -> None:
        """End the session; `error` is what stopped the run early, if anything did."""


class NullLogger:
    """No tracker (no `--logger`): metrics go to the run's files only."""

    def log(self, step: int, record: dict[str, Any]) -> None:
        pass

    def log_evaluation(self, step: int, returns: np.ndarray, scores: np.ndarray | None) -> None:
        pass

    def close(self, error: BaseException | None = None) -> None:
        pass


def open_logger(name: str | None, run_path: Path, config: dict[str, Any]) -> MetricLogger:
    """The tracker `name` ("tensorboard", "wandb", "mlflow") for the run in `run_path` with
    `config` (config.json), resuming its earlier sessions; None gives a `NullLogger`."""
    if name is None:
        return NullLogger()
    trackers = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}
    if name not in trackers:
        raise ValorlError(f"unknown --logger {name!r}; choose from {', '.join(LOGGERS)}")
    return trackers[name](Path(run_path), config)


# ---- what the trackers receive ----------------------------------------------------------------


def record_scalars(record: dict[str, Any], seeds: list[int]) -> dict[str, float]:
    """The scalars of a metrics record: per seed and their mean for each per-seed list, numbers
    as they are; `step` (the x-axis), text and None left out (see the module docstring)."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, str) or value is None:
            continue
        if not isinstance(value, list):
            scalars[key] = float(value)
            continue
        present = {seed: float(v) for seed, v in zip(seeds, value, strict=True) if v is not None}
        if present:
            scalars[f"{key}/mean"] = math.fsum(present.values()) / len(present)
            scalars |= {f"{key}/seed_{seed}": v for seed, v in present.items()}
    return scalars


def evaluation_scalars(
    returns: np.ndarray, scores: np.ndarray | None, seeds: list[int]
) -> dict[str, float]:
    """The scalars of one evaluation round (seeds, episodes): each seed's mean over its
    episodes, and their mean over seeds."""
    record = {"eval/return": np.mean(returns, axis=1).tolist()}
    if scores is not None:
        record["eval/normalized_score"] = np.mean(scores, axis=1).tolist()
    return record_scalars(record, seeds)


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """The config as one level of dotted keys (`agent.hyperparameters.batch_size`); values that
    are not bool, int, float or str become JSON text (lists, None)."""
    flat: dict[str, Scalar] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flat_params(value, f"{prefix}{key}.")
        elif isinstance(value, Scalar):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = json.dumps(value)
    return flat


class _Tracker(abc.ABC):
    """Turns records and evaluation rounds into scalars for a tool's `write`."""

    def __init__(self, config: dict[str, Any]):
        self.seeds: list[int] = list(config["seeds"])

    def log(self, step: int, record: dict[str, Any]) -> None:
        self.write(step, record_scalars(record, self.seeds))

    def log_evaluation(self, step: int, returns: np.ndarray, scores: np.ndarray | None) -> None:
        self.write(step, evaluation_scalars(returns, scores, self.seeds))

    @abc.abstractmethod
    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Send the scalars of `step` to the tool."""

    @abc.abstractmethod
    def close(self, error: BaseException | None = None) -> None:
        """As `MetricLogger.close`."""


# ---- the tools --------------------------------------------------------------------------------


class TensorBoardLogger(_Tracker):
    """Event files in RUN/tensorboard/ (`tensorboard --logdir runs/`), written with
    TensorBoard's own event writer: no TensorFlow or PyTorch needed."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        super().__init__(config)
        _require("tensorboard", "tensorboard")
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._session_log = (
            event_pb2.Event,
            summary_pb2.Summary,
            event_pb2.SessionLog,
        )
        self._writer = EventFileWriter(str(run_path / "tensorboard"))
        hparams = hparams_pb(flat_params(config), trial_id=run_path.name)
        self._writer.add_event(self._event(wall_time=time.time(), summary=hparams))
        self._started = False

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self._started:  # the restart mark: readers drop older points from here on
            start = self._session_log(status=self._session_log.START)
            self._writer.add_event(self._event(wall_time=time.time(), step=step, session_log=start))
            self._started = True
        values = [self._summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
        summary = self._summary(value=values)
        self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()  # once per chunk: a live `tensorboard` sees it at once

    def close(self, error: BaseException | None = None) -> None:
        self._writer.close()


class WandbLogger(_Tracker):
    """A W&B run named after the run directory, in project $WANDB_PROJECT (default "valorl"),
    its files under RUN/wandb/. `WANDB_MODE=offline` needs no account or network; upload later
    with `wandb sync RUN/wandb/offline-run-*`."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        super().__init__(config)
        wandb = _require("wandb", "wandb")
        run_id = _tracker_ids(run_path).get("wandb") or secrets.token_hex(4)
        try:
            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "valorl"),
                dir=run_path,
                id=run_id,
                name=run_path.name,
                config=config,
                resume="allow",
                reinit="create_new",  # alongside, not instead of, a run the caller may have open
            )
        except wandb.errors.Error as exc:  # not logged in, no network, ...
            reason = str(exc).strip().partition("\n")[0] or type(exc).__name__
            raise ValorlError(
                f"--logger wandb could not start a W&B run ({reason}); log in with "
                "`wandb login`, or set WANDB_MODE=offline to log without an account"
            ) from None
        _save_tracker_id(run_path, "wandb", run_id)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def close(self, error: BaseException | None = None) -> None:
        self._run.finish(exit_code=0 if error is None else 1)


class MlflowLogger(_Tracker):
    """An MLflow run named after the run directory, in experiment $MLFLOW_EXPERIMENT_NAME
    (default "valorl"), stored at $MLFLOW_TRACKING_URI (a server, a database), or else in the
    file store RUN/mlruns. MLflow 3 keeps file stores only behind MLFLOW_ALLOW_FILE_STORE, which
    this sets (for this process) unless it is set already."""

    MAX_PARAM_LENGTH = 6000  # MLflow refuses longer param values
    MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's limits per log_batch call

    def __init__(self, run_path: Path, config: dict[str, Any]):
        super().__init__(config)
        _require("mlflow", "mlflow")
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")  # None: RUN/mlruns, wherever RUN is
        uri = tracking_uri or (run_path / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        known = _tracker_ids(run_path).get("mlflow")
        self._run_id = None
        if known is not None and known["tracking_uri"] == tracking_uri:
            try:
                self._client.update_run(known["run_id"], status="RUNNING")
                self._run_id = known["run_id"]
            except MlflowException:  # deleted from the store since: start a new run
                pass
        if self._run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "valorl")
            experiment = self._client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id if experiment else self._client.create_experiment(name)
            )
            run = self._client.create_run(experiment_id, run_name=run_path.name)
            self._run_id = run.info.run_id
            params = [
                Param(k, str(v)[: self.MAX_PARAM_LENGTH]) for k, v in flat_params(config).items()
            ]
            for batch in _batches(params, self.MAX_PARAMS):
                self._client.log_batch(self._run_id, params=batch)
            _save_tracker_id(
                run_path, "mlflow", {"tracking_uri": tracking_uri, "run_id": self._run_id}
            )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [self._metric(k, v, now, step) for k, v in scalars.items()]
        for batch in _batches(metrics, self.MAX_METRICS):
            self._client.log_batch(self._run_id, metrics=batch)

    def close(self, error: BaseException | None = None) -> None:
        if error is None:
            status = "FINISHED"
        else:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self._client.set_terminated(self._run_id, status=status)


# ---- helpers ----------------------------------------------------------------------------------


def _require(module: str, extra: str) -> ModuleType:
    """Import a tracker's package, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValorlError(
            f"--logger {extra} needs the {module} package: pip install 'valorl[{extra}]'"
        ) from None


def _tracker_ids(run_path: Path) -> dict[str, Any]:
    path = run_path / TRACKERS
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_tracker_id(run_path: Path, tracker: str, value: Any) -> None:
    ids = _tracker_ids(run_path) | {tracker: value}
    atomic_write(run_path / TRACKERS, (json.dumps(ids, indent=2) + "\n").encode())


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]
