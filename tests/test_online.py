"""The online and hybrid driver `train_online` end to end: what a run writes, what its replay
buffer holds, termination vs truncation, resume with the buffer restored, the hybrid and
offline-to-online modes, collection with a SAC run, and one-line errors on the command line.

Runs use TINY networks and a few hundred Pendulum steps; the SAC runs share one configuration
(2 seeds, 300 steps of which 100 warm-up) so they share compiled functions.
"""

from __future__ import annotations

import json

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, interrupt_on_call

import valorl
from valorl.cli.main import main
from valorl.collection import collect
from valorl.data import replay
from valorl.data.dataset import Batch
from valorl.training import online
from valorl.training.interaction import Stager, _at_episode_start
from valorl.training.online import train_online
from valorl.training.restore import load_progress
from valorl.training.run_dir import RunDir

SETTINGS = dict(
    mode="online",
    env="Pendulum-v1",
    online_steps=300,
    start_steps=100,
    log_every=100,
    eval_every=200,
    checkpoint_every=100,
    eval_episodes=1,
    seeds=2,
    progress=False,
)


def train(out, agent="sac", **overrides):
    return train_online(agent, out=out, **(SETTINGS | TINY[agent] | overrides))


def rows(ckpt, seed=0):
    """The filled rows of one seed's buffer as numpy arrays."""
    size = int(ckpt.online.buffers.size[seed])
    return {
        name: np.asarray(value[seed, :size])
        for name, value in vars(ckpt.online.buffers.data).items()
        if value is not None
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An online SAC run trained start to finish: (path, RunResult)."""
    path = tmp_path_factory.mktemp("online") / "run"
    return path, train(path)


# ---- a plain online run ------------------------------------------------------------------------


def test_online_run_writes_metrics_evaluations_and_result(finished):
    """The run logs every 100 environment steps, evaluates at 200 and 300 (returns only: no
    dataset, no reference scores), and records its schedule."""
    path, result = finished
    assert {p.name for p in path.iterdir()} - {".lock"} == {
        "config.json",
        "metrics.jsonl",
        "evaluations.npz",
        "checkpoint.msgpack",
        "result.json",
    }
    records = RunDir(path).metrics()
    assert [r["step"] for r in records] == [100, 200, 300]
    assert [r["env_step"] for r in records] == [100, 200, 300]
    assert "critic/loss" not in records[0]  # warm-up: random actions, no updates
    for record in records[1:]:
        assert record["phase"] == "online" and record["env_steps_per_s"] > 0
        for name in ("critic/loss", "actor/loss", "temperature/alpha"):
            assert len(record[name]) == 2 and np.all(np.isfinite(record[name])), name
    # Pendulum episodes are 200 steps: one finished per seed, within the second chunk
    assert records[0]["rollout/episode_return"] == [None, None]
    assert all(r < 0 for r in records[1]["rollout/episode_return"])
    np.testing.assert_array_equal(result.eval_steps, [200, 300])
    assert result.returns.shape == (2, 2, 1) and result.scores is None
    config = json.loads((path / "config.json").read_text())
    assert config["data"]["env_id"] == "Pendulum-v1" and config["data"]["fingerprint"] is None
    schedule = config["schedule"]
    assert (schedule["mode"], schedule["steps"], schedule["online_steps"]) == ("online", 300, 300)
    assert (schedule["utd"], schedule["start_steps"], schedule["buffer_size"]) == (1, 100, 300)
    assert schedule["updates"] == 200


def test_replay_buffer_holds_every_env_step(finished):
    """Each seed's buffer holds exactly the 300 environment steps, in order, chained
    (next observation = following observation inside the episode), with the episode end at
    Pendulum's time limit stored as a truncation (mask 1, done 1); exactly 200 updates ran."""
    path, _ = finished
    ckpt = load_progress(path)
    assert ckpt.online.env_step == 300 and ckpt.step == 300
    np.testing.assert_array_equal(ckpt.online.buffers.size, [300, 300])
    np.testing.assert_array_equal(ckpt.online.buffers.position, [0, 0])  # capacity 300: full
    np.testing.assert_array_equal(ckpt.online.episodes, [2, 2])
    for seed in (0, 1):
        data = rows(ckpt, seed)
        np.testing.assert_array_equal(data["observations"][1:200], data["next_observations"][:199])
        np.testing.assert_array_equal(data["masks"], np.ones(300))
        np.testing.assert_array_equal(np.flatnonzero(data["dones"]), [199])
        assert np.all(np.abs(data["actions"]) <= 1.0)  # stored in agent units
    assert not np.allclose(rows(ckpt, 0)["actions"], rows(ckpt, 1)["actions"])
    np.testing.assert_array_equal(ckpt.states.critic.step, [200, 200])
    np.testing.assert_array_equal(ckpt.states.actor.step, [200, 200])


def test_sac_run_is_a_policy_and_a_behaviour(finished):
    """load_policy reads an online run (deterministic actions 2·tanh(mean) in Pendulum's
    units), and `collect` uses it as a behaviour policy."""
    path, _ = finished
    policy = valorl.load_policy(path)
    assert policy.step == 300 and isinstance(policy.agent, valorl.SAC)
    obs = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -2.0]], np.float32)
    state = jax.tree.map(lambda x: x[1], policy.states)
    unit = policy.agent.act(state, obs, jax.random.key(0), True)
    np.testing.assert_allclose(policy(obs, seed_index=1), 2.0 * np.asarray(unit), rtol=1e-5)
    data = collect(
        "Pendulum-v1",
        [f"{path}:noise=0.1,index=1"],
        60,
        seed=0,
        reference_episodes=1,
        progress=False,
    )
    assert len(data) == 60 and np.all(np.abs(data.actions) <= 2.0)


# ---- termination and truncation ---------------------------------------------------------------


class Countdown(gym.Env):
    """Observation (t, episode parity). Odd episodes terminate at t = 4; even ones run into
    the time limit of 6 steps. The reward is t."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.episode, self.t = -1, 0

    def _obs(self):
        return np.array([self.t, self.episode % 2], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.episode % 2 == 1 and self.t == 4, False, {}


if "ValorlTest/Countdown-v0" not in gym.registry:
    gym.register("ValorlTest/Countdown-v0", entry_point=Countdown, max_episode_steps=6)


def test_termination_masks_zero_truncation_bootstraps(tmp_path):
    """Terminated steps are stored with mask 0, time-limit truncations with mask 1, both with
    done 1, and every stored next observation is the real one (t + 1), never the reset."""
    path = tmp_path / "run"
    train(
        path,
        env="ValorlTest/Countdown-v0",
        online_steps=30,
        start_steps=30,
        log_every=30,
        eval_episodes=0,
        seeds=1,
    )
    ckpt = load_progress(path)
    data = rows(ckpt)
    t, odd = data["observations"][:, 0], data["observations"][:, 1]
    next_t = data["next_observations"][:, 0]
    np.testing.assert_array_equal(next_t, t + 1)
    np.testing.assert_array_equal(data["rewards"], next_t)
    terminal = (odd == 1) & (next_t == 4)
    truncated = (odd == 0) & (next_t == 6)
    assert terminal.sum() == 3 and truncated.sum() == 3  # 6 + 4 + 6 + 4 + 6 + 4 = 30 steps
    np.testing.assert_array_equal(data["masks"], np.where(terminal, 0.0, 1.0))
    np.testing.assert_array_equal(data["dones"], (terminal | truncated).astype(np.float32))
    assert int(ckpt.online.episodes[0]) == 7  # six finished, the seventh started


def test_returns_to_go_wait_for_the_episode_end():
    """Agents that need Monte-Carlo returns get an episode's transitions only when it ends,
    with G_t = r_t + γ·G_{t+1} (terminated: nothing after; truncated: a geometric tail at the
    mean reward, as `Dataset.returns_to_go`)."""
    stager = Stager(1, (1,), 1, block=1, discount=0.5)
    for step, reward in enumerate([1.0, 2.0]):
        stager.record(0, [step], [0.0], reward, [step + 1], False, False)
    batch, counts = stager.take()
    assert counts.tolist() == [0]
    stager.record(0, [2], [0.0], 4.0, [3], True, False)
    stager.record(0, [0], [0.0], 1.0, [1], False, False)
    stager.record(0, [1], [0.0], 1.0, [2], False, True)
    batch, counts = stager.take()
    assert counts.tolist() == [5] and batch.rewards.shape == (1, 8)  # padded to a power of two
    np.testing.assert_allclose(batch.returns_to_go[0, :5], [3.0, 4.0, 4.0, 2.0, 2.0])
    np.testing.assert_array_equal(batch.masks[0, :5], [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(batch.dones[0, :5], [0, 0, 1, 0, 1])


# ---- resume ------------------------------------------------------------------------------------


def test_resume_continues_from_the_checkpoint_with_its_buffer(finished, tmp_path, monkeypatch):
    """Killed before its last checkpoint, the run keeps the one at step 200 (buffer of 200
    transitions, not empty); the same call resumes there: each chunk logged once, 300 steps
    and 200 updates in all, and every stored transition that of the uninterrupted run."""
    path = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, RunDir, "write_checkpoint", 3)
        with pytest.raises(KeyboardInterrupt):
            train(path)
    saved = load_progress(path)
    assert saved.step == saved.online.env_step == 200
    np.testing.assert_array_equal(saved.online.buffers.size, [200, 200])
    assert not (path / "result.json").exists()

    result = train(path)
    assert [r["step"] for r in RunDir(path).metrics()] == [100, 200, 300]
    np.testing.assert_array_equal(result.eval_steps, [200, 300])
    resumed, reference = load_progress(path), load_progress(finished[0])
    np.testing.assert_array_equal(resumed.online.buffers.size, [300, 300])
    np.testing.assert_array_equal(resumed.states.critic.step, [200, 200])
    for name, value in rows(saved).items():
        np.testing.assert_array_equal(rows(resumed)[name][:200], value, err_msg=name)
        np.testing.assert_array_equal(rows(reference)[name][:200], value, err_msg=name)
    # step 200 ended Pendulum's first episode: the resumed environments replay the episode
    # that had just begun (the same reset seed), so the run continues as the uninterrupted one
    np.testing.assert_array_equal(resumed.online.episodes, [2, 2])
    np.testing.assert_array_equal(rows(resumed)["observations"], rows(reference)["observations"])


def test_resume_replays_an_episode_only_if_it_had_just_begun():
    """An environment whose newest stored transition ended an episode had been reset and not
    stepped: resume reuses that episode's seed; any other starts the next episode."""
    buffer = replay.init(4, (1,), 1)
    one = lambda done: Batch(
        observations=jnp.zeros((1, 1)), actions=jnp.zeros((1, 1)), rewards=jnp.zeros(1),
        next_observations=jnp.zeros((1, 1)), masks=jnp.ones(1), dones=jnp.full(1, done),
    )  # fmt: skip
    ended = replay.add(replay.add(buffer, one(0.0)), one(1.0))
    midway = replay.add(ended, one(0.0))
    wrapped = replay.add(replay.add(replay.add(midway, one(0.0)), one(0.0)), one(1.0))
    stack = lambda *b: jax.tree.map(lambda *x: jnp.stack(x), *b)
    np.testing.assert_array_equal(
        _at_episode_start(stack(buffer, ended, midway, wrapped)), [0, 1, 0, 1]
    )


def test_env_steps_per_call_keeps_the_update_count(tmp_path):
    """K = 2 environment steps per call with utd 2: every environment step after the warm-up
    still gets 2 critic steps and one actor step."""
    path = tmp_path / "run"
    train(
        path,
        online_steps=40,
        start_steps=20,
        log_every=20,
        eval_every=40,
        eval_episodes=0,
        env_steps_per_call=2,
        utd=2,
    )
    ckpt = load_progress(path)
    np.testing.assert_array_equal(ckpt.online.buffers.size, [40, 40])
    np.testing.assert_array_equal(ckpt.states.critic.step, [40, 40])
    np.testing.assert_array_equal(ckpt.states.actor.step, [20, 20])
    assert json.loads((path / "config.json").read_text())["agent"]["hyperparameters"]["utd"] == 2


def test_delayed_actor_agent_gets_one_critic_step_per_env_step(tmp_path):
    """DSAC-T consumes two batches per update (two critic steps, one actor step); by default
    two environment steps go between calls, so it still gets one critic step per env step."""
    path = tmp_path / "run"
    train(path, agent="dsac_t", online_steps=40, start_steps=20, log_every=20, eval_every=40,
          eval_episodes=0)  # fmt: skip
    ckpt = load_progress(path)
    np.testing.assert_array_equal(ckpt.states.critic.step, [20, 20])
    np.testing.assert_array_equal(ckpt.states.actor.step, [10, 10])


# ---- with a dataset ------------------------------------------------------------------------------


def test_hybrid_mixes_data_from_the_start(pendulum_dataset, tmp_path):
    """Hybrid SAC: the dataset's reference returns give normalised scores, the run records
    the symmetric 0.5 mix, its buffer holds only its own 200 steps, and a critic agent with a
    dataset writes diagnostics."""
    path = tmp_path / "run"
    result = train_online(
        "sac",
        pendulum_dataset,
        **(SETTINGS | TINY["sac"] | dict(mode="hybrid", env=None, online_steps=200)),
        out=path,
    )
    schedule = json.loads((path / "config.json").read_text())["schedule"]
    assert (schedule["mode"], schedule["offline_ratio"], schedule["start_steps"]) == (
        "hybrid",
        0.5,
        100,
    )
    assert result.scores is not None and result.scores.shape == (2, 1, 1)
    assert (path / "diagnostics.json").is_file()
    np.testing.assert_array_equal(load_progress(path).online.buffers.size, [200, 200])


def test_offline_to_online_pretrains_then_fine_tunes(pendulum_dataset, tmp_path):
    """IQL offline-to-online: 40 offline gradient steps (logged as phase offline, evaluated at
    40), then 100 environment steps of fine-tuning with no warm-up, global steps continuing
    from 40; one update per step in both phases."""
    path = tmp_path / "run"
    result = train_online(
        "iql",
        pendulum_dataset,
        mode="offline-to-online",
        offline_steps=40,
        online_steps=100,
        log_every=20,
        eval_every=50,
        eval_episodes=1,
        seeds=2,
        progress=False,
        out=path,
        **TINY["iql"],
    )
    records = RunDir(path).metrics()
    assert [(r["phase"], r["step"]) for r in records] == [
        ("offline", 20),
        ("offline", 40),
        *[("online", 40 + s) for s in (20, 40, 60, 80, 100)],
    ]
    # one chunk size (20): the evaluation due at online step 50 falls on the chunk ending at 60
    np.testing.assert_array_equal(result.eval_steps, [40, 100, 140])
    schedule = json.loads((path / "config.json").read_text())["schedule"]
    assert (schedule["offline_ratio"], schedule["start_steps"], schedule["updates"]) == (
        "uniform",
        0,
        140,
    )
    ckpt = load_progress(path)
    np.testing.assert_array_equal(ckpt.states.critic.step, [140, 140])
    np.testing.assert_array_equal(ckpt.online.buffers.size, [100, 100])


# ---- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["sac", "--mode", "online"], "--mode online needs an environment: pass --env ENV_ID"),
        (["sac", "--mode", "hybrid", "--env", "Pendulum-v1"], "--mode hybrid needs a dataset"),
        (
            ["sac", "--mode", "online", "--env", "Pendulum-v1", "--utd", "0"],
            "--utd must be at least 1",
        ),
        (
            ["iql", "--mode", "online", "--env", "Pendulum-v1", "--utd", "0"],
            "--utd must be positive",
        ),
        (["sac", "--env", "Pendulum-v1", "--online-steps", "10"], "--online-steps applies to"),
        (["sac"], "--mode offline needs --dataset ID_OR_PATH"),
        (
            ["sac", "--mode", "online", "--env", "Pendulum-v1", "--dataset", "d"],
            "--mode online learns without a dataset",
        ),
        (
            ["sac", "--mode", "online", "--env", "Pendulum-v1", "--offline-ratio", "0.5"],
            "--offline-ratio needs a dataset",
        ),
        (
            ["sac", "--mode", "online", "--env", "Pendulum-v1", "--steps", "10"],
            "--start-steps must be between 0 and --online-steps (10), got 5000",
        ),
        (
            [
                "td3_bc",
                "--mode",
                "online",
                "--env",
                "Pendulum-v1",
                "--steps",
                "10",
                "--start-steps",
                "0",
                "--env-steps-per-call",
                "1",
            ],
            "td3_bc consumes 2 batches per update, so --env-steps-per-call × --utd (1 × 1)",
        ),
        (["sac", "--mode", "online", "--env", "NoSuchEnv-v0"], "cannot make environment"),
        (
            ["sac", "--mode", "online", "--env", "Pendulum-v1", "--critic", "hl-gauss"],
            "--critic hl-gauss needs --vmin and --vmax in --mode online",
        ),
    ],
)
def test_cli_bad_input_is_one_line(isolated, capsys, args, message):
    """Bad online settings exit with status 2 and one line naming the problem, and write
    nothing."""
    before = sorted(p.name for p in isolated.iterdir())
    assert main(["train", *args, "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("valorl: error: "), err
    assert message in err
    assert sorted(p.name for p in isolated.iterdir()) == before


def test_cli_trains_online(isolated, capsys):
    """`valorl train sac --mode online --env Pendulum-v1 --steps N` trains and prints its
    returns (the same compiled functions as the runs above)."""
    flags = ["--hidden-dims", "8,8", "--batch-size", "16", "--start-steps", "100"]
    code = main(
        [
            "train",
            "sac",
            "--mode",
            "online",
            "--env",
            "Pendulum-v1",
            "--steps",
            "300",
            "--seeds",
            "2",
            "--log-every",
            "100",
            "--eval-every",
            "200",
            "--eval-episodes",
            "1",
            "--out",
            "r",
            "--quiet",
            *flags,
        ]
    )
    assert code == 0
    assert "sac on Pendulum-v1 (online)" in capsys.readouterr().out
    assert load_progress(isolated / "r").online.env_step == 300
    assert online.DEFAULT_START_STEPS["online"] == 5000


@pytest.mark.expensive  # 30 s; returns by hand: test_returns_to_go_wait_for_the_episode_end
def test_returns_to_go_agent_gets_monte_carlo_returns_online(pendulum_dataset, tmp_path):
    """Cal-QL (`needs_returns_to_go`) with a dataset: a seed's transitions reach its buffer
    when their episode ends (Pendulum: after 200 steps, so 200 of 250 are stored), each with
    the discounted return `Dataset.returns_to_go` gives (a truncated episode: geometric tail);
    meanwhile the updates draw on the offline data, one per environment step."""
    path = tmp_path / "run"
    train_online(
        "calql",
        pendulum_dataset,
        mode="hybrid",
        online_steps=250,
        start_steps=0,
        log_every=50,
        eval_every=250,
        eval_episodes=0,
        seeds=1,
        progress=False,
        out=path,
        **TINY["calql"],
    )
    ckpt = load_progress(path)
    assert int(ckpt.online.buffers.size[0]) == 200
    data = rows(ckpt)
    episode = valorl.Dataset(
        observations=data["observations"],
        actions=data["actions"],
        rewards=data["rewards"],
        next_observations=data["next_observations"],
        terminals=np.zeros(200, bool),
        timeouts=np.eye(200, dtype=bool)[-1],
    )
    np.testing.assert_allclose(
        data["returns_to_go"], episode.returns_to_go(valorl.make_agent("calql").discount), rtol=1e-5
    )
    assert int(ckpt.states.critic.step[0]) == 250
