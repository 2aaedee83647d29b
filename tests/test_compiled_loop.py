"""The compiled environment phase: JAX environments stepped inside the scan with the updates.

What a run writes, that the environments' states travel in the checkpoint (a resumed run equals
an uninterrupted one, bit for bit), parallel environments with n-step rows, the host loop on
the same game (`--host-loop`), the throughput benchmark, discrete policy files collected from,
and one-line errors. Runs use a tiny DQN on gymnax's CartPole (an MLP, fast to compile) and a
few thousand steps.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import TINY, interrupt_on_call

from valorl.bench import env_throughput
from valorl.cli.main import main
from valorl.collection import collect
from valorl.collection.policy_file import PolicyFile, export_policy
from valorl.errors import ValorlError
from valorl.training.online import train_online
from valorl.training.restore import load_progress
from valorl.training.run_dir import RunDir

CARTPOLE = "gymnax/CartPole-v1"
SETTINGS = dict(
    mode="online",
    env=CARTPOLE,
    online_steps=600,
    start_steps=200,
    log_every=200,
    eval_every=400,
    checkpoint_every=200,
    eval_episodes=2,
    seeds=2,
    utd=0.5,
    eps_decay_steps=400,
    target_update_every=50,
    progress=False,
)


def train(out, **overrides):
    return train_online("dqn", out=out, **(SETTINGS | TINY["dqn"] | overrides))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "run"
    return path, train(path)


def test_a_jax_environment_runs_in_the_compiled_loop(finished):
    path, result = finished
    records = RunDir(path).metrics()
    assert [r["step"] for r in records] == [200, 400, 600]
    assert [r["updates_per_s"] > 0 for r in records] == [False, True, True]  # warm-up first
    assert all(len(r["rollout/episode_return"]) == 2 for r in records)
    config = json.loads((path / "config.json").read_text())
    assert config["spec"] == {"obs_shape": [4], "action_dim": 0, "num_actions": 2}
    assert config["data"]["env_id"] == CARTPOLE and config["data"]["sticky_actions"] == 0.0
    assert config["schedule"]["utd"] == 0.5
    np.testing.assert_array_equal(result.eval_steps, [400, 600])
    assert result.returns.shape == (2, 2, 2)
    progress = load_progress(path)
    # 600 transitions per seed in the buffer; (600 − 200) · 0.5 updates.
    np.testing.assert_array_equal(progress.online.buffers.size, [600, 600])
    np.testing.assert_array_equal(progress.states.critic.step, [200, 200])
    actions = np.asarray(progress.online.buffers.data.actions)
    assert actions.dtype == np.int32 and set(np.unique(actions)) == {0, 1}
    seeds_differ = not np.array_equal(actions[0], actions[1])
    assert seeds_differ


def test_resume_inside_the_same_episodes_equals_an_uninterrupted_run(
    finished, tmp_path, monkeypatch
):
    path = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, RunDir, "write_checkpoint", 2)
        with pytest.raises(KeyboardInterrupt):
            train(path)
    assert load_progress(path).online.env_step == 200
    train(path)
    resumed, reference = load_progress(path), load_progress(finished[0])
    leaves = lambda c: jax.tree.leaves((c.states, c.online.buffers, c.online.env_carry))
    for a, b in zip(leaves(resumed), leaves(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["step"] for r in RunDir(path).metrics()] == [200, 400, 600]


def test_parallel_environments_fill_the_buffer_with_n_step_rows(tmp_path):
    result = train(tmp_path / "run", num_envs=4, n_step=3, seeds=1, online_steps=400)
    progress = load_progress(tmp_path / "run")
    assert progress.online.env_step == 400
    np.testing.assert_array_equal(progress.online.buffers.size, [400])
    np.testing.assert_array_equal(progress.states.critic.step, [100])  # (400 − 200) · 0.5
    assert result.returns.shape == (1, 1, 2)
    # Rows interleave the environments: row i + 4 continues row i's episode unless it ended.
    data = progress.online.buffers.data
    obs, next_obs = np.asarray(data.observations[0]), np.asarray(data.next_observations[0])
    dones = np.asarray(data.dones[0]).astype(bool)
    continuing = ~dones[:-4]
    np.testing.assert_array_equal(next_obs[:-4][continuing], obs[4:][continuing])


def test_the_host_loop_steps_the_same_game_from_python(tmp_path):
    result = train(tmp_path / "run", host_loop=True, online_steps=400, seeds=1)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["schedule"]["host_loop"] is True
    assert result.returns.shape == (1, 1, 2)
    np.testing.assert_array_equal(load_progress(tmp_path / "run").online.buffers.size, [400])


def test_throughput_of_both_loops(tmp_path):
    fast = env_throughput("dqn", CARTPOLE, steps_per_chunk=200, chunks=1, **TINY["dqn"])
    slow = env_throughput(
        "dqn", CARTPOLE, host_loop=True, steps_per_chunk=200, chunks=1, **TINY["dqn"]
    )
    assert (fast["loop"], slow["loop"]) == ("compiled", "host")
    assert fast["timed_env_steps"] == slow["timed_env_steps"] == 200
    assert fast["env_steps_per_s"] > 0 and slow["updates_per_s"] > 0


def test_discrete_policy_file_from_a_run_and_collected_from(finished, tmp_path):
    path, _ = finished
    exported = export_policy(path, seed_index=1)
    exported.save(tmp_path / "policy.npz")
    loaded = PolicyFile.load(tmp_path / "policy.npz")
    assert loaded.num_actions == 2 and loaded.conv_kernel is None
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(obs), exported(obs))
    data = collect(
        CARTPOLE, [f"{tmp_path / 'policy.npz'}:noise=0.2"], 150, progress=False,
        ref_min_score=0.0, ref_max_score=1.0,
    )  # fmt: skip
    assert data.num_actions == 2 and data.actions.dtype == np.int32 and len(data) == 150


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(env="CartPole-v1", num_envs=2), "apply to JAX environments"),
        (dict(host_loop=True, num_envs=2), "--host-loop steps one environment per seed"),
        (
            dict(utd=0.3, env_steps_per_call=1),
            r"--env-steps-per-call × --utd \(1 × 0.3\) must be a whole multiple",
        ),
        (dict(num_envs=7), r"--online-steps \(600\) must be a multiple of"),
        (dict(env="Pendulum-v1"), "dqn acts in a discrete action space"),
    ],
)
def test_bad_settings_are_refused_with_one_line(tmp_path, overrides, message):
    with pytest.raises(ValorlError, match=message):
        train(tmp_path / "run", **overrides)
    assert not (tmp_path / "run").exists()


@pytest.mark.expensive  # the compiled loop's runs are checked above through `train`
def test_cli_runs_minatar_in_the_compiled_loop(tmp_path, capsys):
    code = main(
        [
            "train", "dqn", "--mode", "online", "--env", "Breakout-MinAtar",
            "--online-steps", "200", "--start-steps", "100", "--log-every", "100",
            "--eval-every", "200", "--eval-episodes", "1", "--num-envs", "2",
            "--sticky-actions", "0.25", "--hidden-dims", "8", "--batch-size", "8",
            "--out", str(tmp_path / "run"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["sticky_actions"] == 0.25 and config["spec"]["obs_shape"] == [10, 10, 4]
    buffers = load_progress(tmp_path / "run").online.buffers
    assert buffers.data.observations.dtype == np.uint8  # frames stay compact in the replay
