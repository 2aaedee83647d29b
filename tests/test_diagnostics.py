"""Value diagnostics (bias against Monte-Carlo returns, TD errors) and held-out episode splits."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset, train_tiny_run

import valorl
from valorl.agents import DQC
from valorl.cli.main import main
from valorl.data import sources
from valorl.data.sources import save_npz
from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.training import diagnostics
from valorl.training.diagnostics import diagnose_run, return_range, value_diagnostics


def test_split_holds_out_whole_episodes_reproducibly():
    """Kept and held-out parts partition the rows into whole episodes; the same seed gives the
    same split, another seed another; no split at fraction 0."""
    data = synthetic_dataset(n=400, episode_len=40)  # 10 episodes
    kept, held = data.split_episodes(0.2, seed=3)
    assert len(kept) + len(held) == len(data)
    assert len(held.episode_slices()) == 2 and len(kept.episode_slices()) == 8
    rows = {tuple(r) for r in np.concatenate([kept.observations, held.observations])}
    assert rows == {tuple(r) for r in data.observations}
    assert held.dones.sum() == 2 and bool(held.dones[-1])
    again, _ = data.split_episodes(0.2, seed=3)
    np.testing.assert_array_equal(again.observations, kept.observations)
    other, _ = data.split_episodes(0.2, seed=4)
    assert not np.array_equal(other.observations, kept.observations)
    assert data.split_episodes(0.0) == (data, None)


@pytest.mark.parametrize(
    ("fraction", "episodes", "message"),
    [
        (1.0, 400, "the held-out fraction must be in [0, 1), got 1.0"),
        (-0.1, 400, "the held-out fraction must be in [0, 1), got -0.1"),
        (0.5, 40, "holding out episodes needs at least two episodes in the dataset"),
    ],
)
def test_split_refuses_impossible_fractions(fraction, episodes, message):
    with pytest.raises(ValorlError, match=re.escape(message)):
        synthetic_dataset(n=40, episode_len=episodes).split_episodes(fraction)


def test_a_critic_still_moving_at_the_end_is_named_unsettled(capsys, monkeypatch):
    """Returns in [−100, 0] (100 wide, 3 the threshold), a run of 1000 steps at reward scale
    2: the drift is the mean of the records in (900, 1000] less that of [700, 800], halved.
    Seed 0: ((−106 − 108) / 2 − (−100 − 100) / 2) / 2 = −3.5, beyond 3; seed 1: (−92 + 90) / 2
    = −1, settled; records outside both windows count for nothing."""
    logged = [
        {"step": 0, "phase": "model"},  # a record without the critic's Q is skipped
        {"step": 400, "critic/q_mean": [-50.0, 0.0]},
        {"step": 700, "critic/q_mean": [-100.0, -91.0]},
        {"step": 800, "critic/q_mean": [-100.0, -89.0]},
        {"step": 900, "critic/q_mean": [-500.0, 500.0]},
        {"step": 950, "critic/q_mean": [-106.0, -93.0]},
        {"step": 1000, "critic/q_mean": [-108.0, -91.0]},
        {"step": 1200, "critic/q_mean": [0.0, 0.0]},  # after the checkpoint: a resumed redo
    ]
    found = diagnostics.q_drift(logged, 1000, [-100.0, 0.0], reward_scale=2.0)
    assert found == {"q_drift": [-3.5, -1.0], "q_settled": [False, True]}
    nothing = {"q_drift": None, "q_settled": None}
    assert diagnostics.q_drift(logged[:5], 1000, [-100.0, 0.0]) == nothing  # no late record
    assert diagnostics.q_drift(logged[5:], 1000, [-100.0, 0.0]) == nothing  # no early one
    assert diagnostics.q_drift(logged, 1000, None) == nothing
    assert diagnostics.q_drift(logged, 1000, [0.0, 0.0])["q_settled"] is None
    result = {"step": 1000, "seeds": [3, 4], "chunk_length": 1, "heldout_episodes": 1}
    result |= {"discount": 0.99, "mc_return_mean": -99.0, "return_range": [-100.0, 0.0]}
    result |= {"q_mean": [-55.0, -60.0], "bias": [44.0, 39.0], "q_diverged": [False, False]}
    result |= dict.fromkeys(("td_error_train", "td_error_heldout")) | found
    monkeypatch.setattr(diagnostics, "diagnose_run", lambda run, dataset, on_policy: result)
    assert main(["diagnose", "some-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "seed 3: its mean Q still moved by -3.50 over the last fifth of training" in printed
    assert "seed 4:" not in printed


@dataclasses.dataclass(frozen=True)
class ConstantCritic:
    """A stand-in critic agent: every member's Q is the seed's state value c (+ member index),
    so the ensemble mean is c + 0.5; the policy always acts 0."""

    name = "constant"
    has_critic = True  # declares the CriticAgent contract, as CriticAgentBase does
    critic_chunk = 1  # and a Q of one action, as AgentBase derives from it
    action_chunk = 1
    discount: float = 0.9

    def q_values(self, state, obs, actions):
        return state + jnp.stack([jnp.zeros(obs.shape[0]), jnp.ones(obs.shape[0])])

    def act(self, state, obs, key, deterministic=True):
        return jnp.zeros((obs.shape[0], 1))

    def without_planning(self):
        return self


def test_bias_and_td_errors_by_hand():
    """Two seeds with Q ≡ 2.5 and Q ≡ −0.5 (in scaled units, reward scale 2): in reward units
    Q = 1.25 and −0.25. Bias = Q − mean G; TD error = r + γ·m·Q − Q row by row."""
    data = synthetic_dataset(n=60, episode_len=20)
    normalizer = Normalizer.identity(data.obs_shape, data.action_dim).replace(
        reward_scale=jnp.asarray(2.0)
    )
    states = jnp.array([2.0, -1.0])
    result = value_diagnostics(ConstantCritic(), states, normalizer, data, None)
    q = np.array([1.25, -0.25])
    returns = data.returns_to_go(0.9)
    assert result["mc_return_mean"] == pytest.approx(returns.mean())
    np.testing.assert_allclose(result["q_mean"], q, rtol=1e-6)
    np.testing.assert_allclose(result["bias"], q - returns.mean(), rtol=1e-5)
    td = data.rewards[None] + 0.9 * data.masks[None] * q[:, None] - q[:, None]
    np.testing.assert_allclose(result["td_error_train"], np.sqrt((td**2).mean(1)), rtol=1e-5)
    assert result["td_error_heldout"] is None and result["heldout_episodes"] == 0
    assert result["train_episodes"] == 3
    low, high = result["return_range"]  # the returns rewards in [r_min, r_max] allow at γ 0.9
    r_min, r_max = float(data.rewards.min()), float(data.rewards.max())
    assert low == pytest.approx(min(r_min, 10 * r_min)) and high == pytest.approx(
        max(r_max, 10 * r_max)
    )
    assert result["q_diverged"] == [False, False]  # Q 1.25 and −0.25: within the range


def test_the_return_range_by_hand():
    """From one reward before a termination to an unending run of it: r / (1 − γ)."""
    assert return_range(np.array([-1.0, 0.5, 2.0]), 0.9) == pytest.approx([-10.0, 20.0])
    assert return_range(np.array([1.0, 3.0]), 0.5) == pytest.approx([1.0, 6.0])  # all positive
    assert return_range(np.array([-3.0, -1.0]), 0.5) == pytest.approx([-6.0, -1.0])
    assert return_range(np.array([1.0]), 1.0) is None and return_range(np.array([]), 0.9) is None


def test_a_critic_far_outside_the_return_range_is_named_diverged(capsys, monkeypatch):
    """Rewards in [−1, 0.5] at γ 0.9 allow returns in [−10, 5], 15 wide. With reward scale 2:
    seed 0's Q ≡ 2.5 (1.25) is inside; seed 1's ≡ 11.5 (5.75) is outside, but by less than the
    width; seed 2's ≡ 41.5 (20.75) is beyond it by more, and `valorl diagnose` names it."""
    data = synthetic_dataset(n=60, episode_len=20)
    data = dataclasses.replace(data, rewards=np.linspace(-1.0, 0.5, 60, dtype=np.float32))
    normalizer = Normalizer.identity(data.obs_shape, data.action_dim).replace(
        reward_scale=jnp.asarray(2.0)
    )
    states = jnp.array([2.0, 11.0, 41.0])
    result = value_diagnostics(ConstantCritic(), states, normalizer, data, None)
    assert result["return_range"] == pytest.approx([-10.0, 5.0])
    assert result["q_diverged"] == [False, False, True]
    no_reward = dataclasses.replace(data, rewards=np.zeros(60, dtype=np.float32))
    flat = value_diagnostics(ConstantCritic(), states, normalizer, no_reward, None)
    assert flat["return_range"] == [0.0, 0.0] and flat["q_diverged"] is None  # no width to judge
    result |= {"step": 7, "seeds": [3, 4, 5]}
    monkeypatch.setattr(diagnostics, "diagnose_run", lambda run, dataset, on_policy: result)
    assert main(["diagnose", "some-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "seed 5: mean Q 20.75 lies beyond [-10.00, 5.00], the discounted returns" in printed
    assert "seed 3:" not in printed and "seed 4:" not in printed
    nothing_read = result | dict.fromkeys(("q_mean", "mc_return_mean", "bias", "q_diverged"))
    monkeypatch.setattr(diagnostics, "diagnose_run", lambda run, dataset, on_policy: nothing_read)
    assert main(["diagnose", "some-run"]) == 0  # no whole chunk: a table of dashes, no flag
    assert "diverged" not in capsys.readouterr().out


@dataclasses.dataclass(frozen=True)
class ConstantChunkCritic(ConstantCritic):
    """A stand-in critic of chunks of 3 actions, declared as QC declares one (no one-step Q
    for OPE or steering): Q = the seed's c + the sum of the chunk's actions (+ member index);
    the policy acts the zero chunk."""

    has_critic = False
    critic_chunk = 3
    action_chunk = 3

    def q_values(self, state, obs, actions):
        assert actions.shape == (obs.shape[0], 3)  # flattened (3 steps × 1 action)
        return super().q_values(state, obs, actions) + actions.sum(axis=1)

    def act(self, state, obs, key, deterministic=True):
        return jnp.zeros((obs.shape[0], 3, 1))


def test_a_chunk_critic_is_read_at_the_datas_chunks_by_hand():
    """Row t's chunk is rows t..t+2: Q = c + 0.5 + Σ actions; its target sums the rewards up to
    an episode's end (γ^k), bootstraps with γ^K·(1 − terminal) at the window's end; rows
    whose window a truncation or the data's end cuts are left out, a terminal end counts."""
    data = synthetic_dataset(n=60, episode_len=20)  # episodes 0 and 2 truncated, 1 terminal
    normalizer = Normalizer.identity(data.obs_shape, data.action_dim)
    c, gamma = 1.0, 0.9
    result = value_diagnostics(ConstantChunkCritic(), jnp.array([c]), normalizer, data, None)
    q, td, counted = [], [], []
    for t in range(len(data)):
        window = list(range(t, min(t + 3, len(data))))
        acts = data.actions[[min(r, len(data) - 1) for r in range(t, t + 3)], 0]
        taken = []
        for r in window:
            taken.append(r)
            if data.dones[r]:
                break
        total = sum(gamma**k * data.rewards[r] for k, r in enumerate(taken))
        last = taken[-1]
        mask = gamma ** (len(taken) - 1) * (1.0 - data.terminals[last])
        q.append(c + 0.5 + acts.sum())
        td.append(total + gamma * mask * (c + 0.5) - q[-1])
        counted.append(len(taken) == 3 or bool(data.terminals[last]))
    q, td, counted = np.array(q), np.array(td), np.array(counted)
    # (the reference's own rows: the last two of each truncated episode cut, a terminal end kept)
    assert counted.sum() == 60 - 2 - 2 and not counted[18] and counted[38] and counted[39]
    returns = data.returns_to_go(gamma)[counted]
    assert result["chunk_length"] == 3
    assert result["mc_return_mean"] == pytest.approx(returns.mean(), rel=1e-6)
    np.testing.assert_allclose(result["q_mean"], [q[counted].mean()], rtol=1e-5)
    np.testing.assert_allclose(result["bias"], [(q[counted] - returns).mean()], rtol=1e-5)
    rms = np.sqrt((td[counted] ** 2).mean())
    np.testing.assert_allclose(result["td_error_train"], [rms], rtol=1e-5)


def test_data_without_a_whole_chunk_gives_no_numbers_rather_than_nan():
    """Episodes shorter than the chunk, cut by truncations: no row's chunk is whole, so there
    is nothing to read the critic at (None, written as JSON null), on either split."""
    data = synthetic_dataset(n=2, episode_len=2)  # one truncated episode of 2 rows
    normalizer = Normalizer.identity(data.obs_shape, data.action_dim)
    result = value_diagnostics(ConstantChunkCritic(), jnp.array([1.0]), normalizer, data, data)
    for key in ("q_mean", "mc_return_mean", "bias", "td_error_train", "td_error_heldout"):
        assert result[key] is None, key
    assert "NaN" not in json.dumps(result)


def test_an_agent_whose_policy_acts_other_chunks_than_its_critic_scores_is_refused():
    agent = DQC(horizon=4, action_horizon=2)
    data = synthetic_dataset(n=40, episode_len=20)
    normalizer = Normalizer.identity(data.obs_shape, data.action_dim)
    with pytest.raises(ValorlError, match="chunks of 4 actions and its policy acts 2"):
        value_diagnostics(agent, None, normalizer, data, None)


def test_the_on_policy_check_by_hand():
    """Each seed is read on its own episodes (seed 0: 2 of 20 rows, seed 1: 2 of 30): Q ≡ c +
    0.5 in reward units, against the returns-to-go of its own rows; the episode return is the
    mean undiscounted sum; the TD error r + γ·m·Q − Q row by row."""
    played = [synthetic_dataset(n=40, episode_len=20), synthetic_dataset(n=60, episode_len=30)]
    played[1] = dataclasses.replace(played[1], rewards=played[1].rewards + 1.0)
    normalizer = Normalizer.identity(played[0].obs_shape, played[0].action_dim)
    result = diagnostics.policy_value_check(
        ConstantCritic(), jnp.array([2.0, -1.0]), normalizer, played
    )
    assert result["episodes"] == 2
    for i, (q, data) in enumerate(zip([2.5, -0.5], played, strict=True)):
        to_go = data.returns_to_go(0.9)
        assert result["return"][i] == pytest.approx(data.rewards.sum() / 2, rel=1e-6)
        assert result["q_mean"][i] == pytest.approx(q)
        assert result["return_to_go_mean"][i] == pytest.approx(to_go.mean(), rel=1e-6)
        assert result["bias"][i] == pytest.approx(q - to_go.mean(), rel=1e-5)
        td = data.rewards + 0.9 * data.masks * q - q
        assert result["td_error"][i] == pytest.approx(np.sqrt((td**2).mean()), rel=1e-5)


def test_the_on_policy_check_reads_a_chunk_critic_at_the_whole_chunks_of_the_actions_taken():
    """Q = c + 0.5 + the 3 actions from each row (the data's last row repeated past its end)
    at every row whose chunk is whole: the first episode's truncation cuts its last two rows'
    chunks, the second's termination cuts none. Against those rows' returns-to-go."""
    played = [synthetic_dataset(n=40, episode_len=20)]  # truncated, then terminal
    normalizer = Normalizer.identity(played[0].obs_shape, played[0].action_dim)
    result = diagnostics.policy_value_check(
        ConstantChunkCritic(), jnp.array([1.0]), normalizer, played
    )
    whole = np.array([t >= 20 or t < 18 for t in range(40)])
    actions = played[0].actions[np.minimum(np.arange(42), 39), 0]
    q = np.array([1.5 + actions[t : t + 3].sum() for t in range(40)])[whole]
    to_go = played[0].returns_to_go(0.9)[whole]
    assert result["q_mean"][0] == pytest.approx(q.mean(), rel=1e-5)
    assert result["return_to_go_mean"][0] == pytest.approx(to_go.mean(), rel=1e-6)
    assert result["bias"][0] == pytest.approx((q - to_go).mean(), rel=1e-5)
    short = [synthetic_dataset(n=2, episode_len=2)]  # no whole chunk: nothing to read
    empty = diagnostics.policy_value_check(
        ConstantChunkCritic(), jnp.array([1.0]), normalizer, short
    )
    assert empty["q_mean"] == [None] and empty["bias"] == [None] and empty["return"][0] is not None


def test_the_on_policy_table_prints_a_dash_where_no_chunk_was_whole(capsys):
    from valorl.cli.diagnose import _print_on_policy

    checked = {"episodes": 1, "env": "E-v0", "return": [-3.0]}
    checked |= {key: [None] for key in ("q_mean", "return_to_go_mean", "bias", "td_error")}
    _print_on_policy([0], checked)
    assert "-3.0" in capsys.readouterr().out


def test_a_chunk_policy_plays_each_chunk_open_loop_with_fresh_noise(pendulum_dataset, tmp_path):
    """QC over chunks of 3: the episode's actions are the chunks its policy chose at steps 0,
    3, 6, … (each with its own noise key), and the chunks differ from one decision to the
    next even at the same state (fresh flow noise)."""
    import jax.random as jr

    from valorl.collection.on_policy import play

    run = valorl.train(
        "qc", pendulum_dataset, steps=10, seeds=1, eval_episodes=0, out=tmp_path / "qc",
        progress=False, **(TINY["qc"] | {"horizon": 3}),
    )  # fmt: skip
    policy = valorl.load_policy(run.path)
    episode = play(policy, 0, 1, seed=4)
    episode_key = jr.fold_in(jr.key(4), 0)
    for decision in range(3):
        chunk = policy(episode.observations[3 * decision], 0, jr.fold_in(episode_key, decision))
        np.testing.assert_allclose(
            episode.actions[3 * decision : 3 * decision + 3], chunk, rtol=1e-5, atol=1e-6
        )
    state = episode.observations[0]
    first, second = (policy(state, 0, jr.fold_in(episode_key, d)) for d in (0, 1))
    assert not np.allclose(first, second)


def test_played_rewards_are_the_sparse_ones_a_sparse_ogbench_dataset_trained_on(
    pendulum_dataset, tmp_path
):
    """A run on an OGBench sparse single-task dataset is read against the rewards it trained
    on (0 where the task is solved, −1 elsewhere), not the environment's dense ones: here a
    Pendulum run whose data claims such a name, so every (negative) reward becomes −1."""
    from valorl.collection.on_policy import play

    run = train_tiny_run(pendulum_dataset, tmp_path / "run", agent="iql", seeds=1)
    policy = valorl.load_policy(run.path)
    name = "puzzle-3x3-play-singletask-task4-sparse-v0"
    sparse = dataclasses.replace(policy, info=dataclasses.replace(policy.info, name=name))
    dense, relabelled = play(policy, 0, 1), play(sparse, 0, 1)
    np.testing.assert_array_equal(relabelled.observations, dense.observations)
    np.testing.assert_array_equal(relabelled.rewards, np.where(dense.rewards < 0, -1.0, 0.0))


def test_diagnose_plays_each_seeds_policy_and_reads_its_critic_there(capsys, pendulum_dataset):
    """`valorl diagnose --episodes 2`: each seed's greedy policy plays two Pendulum episodes
    from the same starts; the numbers are its critic's on those very state-actions (replayed
    here with `play` and read with `value_diagnostics`), written to diagnostics.json and
    printed as a table; no episodes is refused before anything is played."""
    from valorl.collection.on_policy import play

    data = pendulum_dataset
    train_tiny_run(data, "iql-run", agent="iql")
    save_npz(data, "data.npz")
    assert main(["diagnose", "iql-run", "--dataset", "data.npz", "--episodes", "2"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "on its own episodes (2 per seed in Pendulum-v1)" in printed
    checked = json.loads(Path("iql-run/diagnostics.json").read_text())["on_policy"]
    assert checked["episodes"] == 2 and checked["env"] == "Pendulum-v1"
    assert all(len(checked[key]) == 2 for key in ("return", "q_mean", "bias", "td_error"))
    policy, i = valorl.load_policy("iql-run"), 1  # the second seed's, replayed
    episodes = play(policy, i, 2)
    assert len(episodes) == 400 and len(episodes.episode_slices()) == 2
    greedy = policy(episodes.observations[:50], i)
    np.testing.assert_allclose(episodes.actions[:50], greedy, rtol=1e-5, atol=1e-6)
    seed_state = jax.tree.map(lambda x: x[i : i + 1], policy.states)
    alone = value_diagnostics(policy.agent, seed_state, policy.normalizer, episodes, None)
    assert checked["q_mean"][i] == pytest.approx(alone["q_mean"][0], rel=1e-5)
    assert checked["return_to_go_mean"][i] == pytest.approx(alone["mc_return_mean"])
    assert checked["return"][i] == pytest.approx(episodes.rewards.sum() / 2, rel=1e-5)
    assert main(["diagnose", "iql-run", "--env", "Pendulum-v1"]) == 2
    assert "--episodes must be at least 1, got 0" in capsys.readouterr().err


def test_a_run_trained_online_is_read_on_its_own_episodes_only(capsys, tmp_path):
    """No dataset to read it on: without --episodes the run is refused with the way out; with
    them, diagnostics.json holds the on-policy check alone, which the report accepts."""
    from valorl.report.gather import load_diagnostics
    from valorl.report.html import _diagnostics
    from valorl.training.online import train_online

    run = tmp_path / "online"
    settings = dict(mode="online", env="Pendulum-v1", online_steps=200, start_steps=100)
    settings |= dict(eval_every=200, eval_episodes=1, seeds=2, progress=False)
    train_online("sac", out=run, **(settings | TINY["sac"]))
    assert main(["diagnose", str(run)]) == 2
    assert (
        "trained online, with no dataset to read its critic on: play episodes with --episodes N"
        in (capsys.readouterr().err)
    )
    assert main(["diagnose", str(run), "--episodes", "1"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "on its own episodes (1 per seed in Pendulum-v1)" in printed
    assert "Monte-Carlo return" not in printed
    written, error = load_diagnostics(run)
    assert error is None and set(written) == {"step", "seeds", "discount", "on_policy"}
    assert len(written["on_policy"]["bias"]) == 2
    report = {"path": str(run), "algorithm": "sac", "task": "Pendulum-v1", **written}
    html = _diagnostics({"diagnostics": [report], "without_diagnostics": []})
    assert "trained online, no dataset" in html and "own episodes (1 per seed" in html
    assert "TD error (held-out)" not in html


def test_chunking_covers_every_transition(monkeypatch):
    """A dataset longer than one device chunk (padded at the end) gives the same numbers."""
    import valorl.training.diagnostics as diagnostics

    data = synthetic_dataset(n=50, episode_len=10)
    normalizer = Normalizer.identity(data.obs_shape, data.action_dim)
    whole = value_diagnostics(ConstantCritic(), jnp.array([1.0]), normalizer, data, None)
    monkeypatch.setattr(diagnostics, "CHUNK", 16)
    diagnostics._evaluate.cache_clear()
    chunked = value_diagnostics(ConstantCritic(), jnp.array([1.0]), normalizer, data, None)
    assert_same(chunked, whole)


def test_training_with_holdout_writes_diagnostics(pendulum_dataset):
    """A critic agent trained with --holdout records the fraction, trains on the rest and
    writes diagnostics.json with a held-out TD error per seed; `valorl diagnose` recomputes the
    same numbers from the checkpoint."""
    result = valorl.train(
        "iql", pendulum_dataset, steps=20, log_every=10, eval_episodes=0, seeds=2,
        holdout=0.2, progress=False, out="run", **TINY["iql"],
    )  # fmt: skip
    config = json.loads((result.path / "config.json").read_text())
    assert config["data"]["holdout"] == 0.2
    assert config["data"]["fingerprint"] == pendulum_dataset.fingerprint()
    written = json.loads((result.path / "diagnostics.json").read_text())
    assert written["seeds"] == [0, 1] and written["step"] == 20
    assert written["heldout_episodes"] == 2 and written["train_episodes"] == 8
    assert len(written["td_error_heldout"]) == 2
    assert_same(diagnose_run(result.path, pendulum_dataset), written)


def test_a_run_on_data_derived_on_load_is_diagnosed_by_the_datas_name(
    pendulum_dataset, tmp_path, monkeypatch
):
    """Data derived when it is loaded (as OGBench's single-task variants relabel their base
    recipe's file) records the base file as its source and its own name: `valorl diagnose`
    without --dataset reads it by the name (the source alone gives other rewards)."""
    base = tmp_path / "base.npz"
    save_npz(pendulum_dataset, base)
    derived = dataclasses.replace(
        pendulum_dataset,
        rewards=pendulum_dataset.rewards + 1.0,
        info=dataclasses.replace(pendulum_dataset.info, name="relabelled-v0", source=str(base)),
    )
    resolvers = [lambda name: derived if name == "relabelled-v0" else None]
    monkeypatch.setattr(sources, "_RESOLVERS", resolvers)
    run = train_tiny_run(derived, tmp_path / "run", agent="iql", seeds=1)
    written = json.loads((run.path / "diagnostics.json").read_text())
    assert_same(diagnose_run(run.path), written)
    # the per-row reading behind it, found the same way: its means are the diagnostics'
    read = diagnostics.q_on_training_data(run.path)
    assert read.data is derived and read.step == written["step"] and read.counted.all()
    assert read.q.shape == (1, len(derived))
    np.testing.assert_allclose(read.q.mean(axis=1), written["q_mean"], rtol=1e-5)
    np.testing.assert_allclose(read.returns, derived.returns_to_go(written["discount"]))
    np.testing.assert_allclose(read.returns.mean(), written["mc_return_mean"], rtol=1e-5)
    monkeypatch.setattr(sources, "_RESOLVERS", [])  # the name no longer loads
    with pytest.raises(ValorlError, match="is not the data"):
        diagnose_run(run.path)


def assert_same(a: dict, b: dict) -> None:
    """Equal diagnostics up to float32 rounding."""
    assert a.keys() == b.keys()
    for key in a:
        if a[key] is None or isinstance(a[key], int):
            assert a[key] == b[key], key
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


def test_diagnose_cli_and_its_errors(capsys, pendulum_dataset):
    """`valorl diagnose --json` prints the diagnostics; BC has no critic, and data that is not
    the run's own is refused, each with one line and exit code 2."""
    data = pendulum_dataset
    train_tiny_run(data, "iql-run", agent="iql")
    train_tiny_run(data, "bc-run", agent="bc")
    path = "data.npz"
    save_npz(data, path)
    assert main(["diagnose", "iql-run", "--dataset", path, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["seeds"] == [0, 1] and printed["td_error_heldout"] is None
    assert main(["diagnose", "iql-run", "--dataset", path]) == 0
    assert "has diverged" not in capsys.readouterr().out  # a tiny IQL run's critic is near 0
    assert main(["diagnose", "bc-run", "--dataset", path]) == 2
    assert "bc has no critic: value diagnostics need a Q-function" in capsys.readouterr().err
    save_npz(synthetic_dataset(n=100, episode_len=20), "other.npz")
    assert main(["diagnose", "iql-run", "--dataset", "other.npz"]) == 2
    assert "is not the data iql-run trained on" in capsys.readouterr().err
