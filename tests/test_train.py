"""The offline driver `valorl.train` end to end: run directory, resume, refusals, policies.

Every run here is IQL with TINY networks on the 2,000 Pendulum transitions, 2 seeds, 40 steps in
chunks of 10 with evaluations at steps 20 and 40, so the compiled chunk is shared by all runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY, interrupt_on_call, synthetic_dataset

import valorl
from valorl.config import to_dict
from valorl.errors import ValorlError
from valorl.training import loop
from valorl.training.run_dir import RunDir

SETTINGS = dict(
    steps=40, log_every=10, eval_every=20, checkpoint_every=10, eval_episodes=2, seeds=2,
    progress=False,
)  # fmt: skip
FILES = {
    "config.json",
    "metrics.jsonl",
    "evaluations.npz",
    "checkpoint.msgpack",
    "result.json",
    "diagnostics.json",
}
TIMING = {"step", "wall_s", "updates_per_s"}


def train(dataset, out, agent="iql", **overrides):
    """valorl.train with the settings of this file, TINY networks and `overrides`."""
    return valorl.train(agent, dataset, out=out, **(SETTINGS | TINY.get(agent, {}) | overrides))


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Contents and modification times of a run's files (the lock file aside)."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.name != ".lock"
    }


def metric_steps(path: Path) -> list[int]:
    return [r["step"] for r in RunDir(path).metrics()]


@pytest.fixture(scope="module")
def finished(pendulum_dataset, tmp_path_factory):
    """A run trained start to finish without interruption: (path, RunResult)."""
    path = tmp_path_factory.mktemp("finished") / "run"
    return path, train(pendulum_dataset, path)


# ---- what a run writes -----------------------------------------------------------------------


def test_run_directory_holds_every_file_and_no_leftovers(finished):
    """A finished run has its six files and no temporary files from atomic writes."""
    path, _ = finished
    names = {p.name for p in path.iterdir()}
    assert names - {".lock"} == FILES
    assert not any(".tmp" in name for name in names)
    assert not any(".tmp" in p.name for p in path.parent.iterdir())


def test_config_records_agent_data_schedule_and_seeds(finished, pendulum_dataset):
    """config.json records everything needed to rebuild and identify the run."""
    path, _ = finished
    config = json.loads((path / "config.json").read_text())
    agent = valorl.make_agent("iql", **TINY["iql"])
    assert config["agent"] == {
        "name": "iql",
        "hyperparameters": json.loads(json.dumps(to_dict(agent))),
    }
    info = pendulum_dataset.info
    data = config["data"]
    assert data["fingerprint"] == pendulum_dataset.fingerprint()
    assert data["transitions"] == 2000
    assert data["env_id"] == "Pendulum-v1"
    assert (data["ref_min_score"], data["ref_max_score"]) == (
        info.ref_min_score,
        info.ref_max_score,
    )
    assert config["spec"] == {"obs_shape": [3], "action_dim": 1}
    assert config["schedule"] == {
        "steps": 40,
        "log_every": 10,
        "eval_every": 20,
        "checkpoint_every": 10,
        "eval_episodes": 2,
    }
    assert config["seeds"] == [0, 1]
    assert config["valorl_version"] == valorl.__version__


def test_metrics_have_one_line_per_chunk_with_per_seed_values(finished):
    """metrics.jsonl has one line per chunk (steps 10..40) with one finite value per seed for
    every agent metric."""
    path, _ = finished
    records = RunDir(path).metrics()
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    for record in records:
        names = set(record) - TIMING
        assert {"value/loss", "critic/loss", "actor/loss"} <= names
        for name in names:
            assert len(record[name]) == 2, name
            assert np.all(np.isfinite(record[name])), name
        assert record["wall_s"] > 0 and record["updates_per_s"] > 0


def test_evaluations_and_result_are_consistent(finished, pendulum_dataset):
    """evaluations.npz has a round at steps 20 and 40 of (seeds, rounds, episodes) returns and
    D4RL scores 100·(R − min)/(max − min); result.json and the RunResult agree with it."""
    path, result = finished
    evals = RunDir(path).evaluations()
    np.testing.assert_array_equal(evals["steps"], [20, 40])
    returns = evals["returns"]
    assert returns.shape == (2, 2, 2)
    assert np.all((returns <= 0) & (returns >= -16.3 * 200))  # Pendulum's reward range
    low, high = pendulum_dataset.info.ref_min_score, pendulum_dataset.info.ref_max_score
    np.testing.assert_allclose(evals["normalized_scores"], 100 * (returns - low) / (high - low))

    np.testing.assert_array_equal(result.eval_steps, [20, 40])
    np.testing.assert_array_equal(result.returns, returns)
    np.testing.assert_allclose(result.final_returns, returns[:, -1].mean(axis=1))
    final_scores = 100 * (returns[:, -1].mean(axis=1) - low) / (high - low)
    np.testing.assert_allclose(result.final_scores, final_scores)

    summary = json.loads((path / "result.json").read_text())
    assert summary["step"] == 40 and summary["seeds"] == [0, 1]
    np.testing.assert_allclose(summary["final_return_per_seed"], returns[:, -1].mean(axis=1))
    np.testing.assert_allclose(summary["final_score_per_seed"], final_scores)
    np.testing.assert_allclose(summary["final_score"]["mean"], final_scores.mean())
    ci_low, ci_high = summary["final_score"]["ci95"]
    assert ci_low <= final_scores.mean() <= ci_high


# ---- resuming --------------------------------------------------------------------------------


def assert_same_metrics(a: list[dict], b: list[dict]):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for name in set(ra) - TIMING:
            np.testing.assert_allclose(ra[name], rb[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "owner, name, call, saved_step, steps_logged",
    [
        # Ctrl-C before the third chunk: checkpoint and metrics at step 20.
        (loop, "update_chunk", 3, 20, [10, 20]),
        # Killed after logging step 30 but before its checkpoint: step 30 must be redone.
        (RunDir, "write_checkpoint", 3, 20, [10, 20, 30]),
        # Killed before the first checkpoint: the run restarts from scratch.
        (RunDir, "write_checkpoint", 1, None, [10]),
    ],
    ids=["between-chunks", "before-checkpoint", "before-first-checkpoint"],
)
def test_resume_equals_uninterrupted(
    pendulum_dataset, finished, tmp_path, monkeypatch, owner, name, call, saved_step, steps_logged
):
    """An interrupted run is resumed by the same call, logs each chunk exactly once, and ends
    with the same parameters, metrics and evaluations as a run that was never interrupted."""
    path = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, owner, name, call)
        with pytest.raises(KeyboardInterrupt):
            train(pendulum_dataset, path)
    assert not (path / "result.json").exists()
    assert metric_steps(path) == steps_logged
    if saved_step is None:
        with pytest.raises(ValorlError, match="has no checkpoint yet"):
            valorl.load_policy(path)
    else:
        assert valorl.load_policy(path).step == saved_step

    result = train(pendulum_dataset, path)
    assert metric_steps(path) == [10, 20, 30, 40]
    assert (path / "result.json").is_file()

    finished_path, finished_result = finished
    resumed, reference = valorl.load_policy(path), valorl.load_policy(finished_path)
    assert resumed.step == reference.step == 40
    leaves, reference_leaves = jax.tree.leaves(resumed.states), jax.tree.leaves(reference.states)
    assert len(leaves) == len(reference_leaves)
    for a, b in zip(leaves, reference_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert_same_metrics(RunDir(path).metrics(), RunDir(finished_path).metrics())
    np.testing.assert_array_equal(result.eval_steps, finished_result.eval_steps)
    np.testing.assert_allclose(result.returns, finished_result.returns, rtol=1e-6)


def test_finished_run_is_not_retrained(pendulum_dataset, finished, monkeypatch):
    """Calling train again on a finished run returns its results without training, evaluating
    or rewriting anything."""
    path, result = finished
    before = snapshot(path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(loop, "Loop", forbidden)
    monkeypatch.setattr(loop, "update_chunk", forbidden)
    again = train(pendulum_dataset, path)
    assert snapshot(path) == before
    assert again.path == path
    np.testing.assert_array_equal(again.returns, result.returns)
    np.testing.assert_array_equal(again.eval_steps, result.eval_steps)


@pytest.mark.parametrize(
    "overrides, difference",
    [
        (dict(expectile=0.8), "agent.hyperparameters.expectile: 0.7 -> 0.8"),
        (dict(steps=60), "schedule.steps: 40 -> 60"),
        (dict(eval_every=40), "schedule.eval_every: 20 -> 40"),
        (dict(seeds=3), "seeds: [0, 1] -> [0, 1, 2]"),
        (dict(seed=5), "seeds: [0, 1] -> [5, 6]"),
    ],
)
def test_reopening_with_another_config_is_refused(
    pendulum_dataset, finished, overrides, difference
):
    """A run directory only ever holds one configuration: another one is refused with the
    differing field named, and the run is left untouched."""
    path, _ = finished
    before = snapshot(path)
    with pytest.raises(ValorlError, match="holds a run with a different configuration") as e:
        train(pendulum_dataset, path, **overrides)
    assert difference in str(e.value)
    assert "choose another --out" in str(e.value)
    assert snapshot(path) == before


def test_a_run_that_predates_a_new_hyperparameter_reopens(pendulum_dataset, finished, tmp_path):
    """A config written before a hyperparameter existed (here: without IQL's `expectile` and
    the ensemble's `layer_norm`) reopens when the value asked for is the default, and is
    still refused when it is not."""
    import shutil

    path = tmp_path / "old"
    shutil.copytree(finished[0], path)
    config = json.loads((path / "config.json").read_text())
    del config["agent"]["hyperparameters"]["expectile"]
    del config["agent"]["hyperparameters"]["ensemble"]["layer_norm"]
    (path / "config.json").write_text(json.dumps(config))
    result = train(pendulum_dataset, path)  # finished: returned as it is
    assert result.final_returns.shape == finished[1].final_returns.shape
    with pytest.raises(ValorlError, match=re.escape("agent.hyperparameters.expectile: 0.7 -> 0.8")):
        train(pendulum_dataset, path, expectile=0.8)


def test_changed_dataset_is_refused(pendulum_dataset, finished):
    """The same --out with data differing in a single reward is refused: the fingerprint
    differs, so a run never resumes (or reports) on data it was not trained on."""
    path, _ = finished
    rewards = pendulum_dataset.rewards.copy()
    rewards[123] += 0.5
    changed = dataclasses.replace(pendulum_dataset, rewards=rewards)
    assert len(changed) == len(pendulum_dataset)
    before = snapshot(path)
    with pytest.raises(ValorlError, match=re.escape("data.fingerprint: ")):
        train(changed, path)
    assert snapshot(path) == before


# ---- the lock --------------------------------------------------------------------------------


def test_second_lock_holder_is_refused(finished):
    """While one holder trains a run, a second one (and train itself) is refused with the
    holder's pid; the lock is free again once the first lets go."""
    path, _ = finished
    message = f"{path} is being trained by another process (pid {os.getpid()})"
    with RunDir(path), pytest.raises(ValorlError, match=re.escape(message)), RunDir(path):
        pass
    with RunDir(path):  # released
        pass


def test_train_refuses_a_run_locked_by_another_process(pendulum_dataset, finished):
    """A run locked by another process cannot be trained (or even reported) from here."""
    path, _ = finished
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"
            f"f = open({str(path / '.lock')!r}, 'w')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValorlError, match="is being trained by another process"):
            train(pendulum_dataset, path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with RunDir(path):  # the other process exited, so the lock is free
        pass


def test_failed_second_entry_keeps_the_first_lock(finished):
    """A refused second `with run:` on the same RunDir object must not drop the lock that the
    object already holds (nor break its own exit)."""
    path, _ = finished
    run = RunDir(path)
    with run:
        with pytest.raises(ValorlError, match="being trained by another process"):
            run.__enter__()
        with pytest.raises(ValorlError, match="being trained by another process"), RunDir(path):
            pass
    with RunDir(path):
        pass


# ---- refusals before anything is written -----------------------------------------------------


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        ("pendulum", dict(seeds=0), "--seeds must be at least 1, got 0"),
        ("pendulum", dict(steps=0), "--steps must be at least 1, got 0"),
        ("pendulum", dict(log_every=0), "--log-every must be at least 1, got 0"),
        ("pendulum", dict(eval_episodes=-1), "--eval-episodes must be 0 or more, got -1"),
        (
            "pendulum",
            dict(agent="td3_bc", steps=41),
            "td3_bc consumes 2 batches per update, so --steps must be a multiple of 2 (got 41)",
        ),
        (
            "pendulum",
            dict(agent="td3_bc", eval_every=15),
            "so --eval-every must be a multiple of 2 (got 15)",
        ),
        ("pendulum", dict(agent="nosuch"), "unknown agent 'nosuch'; choose from bc, td3_bc, iql"),
        ("pendulum", dict(temperature=1.0), "unknown IQL field(s): temperature"),
        ("pendulum", dict(expectile="high"), "IQL.expectile: expected float, got 'high'"),
        ("pendulum", dict(env="NoSuchEnv-v0"), "cannot make environment 'NoSuchEnv-v0'"),
        (
            "synthetic",
            dict(),
            "dataset 'synthetic' names no environment; pass --env ENV_ID, or --eval-episodes 0 "
            "to train without evaluation",
        ),
        (
            "synthetic",
            dict(env="Pendulum-v1"),
            "observations have shape (4,) per step but Pendulum-v1 expects (3,)",
        ),
    ],
)
def test_bad_arguments_write_nothing(request, tmp_path, data, kwargs, message):
    """Bad arguments are refused with a one-line ValorlError before any directory is made."""
    dataset = (
        request.getfixturevalue("pendulum_dataset")
        if data == "pendulum"
        else synthetic_dataset(obs_dim=4, action_dim=1)
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValorlError, match=re.escape(message)):
        train(dataset, tmp_path / "run", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_out_that_is_not_a_run_is_refused(pendulum_dataset, tmp_path):
    """An existing directory that is not a run is never trained into (or overwritten)."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    with pytest.raises(ValorlError, match=re.escape(f"{out} is not a valorl run (no config.json)")):
        train(pendulum_dataset, out)
    assert [p.name for p in out.iterdir()] == ["todo.txt"]


# ---- without an environment, and default paths ----------------------------------------------


def test_training_without_evaluation_needs_no_environment(tmp_path):
    """eval_episodes=0 trains on data that names no environment and writes no evaluations."""
    dataset = synthetic_dataset(n=2000, obs_dim=3, action_dim=1)  # Pendulum's shapes: no compile
    result = train(dataset, tmp_path / "run", eval_episodes=0)
    path = tmp_path / "run"
    assert not (path / "evaluations.npz").exists()
    assert json.loads((path / "result.json").read_text()) == {"step": 40, "seeds": [0, 1]}
    assert metric_steps(path) == [10, 20, 30, 40]
    config = json.loads((path / "config.json").read_text())
    assert config["data"]["env_id"] is None and config["data"]["env_spec_json"] is None
    assert result.returns.shape == (2, 0, 0) and result.eval_steps.shape == (0,)
    assert result.scores is None and result.final_scores is None
    policy = valorl.load_policy(path)
    actions = policy(dataset.observations[:5])
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 1.0)


def test_default_out_is_stable_per_config(pendulum_dataset, tmp_path):
    """Without --out, the run goes to runs/<agent>-<data>-<hash>: the same call maps to the
    same directory (and finds it finished), another schedule to another one."""
    first = train(pendulum_dataset, None)
    assert first.path.parent == Path("runs")
    assert first.path.name.startswith("iql-Pendulum-v1-")
    assert (tmp_path / first.path / "result.json").is_file()
    again = train(pendulum_dataset, None)
    assert again.path == first.path
    other = train(pendulum_dataset, None, eval_every=40)
    assert other.path != first.path
    np.testing.assert_array_equal(other.eval_steps, [40])


# ---- policies --------------------------------------------------------------------------------


def test_load_policy_acts_in_environment_units(finished, pendulum_dataset):
    """load_policy gives each seed's policy: one observation -> (action_dim,), a batch -> (B,
    action_dim), in Pendulum's [-2, 2]; equal to 2·tanh-mean of the IQL actor (IQL keeps raw
    observations), and different for different seeds."""
    path, _ = finished
    policy = valorl.load_policy(path)
    assert policy.step == 40 and policy.seeds == [0, 1]
    assert isinstance(policy.agent, valorl.IQL)
    obs = pendulum_dataset.observations[:6]

    one = policy(obs[0])
    assert one.shape == (1,)
    batch = policy(obs)
    assert batch.shape == (6, 1)
    assert np.all(np.abs(batch) <= 2.0)
    np.testing.assert_allclose(batch[0], one, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(policy(obs[0].tolist()), one)

    seed1 = jax.tree.map(lambda x: x[1], policy.states)
    unit = policy.agent.act(seed1, obs, jax.random.key(0), True)
    np.testing.assert_allclose(policy(obs, seed_index=1), 2.0 * np.asarray(unit), rtol=1e-5)
    assert not np.allclose(policy(obs, seed_index=0), policy(obs, seed_index=1))


def test_stochastic_policy_needs_a_key(finished, pendulum_dataset):
    """Stochastic actions need an explicit key; with one they stay within the bounds."""
    path, _ = finished
    policy = valorl.load_policy(path)
    obs = pendulum_dataset.observations[:6]
    with pytest.raises(ValorlError, match="a stochastic action needs a key"):
        policy(obs, deterministic=False)
    noisy = policy(obs, key=jax.random.key(3), deterministic=False)
    assert noisy.shape == (6, 1) and np.all(np.abs(noisy) <= 2.0)
    assert not np.allclose(noisy, policy(obs))


def test_policy_seed_index_follows_python_indexing(finished, pendulum_dataset):
    """seed_index counts like a Python index (-1 is the last seed); one past the seeds is a
    ValorlError naming the seed count, not a vmap shape error."""
    path, _ = finished
    policy = valorl.load_policy(path)
    obs = pendulum_dataset.observations[:4]
    np.testing.assert_array_equal(policy(obs, seed_index=-1), policy(obs, seed_index=1))
    for index in (2, -3):
        with pytest.raises(ValorlError, match=rf"seed_index {index} is out of range.*2 seeds"):
            policy(obs, seed_index=index)


@pytest.mark.parametrize("shape", [(4,), (5, 4), ()])
def test_policy_rejects_observations_of_another_shape(finished, shape):
    """Observations of the wrong size are a ValorlError naming both shapes, not a broadcasting
    error from inside jit."""
    path, _ = finished
    policy = valorl.load_policy(path)
    with pytest.raises(ValorlError, match=re.escape(f"observations have shape {shape}")) as e:
        policy(np.zeros(shape, np.float32))
    assert "(3,)" in str(e.value)


def test_ctrl_c_stops_right_after_the_next_checkpoint(tmp_path):
    """While a run trains, SIGINT only asks it to stop: the checkpoint in progress is written
    in full, then KeyboardInterrupt ends the run; the previous handler comes back on exit."""
    previous = signal.getsignal(signal.SIGINT)
    run = RunDir.open(tmp_path / "r", {"agent": "x"})
    with run:
        os.kill(os.getpid(), signal.SIGINT)  # handled: no exception here
        with pytest.raises(KeyboardInterrupt):
            run.write_checkpoint(b"state", 1)
        assert (run.path / "checkpoint.msgpack").read_bytes() == b"state"
    assert signal.getsignal(signal.SIGINT) is previous
