"""--logger: metrics mirrored to TensorBoard, W&B (offline) and MLflow (file store), each read
back with the tool's own reader; no network is used."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from valorl.errors import ValorlError
from valorl.training.loggers import (
    TRACKERS,
    evaluation_scalars,
    flat_params,
    open_logger,
    record_scalars,
)
from valorl.training.run_dir import RunDir

CONFIG = {
    "agent": {"name": "bc", "hyperparameters": {"batch_size": 16, "hidden_dims": [8, 8]}},
    "data": {"name": "tiny", "ref_min_score": None},
    "seeds": [3, 4],
}
RECORDS = [  # values exact in float32, so TensorBoard's float32 scalars compare exactly
    {"step": 10, "phase": "offline", "wall_s": 0.5, "critic/loss": [0.5, 1.5]},
    {"step": 20, "phase": "offline", "wall_s": 0.25, "critic/loss": [0.25, None]},
]
RETURNS = np.array([[1.0, 3.0], [5.0, 7.0]])  # (seeds, episodes) of the round at step 20
SCORES = RETURNS * 10
EXPECTED = {  # tag -> [(step, value)]
    "critic/loss/mean": [(10, 1.0), (20, 0.25)],
    "critic/loss/seed_3": [(10, 0.5), (20, 0.25)],
    "critic/loss/seed_4": [(10, 1.5)],
    "wall_s": [(10, 0.5), (20, 0.25)],
    "eval/return/mean": [(20, 4.0)],
    "eval/return/seed_3": [(20, 2.0)],
    "eval/return/seed_4": [(20, 6.0)],
    "eval/normalized_score/mean": [(20, 40.0)],
    "eval/normalized_score/seed_3": [(20, 20.0)],
    "eval/normalized_score/seed_4": [(20, 60.0)],
}


@pytest.fixture(autouse=True)
def offline_trackers(monkeypatch, tmp_path):
    """W&B offline and silent, its user files in a temp dir; MLflow without telemetry or a
    tracking URI from the environment: nothing reaches the network."""
    home = tmp_path / "tracker-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the logger sets it; restored after
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)


def write_session(name: str, run: Path, records=RECORDS, evaluate: bool = True) -> None:
    logger = open_logger(name, run, CONFIG)
    for record in records:
        logger.log(record["step"], record)
    if evaluate:
        logger.log_evaluation(20, RETURNS, SCORES)
    logger.close()


# ---- what goes to every tracker ---------------------------------------------------------------


def test_record_scalars_per_seed_and_mean_skipping_none_and_text():
    record = {"step": 5, "phase": "online", "env_step": 7, "q": [1.0, None, 4.0], "r": [None] * 3}
    assert record_scalars(record, [0, 1, 2]) == {
        "env_step": 7.0,
        "q/mean": 2.5,
        "q/seed_0": 1.0,
        "q/seed_2": 4.0,
    }


def test_evaluation_scalars_average_episodes_then_seeds():
    assert evaluation_scalars(RETURNS, None, [3, 4]) == {
        "eval/return/mean": 4.0,
        "eval/return/seed_3": 2.0,
        "eval/return/seed_4": 6.0,
    }


def test_flat_params_dotted_keys_and_json_for_the_rest():
    assert flat_params(CONFIG) == {
        "agent.name": "bc",
        "agent.hyperparameters.batch_size": 16,
        "agent.hyperparameters.hidden_dims": "[8, 8]",
        "data.name": "tiny",
        "data.ref_min_score": "null",
        "seeds": "[3, 4]",
    }


def test_no_logger_writes_nothing(tmp_path):
    write_session(None, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_logger_is_a_one_line_error(tmp_path):
    with pytest.raises(ValorlError, match=r"unknown --logger 'neptune'; choose from tensorboard"):
        open_logger("neptune", tmp_path, CONFIG)


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_missing_extra_names_the_install_command(name, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # what an uninstalled package looks like
    with pytest.raises(ValorlError) as error:
        open_logger(name, tmp_path, CONFIG)
    assert str(error.value) == (
        f"--logger {name} needs the {name} package: pip install 'valorl[{name}]'"
    )


# ---- TensorBoard ------------------------------------------------------------------------------


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_scalars_read_back_by_event_accumulator(tmp_path):
    write_session("tensorboard", tmp_path)
    assert tensorboard_scalars(tmp_path) == EXPECTED


def test_tensorboard_hparams_hold_the_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    write_session("tensorboard", tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["agent.hyperparameters.batch_size"].number_value == 16
    assert info.hparams["agent.name"].string_value == "bc"
    assert info.group_name == tmp_path.name


def test_tensorboard_resume_replaces_the_redone_steps(tmp_path):
    """A session that dies after logging step 20, resumed from a checkpoint at 10, logs 20
    again: the reader keeps the new value only."""
    write_session("tensorboard", tmp_path, evaluate=False)
    redone = {"step": 20, "wall_s": 0.75, "critic/loss": [0.125, 0.625]}
    write_session("tensorboard", tmp_path, [redone, {"step": 30, "wall_s": 1.0}], evaluate=False)
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["critic/loss/mean"] == [(10, 1.0), (20, 0.375)]
    assert scalars["wall_s"] == [(10, 0.5), (20, 0.75), (30, 1.0)]


# ---- W&B --------------------------------------------------------------------------------------


def wandb_records(run: Path) -> list:
    """Every record of the run's offline W&B sessions, in order, decoded with W&B's own
    protobuf schema from its transaction logs (`run-<id>.wandb`: a LevelDB-style log of 32 KiB
    blocks after a 7-byte ":W&B" header; records split into FULL/FIRST/MIDDLE/LAST pieces, each
    with a 7-byte header of checksum, length and type). wandb 0.31 ships no Python reader; this
    is the format `wandb sync` uploads from."""
    import wandb
    from wandb.proto import wandb_internal_pb2

    wandb.teardown()  # its service writes the log behind `finish`; stopping it flushes the log

    block, header = 32768, 7
    records = []
    for path in sorted(run.glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        pos, pieces = header, b""
        while pos + header <= len(data):
            if block - pos % block < header:  # too little room left: the block is padding
                pos += block - pos % block
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
            pieces += data[pos + header : pos + header + length]
            pos += header + length
            if kind in (1, 4):  # FULL or LAST: a whole record
                records.append(wandb_internal_pb2.Record.FromString(pieces))
                pieces = b""
    return records


def wandb_history(run: Path) -> dict[str, list[tuple[int, float]]]:
    history: dict[str, list[tuple[int, float]]] = {}
    for record in wandb_records(run):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):  # W&B's own _step, _runtime, _timestamp
                    value = json.loads(item.value_json)
                    history.setdefault(key, []).append((record.history.step.num, value))
    return history


def test_wandb_offline_history_and_config(tmp_path):
    write_session("wandb", tmp_path)
    assert wandb_history(tmp_path) == EXPECTED
    (run_record,) = [r.run for r in wandb_records(tmp_path) if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["agent"] == CONFIG["agent"]
    assert config["seeds"] == [3, 4]
    assert run_record.display_name == tmp_path.name
    assert run_record.project == "valorl"


def test_wandb_resume_keeps_the_run_id(tmp_path):
    write_session("wandb", tmp_path, RECORDS[:1], evaluate=False)
    run_id = json.loads((tmp_path / TRACKERS).read_text())["wandb"]
    write_session("wandb", tmp_path, RECORDS[1:], evaluate=False)
    sessions = sorted(tmp_path.glob("wandb/offline-run-*"))
    # two sessions started within one second get "-<id>" and "-<id>-1"
    named = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?")
    assert len(sessions) == 2 and all(named.fullmatch(s.name) for s in sessions)
    assert wandb_history(tmp_path)["critic/loss/mean"] == [(10, 1.0), (20, 0.25)]


def test_wandb_without_an_account_says_how_to_log_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    with pytest.raises(ValorlError, match=r"W&B run \(No API key configured.*WANDB_MODE=offline"):
        open_logger("wandb", tmp_path, CONFIG)


# ---- MLflow -----------------------------------------------------------------------------------


def mlflow_client(run: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())


def test_mlflow_file_store_metric_history_and_params(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # the logger allows the file store itself
    write_session("mlflow", tmp_path)
    client = mlflow_client(tmp_path)
    run_id = json.loads((tmp_path / TRACKERS).read_text())["mlflow"]["run_id"]
    for key, points in EXPECTED.items():
        history = client.get_metric_history(run_id, key)
        assert sorted((m.step, m.value) for m in history) == points, key
    run = client.get_run(run_id)
    assert run.data.params["agent.hyperparameters.batch_size"] == "16"
    assert run.data.params["seeds"] == "[3, 4]"
    assert run.info.run_name == tmp_path.name
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "valorl"


def test_mlflow_resume_continues_the_same_run(tmp_path):
    write_session("mlflow", tmp_path, RECORDS[:1], evaluate=False)
    write_session("mlflow", tmp_path, RECORDS[1:], evaluate=False)
    client = mlflow_client(tmp_path)
    (experiment,) = [e for e in client.search_experiments() if e.name == "valorl"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "critic/loss/mean")
    assert sorted((m.step, m.value) for m in history) == [(10, 1.0), (20, 0.25)]


def test_mlflow_run_stopped_by_ctrl_c_is_killed(tmp_path):
    logger = open_logger("mlflow", tmp_path, CONFIG)
    logger.close(KeyboardInterrupt())
    run_id = json.loads((tmp_path / TRACKERS).read_text())["mlflow"]["run_id"]
    assert mlflow_client(tmp_path).get_run(run_id).info.status == "KILLED"


# ---- through the run directory and valorl.train ------------------------------------------------


def test_run_dir_forwards_metrics_and_the_latest_evaluation(tmp_path):
    run = RunDir.open(tmp_path / "run", CONFIG)
    with run:
        run.attach_logger(open_logger("tensorboard", run.path, CONFIG))
        for record in RECORDS:
            run.append_metrics(record)
        returns = np.stack([np.zeros_like(RETURNS), RETURNS], axis=1)  # rounds at 10 and 20
        run.write_evaluations(np.array([10, 20]), returns, None)
    scalars = tensorboard_scalars(run.path)
    assert scalars["eval/return/mean"] == [(20, 4.0)]
    assert scalars["critic/loss/mean"] == EXPECTED["critic/loss/mean"]
    assert [r["step"] for r in run.metrics()] == [10, 20]


def test_train_with_tensorboard_logger(tmp_path, pendulum_dataset):
    """`valorl.train(..., logger="tensorboard")`: what EventAccumulator reads is what
    metrics.jsonl and evaluations.npz hold."""
    import valorl

    result = valorl.train(
        "bc", pendulum_dataset, steps=20, log_every=10, eval_every=20, eval_episodes=1,
        seeds=2, progress=False, out=tmp_path / "run", logger="tensorboard", **TINY["bc"],
    )  # fmt: skip
    scalars = tensorboard_scalars(result.path)
    metrics = RunDir(result.path).metrics()
    key = next(k for k, v in metrics[0].items() if isinstance(v, list))
    assert scalars[f"{key}/mean"] == [
        (r["step"], pytest.approx(np.mean(r[key]), rel=1e-6)) for r in metrics
    ]
    assert scalars[f"{key}/seed_1"] == [(r["step"], np.float32(r[key][1])) for r in metrics]
    assert scalars["eval/return/mean"] == [(20, pytest.approx(result.returns.mean(), rel=1e-6))]
    assert scalars["eval/normalized_score/mean"] == [
        (20, pytest.approx(result.scores.mean(), rel=1e-6))
    ]


def test_train_flag():
    from valorl.launch.train import train_parser

    args = train_parser("bc").parse_args(["--dataset", "x", "--logger", "mlflow"])
    assert args.logger == "mlflow"
    with pytest.raises(ValorlError, match="--logger"):
        train_parser("bc").parse_args(["--dataset", "x", "--logger", "neptune"])
