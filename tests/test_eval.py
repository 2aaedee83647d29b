"""Evaluation: confidence intervals, lockstep rollouts, episode seeds, re-evaluating runs and
loading trained policies."""

from __future__ import annotations

import json
import math
import shutil

import gymnasium as gym
import jax
import numpy as np
import pytest
from conftest import train_tiny_run

import valorl
from valorl.envs.rollouts import Evaluator, episode_seeds
from valorl.errors import ValorlError
from valorl.eval.evaluate import FRESH_ROUNDS, evaluate_run
from valorl.stats import mean_interval
from valorl.training.evaluation import fresh_noise

T_975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
"""Student-t quantile t_{0.975} with 2 degrees of freedom, from its closed form for df = 2,
t_p = (2p − 1) / √(2p(1 − p)): 4.3026527297…"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pendulum_dataset):
    """A tiny BC run with two seeds on real Pendulum data, trained once for this module."""
    out = tmp_path_factory.mktemp("eval-run") / "r"
    train_tiny_run(pendulum_dataset, out)
    return out


def manual_returns(env_id: str, actions: list[np.ndarray], seeds: list[list[int]]) -> np.ndarray:
    """Returns of constant-action episodes, one plain gymnasium loop each."""
    out = np.zeros((len(actions), len(seeds[0])))
    env = gym.make(env_id)
    for p, action in enumerate(actions):
        for e, s in enumerate(seeds[p]):
            env.reset(seed=s)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(action)
                total += reward
                done = terminated or truncated
            out[p, e] = total
    env.close()
    return out


# ---- mean_interval ------------------------------------------------------------------------------


def test_mean_interval_hand_computed():
    """[1, 2, 3] has mean 2 and sample std 1, so the 95% interval is 2 ± t_{.975,2}/√3."""
    mean, low, high = mean_interval([1, 2, 3])
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert mean == 2.0
    assert abs(T_975_DF2 - 4.302652729911275) < 1e-9  # the value printed in t tables
    assert low == pytest.approx(2 - half, rel=1e-12)
    assert high == pytest.approx(2 + half, rel=1e-12)


def test_mean_interval_one_value_is_nan():
    """A single seed has no spread: the mean comes back and both bounds are NaN."""
    mean, low, high = mean_interval([5.5])
    assert mean == 5.5
    assert math.isnan(low) and math.isnan(high)


def test_mean_interval_lower_confidence_is_narrower():
    """A 90% interval lies strictly inside the 95% one around the same mean."""
    values = [0.3, 1.7, 2.2, 4.0]
    m95, lo95, hi95 = mean_interval(values)
    m90, lo90, hi90 = mean_interval(values, confidence=0.9)
    assert m90 == m95 == pytest.approx(np.mean(values))
    assert lo95 < lo90 < m90 < hi90 < hi95


# ---- Evaluator ----------------------------------------------------------------------------------


def test_evaluator_matches_plain_gymnasium_loop():
    """Lockstep returns of two constant policies equal per-episode gymnasium loops with the same
    reset seeds, with shape (policies, episodes) and observations batched per policy."""
    constants = [np.array([0.5], np.float32), np.array([-1.5], np.float32)]
    seeds = [[11, 12], [13, 14]]
    shapes = []

    def act(obs):
        shapes.append(obs.shape)
        return np.broadcast_to(np.stack(constants)[:, None, :], (2, 2, 1))

    evaluator = Evaluator(lambda: gym.make("Pendulum-v1"), 2, 2)
    try:
        returns = evaluator.returns(act, seeds)
    finally:
        evaluator.close()
    assert returns.shape == (2, 2)
    assert set(shapes) == {(2, 2, 3)}
    assert len(shapes) == 200  # Pendulum-v1 episodes last 200 steps
    np.testing.assert_allclose(returns, manual_returns("Pendulum-v1", constants, seeds), rtol=1e-12)
    assert len(np.unique(returns)) == 4  # different seeds and actions, different returns


def test_waves_of_environments_give_the_same_returns():
    """With fewer environments than episodes the episodes run in waves (here 2 per policy at a
    time, 3 waves): the same returns, each episode on its own seed, and a short last wave."""
    seeds = [[11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]
    shapes = []

    def act(obs):
        shapes.append(obs.shape[:2])
        return np.clip(-obs[..., 1:2], -2.0, 2.0)  # a state feedback: returns differ by seed

    with (
        Evaluator(lambda: gym.make("Pendulum-v1"), 2, 5) as at_once,
        Evaluator(lambda: gym.make("Pendulum-v1"), 2, 5, max_envs=4) as waves,
    ):
        assert len(waves.envs) == 4
        expected = at_once.returns(act, seeds)
        shapes.clear()
        np.testing.assert_array_equal(waves.returns(act, seeds), expected)
    assert set(shapes) == {(2, 2), (2, 1)}
    assert len(np.unique(expected)) == 10


class TaskEcho(gym.Env):
    """One step, paying the task its reset options named."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.task = options["task_id"]
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), float(self.task), True, False, {}


def test_reset_options_follow_each_policys_episode_index():
    from valorl.envs.goal_tasks import task_options

    zeros = lambda obs: np.zeros((*obs.shape[:2], 1), np.float32)
    with Evaluator(TaskEcho, 2, 7, max_envs=6, reset_options=task_options) as evaluator:
        returns = evaluator.returns(zeros, [list(range(7)), list(range(7, 14))])
    np.testing.assert_array_equal(returns, [[1, 2, 3, 4, 5, 1, 2]] * 2)


def test_evaluator_counts_each_episode_once_when_lengths_differ():
    """Episodes that terminate at different steps stop accumulating reward at their own end
    (InvertedPendulum pays 1 per step, so a return is an episode length)."""
    zero = np.zeros(1, np.float32)
    seeds = [[0, 1, 2], [3, 4, 5]]
    evaluator = Evaluator(lambda: gym.make("InvertedPendulum-v5"), 2, 3)
    try:
        returns = evaluator.returns(lambda obs: np.zeros((*obs.shape[:2], 1), np.float32), seeds)
    finally:
        evaluator.close()
    expected = manual_returns("InvertedPendulum-v5", [zero, zero], seeds)
    assert len(np.unique(expected)) > 1, "test needs episodes of different lengths"
    np.testing.assert_array_equal(returns, expected)


def test_evaluator_executes_chunks_open_loop_and_asks_again_when_they_are_used_up():
    """A policy returning chunks of 3 actions is asked once per 3 steps (every 3rd observation),
    and the environments receive the chunk's actions in order: the same returns as a per-step
    policy playing the chunk's sequence (+1, 0, −1 repeated)."""
    sequence = np.array([1.0, 0.0, -1.0], np.float32)
    calls = []

    def chunked(obs):
        calls.append(obs.copy())
        return np.broadcast_to(sequence[None, None, :, None], (*obs.shape[:2], 3, 1))

    steps = [0]

    def per_step(obs):
        action = sequence[steps[0] % 3]
        steps[0] += 1
        return np.full((*obs.shape[:2], 1), action, np.float32)

    seeds = [[7, 8]]
    results = []
    for act in (chunked, per_step):
        with Evaluator(lambda: gym.make("Pendulum-v1"), 1, 2) as evaluator:
            results.append(evaluator.returns(act, seeds))
    assert len(calls) == 67  # ceil(200 / 3) decisions in a 200-step episode
    np.testing.assert_array_equal(results[0], results[1])


class Reach(gym.Env):
    """Walk on a line from 0: the episode ends (success) at +3, or after 5 steps without it,
    reporting `info["success"]` at every step, as OGBench's environments do."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.x += float(np.round(action[0]))
        self.t += 1
        success = self.x >= 3
        obs = np.array([self.x], np.float32)
        return obs, float(success), success, self.t >= 5 and not success, {"success": success}


def test_evaluator_records_success_at_each_episodes_end():
    """Policy 0 walks right (success after 3 steps), policy 1 walks right then left (never);
    an episode that passed through no success reports False; environments without `success`
    in their infos report None."""

    def act(obs):
        actions = np.ones((2, 2, 1), np.float32)
        actions[1, :, 0] = np.where(obs[1, :, 0] >= 2, -1.0, 1.0)  # turns back before +3
        return actions

    with Evaluator(Reach, 2, 2) as evaluator:
        returns = evaluator.returns(act, [[0, 1], [2, 3]])
        np.testing.assert_array_equal(evaluator.successes, [[True, True], [False, False]])
    np.testing.assert_array_equal(returns, [[1.0, 1.0], [0.0, 0.0]])
    with Evaluator(lambda: gym.make("Pendulum-v1"), 1, 1) as evaluator:
        evaluator.returns(lambda obs: np.zeros((1, 1, 1), np.float32), [[0]])
        assert evaluator.successes is None


def test_training_records_success_rates(tmp_path):
    """A run evaluated in an environment that reports success stores every episode's success
    in evaluations.npz and checkpoints, and per-seed success rates in result.json."""
    from conftest import TINY

    from valorl.data.dataset import Dataset
    from valorl.training.results import RunResult
    from valorl.training.run_dir import RunDir

    gym.register("ValorlTestReach-v0", entry_point=Reach, max_episode_steps=5)
    obs = np.arange(4, dtype=np.float32)[:, None]
    data = Dataset(
        observations=obs[:-1],
        actions=np.ones((3, 1)),
        rewards=np.array([0.0, 0.0, 1.0]),
        next_observations=obs[1:],
        terminals=np.array([False, False, True]),
        timeouts=np.zeros(3, bool),
    )
    result = valorl.train(
        "bc", data, env="ValorlTestReach-v0", steps=20, log_every=10, eval_every=10,
        eval_episodes=2, seeds=2, progress=False, out=tmp_path / "run", **TINY["bc"],
    )  # fmt: skip
    evals = RunDir(result.path).evaluations()
    assert evals["successes"].shape == (2, 2, 2) and evals["successes"].dtype == bool
    np.testing.assert_array_equal(evals["successes"], evals["returns"] == 1.0)
    summary = RunDir(result.path).result()
    rates = evals["successes"][:, -1].mean(axis=-1)
    assert summary["final_success_rate_per_seed"] == rates.tolist()
    np.testing.assert_array_equal(RunResult.load(result.path).final_success_rates, rates)


# ---- episode_seeds ------------------------------------------------------------------------------


def test_episode_seeds_reproducible_and_distinct():
    """Reset seeds are the same for the same (seed, round) and differ across seeds, rounds and
    the episodes of one round."""
    a = episode_seeds(0, 0, 5)
    assert a == episode_seeds(0, 0, 5)
    assert len(a) == 5 and all(isinstance(s, int) for s in a)
    assert len(set(a)) == 5
    others = [episode_seeds(1, 0, 5), episode_seeds(0, 1, 5), episode_seeds(0, FRESH_ROUNDS, 5)]
    for other in others:
        assert not set(a) & set(other)


def test_a_sampling_policy_draws_new_noise_at_every_decision():
    """A flow policy (or best-of-N) samples to act: evaluation gives it new keys at every
    decision, different per seed, and the same sequence again for the same keys."""
    keys = jax.random.split(jax.random.key(0), 2)
    noise = lambda obs, keys: jax.vmap(lambda key: jax.random.normal(key, (3,)))(keys)
    act = fresh_noise(noise, keys)
    first, second = np.asarray(act(None)), np.asarray(act(None))
    assert first.shape == (2, 3)
    assert not np.isclose(first, second).any() and not np.isclose(first[0], first[1]).any()
    again = fresh_noise(noise, keys)
    np.testing.assert_array_equal(again(None), first)
    np.testing.assert_array_equal(again(None), second)


# ---- evaluate_run -------------------------------------------------------------------------------


def test_evaluate_run_shapes_and_scores(run_dir, pendulum_dataset):
    """Returns are (seeds, episodes) and scores are 100·(R − min)/(max − min) with the dataset's
    reference returns; the step and seeds come from the run."""
    ev = evaluate_run(run_dir, episodes=3)
    assert ev.returns.shape == (2, 3)
    assert ev.step == 20
    assert ev.seeds == [0, 1]
    info = pendulum_dataset.info
    lo, hi = info.ref_min_score, info.ref_max_score
    np.testing.assert_allclose(ev.scores, 100.0 * (ev.returns - lo) / (hi - lo), rtol=1e-12)


def test_evaluate_run_matches_manual_rollout(run_dir):
    """Each seed's returns equal rolling `load_policy` out by hand on the documented fresh
    episode seeds (round FRESH_ROUNDS + seed of each training seed)."""
    ev = evaluate_run(run_dir, episodes=2, seed=3)
    policy = valorl.load_policy(run_dir)
    env = gym.make("Pendulum-v1")
    for i, s in enumerate(policy.seeds):
        for j, reset_seed in enumerate(episode_seeds(s, FRESH_ROUNDS + 3, 2)):
            obs, _ = env.reset(seed=reset_seed)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy(obs, seed_index=i))
                total += reward
                done = terminated or truncated
            assert ev.returns[i, j] == pytest.approx(total, rel=1e-4)
    env.close()


def test_evaluate_run_deterministic_per_seed(run_dir):
    """The same seed reproduces returns exactly; another seed starts other episodes."""
    a = evaluate_run(run_dir, episodes=2, seed=0)
    b = evaluate_run(run_dir, episodes=2, seed=0)
    c = evaluate_run(run_dir, episodes=2, seed=1)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert not np.any(a.returns == c.returns)


def test_evaluate_run_rejects_no_episodes(run_dir):
    """Zero episodes is a user error (ValorlError), not a numpy crash inside the rollout."""
    with pytest.raises(ValorlError, match="episodes"):
        evaluate_run(run_dir, episodes=0)


# ---- load_policy --------------------------------------------------------------------------------


def test_load_policy_shapes(run_dir, pendulum_dataset):
    """One observation gives (action_dim,), a batch gives (B, action_dim), both in the action
    bounds, and a batch row equals the single-observation action."""
    policy = valorl.load_policy(run_dir)
    obs = pendulum_dataset.observations[:5]
    single = policy(obs[0])
    batch = policy(obs)
    assert single.shape == (1,)
    assert batch.shape == (5, 1)
    np.testing.assert_allclose(batch[0], single, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(batch) <= 2.0)
    assert policy.obs_shape == (3,)
    assert policy.step == 20
    assert not np.allclose(policy(obs, seed_index=1), batch)  # each seed has its own network


def test_load_policy_stochastic_needs_key(run_dir, pendulum_dataset):
    """Asking for a stochastic action without a key is a ValorlError; with a key it works."""
    policy = valorl.load_policy(run_dir)
    obs = pendulum_dataset.observations[0]
    with pytest.raises(ValorlError, match="stochastic action needs a key"):
        policy(obs, deterministic=False)
    assert policy(obs, key=jax.random.key(1), deterministic=False).shape == (1,)


def test_load_policy_without_checkpoint(run_dir, tmp_path):
    """A run directory holding only its config (a run that never finished a chunk) has no
    policy to load; a directory without a config is not a run at all."""
    empty = tmp_path / "started"
    empty.mkdir()
    shutil.copy(run_dir / "config.json", empty / "config.json")
    assert json.loads((empty / "config.json").read_text())["agent"]["name"] == "bc"
    with pytest.raises(ValorlError, match="no checkpoint"):
        valorl.load_policy(empty)
    with pytest.raises(ValorlError, match="not a valorl run"):
        valorl.load_policy(tmp_path / "nothing")
