"""Discrete actions through the data, training, evaluation and host-loop layers: a CartPole
dataset written by Minari's own DataCollector loads with integer actions and trains a tiny
discrete agent (tests/discrete_agent.py) that is then evaluated in CartPole-v1; bad discrete
input is refused with one line naming the dataset; the flat-array cache keeps uint8
observations and the action count; the host-stepped online loop stores integer actions and
resumes as the continuous one does."""

from __future__ import annotations

import json

import gymnasium as gym
import jax.numpy as jnp
import minari
import numpy as np
import pytest
from conftest import interrupt_on_call, synthetic_dataset
from discrete_agent import NAME, TinyDiscrete, collect_cartpole, registered

import valorl
from valorl.cli.main import main
from valorl.data.cache import CACHE_FILE
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.sources import load_dataset, save_minari, save_npz
from valorl.data.transforms import fit_normalizer
from valorl.envs.rollouts import Evaluator
from valorl.errors import ValorlError
from valorl.eval.evaluate import evaluate_run
from valorl.training.online import train_online
from valorl.training.restore import load_progress
from valorl.training.run_dir import RunDir
from valorl.training.sources import dataset_rows

DATASET_ID = "valorl/cartpole-random-v0"


@pytest.fixture
def discrete_agent(monkeypatch) -> TinyDiscrete:
    return registered(monkeypatch)


@pytest.fixture
def cartpole():
    return collect_cartpole(DATASET_ID)


def test_minari_discrete_dataset_loads_with_integer_actions(cartpole):
    data = load_dataset(DATASET_ID)
    assert data.num_actions == 2 and data.discrete and data.action_dim == 0
    assert data.actions.dtype == np.int32 and data.actions.shape == (len(data),)
    np.testing.assert_array_equal(data.actions, np.concatenate(cartpole))
    assert data.info.env_id == "CartPole-v1"
    assert data.dones.sum() == len(cartpole)
    # the second load comes from the flat-array cache, with the same action space
    again = load_dataset(DATASET_ID)
    assert again.num_actions == 2 and again.fingerprint() == data.fingerprint()


def test_trains_and_evaluates_a_discrete_agent_in_cartpole(cartpole, discrete_agent, tmp_path):
    out = tmp_path / "run"
    result = valorl.train(
        discrete_agent,
        DATASET_ID,
        steps=40,
        log_every=20,
        eval_every=40,
        eval_episodes=2,
        seeds=2,
        progress=False,
        out=out,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["spec"] == {"obs_shape": [4], "action_dim": 0, "num_actions": 2}
    assert result.returns.shape == (2, 1, 2)
    assert (result.returns >= 1).all()  # CartPole pays 1 per step survived
    # the policy acts with integers, and `valorl eval` re-runs it in CartPole-v1
    policy = valorl.load_policy(out)
    actions = policy(np.zeros((5, 4), np.float32))
    assert actions.dtype == np.int32 and actions.shape == (5,) and set(actions) <= {0, 1}
    evaluation = evaluate_run(out, episodes=2)
    assert evaluation.returns.shape == (2, 2) and (evaluation.returns >= 1).all()
    with pytest.raises(ValorlError, match="acts with discrete actions, but the environment has"):
        evaluate_run(out, episodes=1, env="Pendulum-v1")


def test_agent_and_data_must_agree_on_discreteness(cartpole, discrete_agent):
    with pytest.raises(ValorlError, match=r"^bc acts in a continuous action space but dataset"):
        valorl.train("bc", DATASET_ID, steps=2, eval_episodes=0, progress=False)
    continuous = synthetic_dataset(40)
    with pytest.raises(ValorlError, match=rf"^{NAME} acts in a discrete action space but dataset"):
        valorl.train(discrete_agent, continuous, steps=2, eval_episodes=0, progress=False)
    with pytest.raises(ValorlError, match=rf"^{NAME} acts in a discrete .* Pendulum-v1 has cont"):
        train_online(discrete_agent, env="Pendulum-v1", online_steps=2, progress=False)
    with pytest.raises(ValorlError, match=r"^sac acts in a continuous .* CartPole-v1 has discrete"):
        train_online("sac", env="CartPole-v1", online_steps=2, progress=False)


# ---- bad discrete input ---------------------------------------------------------------------


def write_minari(path, actions, action_space) -> None:
    """One 3-step episode with the given actions under `action_space`, straight into Minari's
    storage (as another tool could have written it)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path.mkdir()
    storage = MinariStorage.new(
        path / "data",
        observation_space=gym.spaces.Box(-1, 1, (2,), np.float32),
        action_space=action_space,
        data_format="hdf5",
    )
    storage.update_metadata({"dataset_id": "valorl/bad-v0", "minari_version": minari.__version__})
    storage.update_episodes(
        [
            EpisodeBuffer(
                observations=np.zeros((4, 2), np.float32),
                actions=np.asarray(actions),
                rewards=np.ones(3),
                terminations=np.array([False, False, True]),
                truncations=np.zeros(3, bool),
            )
        ]
    )


def test_a_minari_file_with_actions_out_of_range_is_refused(tmp_path):
    write_minari(tmp_path / "bad", np.array([0, 1, 3]), gym.spaces.Discrete(2))
    with pytest.raises(ValorlError) as error:
        load_dataset(tmp_path / "bad")
    message = str(error.value)
    assert "\n" not in message and "valorl/bad-v0" in message
    assert "actions[2] = 3 is outside the action space Discrete(2)" in message


def test_a_minari_file_with_float_actions_under_a_discrete_space_is_refused(tmp_path):
    write_minari(tmp_path / "bad", np.array([0.0, 1.0, 0.5]), gym.spaces.Discrete(2))
    with pytest.raises(ValorlError) as error:
        load_dataset(tmp_path / "bad")
    message = str(error.value)
    assert "\n" not in message and "valorl/bad-v0" in message
    assert "float" in message and "discrete actions must be integers" in message


def test_unsupported_action_spaces_are_refused(tmp_path):
    write_minari(tmp_path / "multi", np.zeros((3, 2), np.int64), gym.spaces.MultiDiscrete([2, 2]))
    with pytest.raises(ValorlError, match=r"MultiDiscrete.*not supported"):
        load_dataset(tmp_path / "multi")


# ---- writing, the cache, compact observations ----------------------------------------------


def frames_dataset(n: int = 30, num_actions: int = 3) -> Dataset:
    """MinAtar-like data: boolean 4x4x2 frames, integer actions, episodes of 10 steps."""
    rng = np.random.default_rng(0)
    frames = rng.random((n + 1, 4, 4, 2)) < 0.3
    ends = (np.arange(n) % 10) == 9
    obs = frames[:-1]
    next_obs = frames[1:].copy()
    return Dataset(
        observations=obs,
        actions=rng.integers(0, num_actions, n),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=next_obs,
        terminals=ends,
        timeouts=np.zeros(n, bool),
        info=DatasetInfo(name="frames"),
        num_actions=num_actions,
    )


def test_minari_round_trip_and_cache_keep_uint8_frames_and_the_action_count(tmp_path):
    data = frames_dataset()
    assert data.observations.dtype == np.uint8
    path = save_minari(data, "valorl/frames-v0", tmp_path / "frames")
    written = minari.MinariDataset(path / "data")
    assert written.action_space == gym.spaces.Discrete(3)
    assert written.observation_space.dtype == np.uint8
    first = load_dataset(path)
    assert (path / CACHE_FILE).is_file()
    with np.load(path / CACHE_FILE) as cache:
        assert int(cache["num_actions"]) == 3 and cache["observations"].dtype == np.uint8
    cached = load_dataset(path)
    for loaded in (first, cached):
        assert loaded.num_actions == 3 and loaded.observations.dtype == np.uint8
        assert loaded.actions.dtype == np.int32
        for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))
    # `valorl datasets info` shows the action space
    assert main(["datasets", "info", str(path)]) == 0


def test_a_cache_that_records_another_action_count_is_rebuilt(tmp_path):
    path = save_minari(frames_dataset(), "valorl/frames-v0", tmp_path / "frames")
    load_dataset(path)
    with np.load(path / CACHE_FILE) as cache:
        arrays = dict(cache)
    arrays["num_actions"] = np.int64(5)
    with open(path / CACHE_FILE, "wb") as f:
        np.savez(f, **arrays)
    with pytest.warns(RuntimeWarning, match="damaged dataset cache"):
        data = load_dataset(path)
    assert data.num_actions == 3
    with np.load(path / CACHE_FILE) as cache:
        assert int(cache["num_actions"]) == 3


def test_npz_round_trip_keeps_the_action_count(tmp_path):
    data = frames_dataset()
    loaded = load_dataset(save_npz(data, tmp_path / "frames.npz"))
    assert loaded.num_actions == 3 and loaded.observations.dtype == np.uint8
    np.testing.assert_array_equal(loaded.actions, data.actions)


def test_dataset_rows_keep_uint8_frames_unless_the_agent_standardises_them():
    data = frames_dataset()
    agent = TinyDiscrete()
    normalizer = fit_normalizer(data, normalize_observations=False, reward_normalization="none")
    assert normalizer.discrete
    rows = dataset_rows(agent, data, normalizer)
    assert rows.observations.dtype == jnp.uint8 and rows.next_observations.dtype == jnp.uint8
    assert rows.actions.dtype == jnp.int32
    standardised = fit_normalizer(data, normalize_observations=True, reward_normalization="none")
    agent = TinyDiscrete(normalize_observations=True)
    assert dataset_rows(agent, data, standardised).observations.dtype == jnp.float32


def test_evaluator_passes_integer_actions_to_a_discrete_environment():
    with Evaluator(lambda: gym.make("CartPole-v1"), num_policies=2, episodes=1) as evaluator:
        returns = evaluator.returns(
            lambda obs: np.ones(obs.shape[:2], np.int32), [[0], [1]]
        )  # always push right: the pole falls within a few dozen steps
    assert returns.shape == (2, 1) and (returns > 0).all() and (returns < 100).all()


# ---- the host-stepped online loop ------------------------------------------------------------

ONLINE = dict(
    mode="online",
    env="CartPole-v1",
    online_steps=120,
    start_steps=40,
    log_every=40,
    eval_every=120,
    checkpoint_every=40,
    eval_episodes=1,
    seeds=2,
    progress=False,
)


def buffer_rows(ckpt, seed: int = 0) -> dict[str, np.ndarray]:
    size = int(ckpt.online.buffers.size[seed])
    return {
        name: np.asarray(value[seed, :size])
        for name, value in vars(ckpt.online.buffers.data).items()
        if value is not None
    }


def test_online_host_loop_on_cartpole_stores_integer_actions(discrete_agent, tmp_path):
    out = tmp_path / "run"
    result = train_online(discrete_agent, out=out, **ONLINE)
    assert result.returns.shape == (2, 1, 1)
    ckpt = load_progress(out)
    np.testing.assert_array_equal(ckpt.online.buffers.size, [120, 120])
    rows = buffer_rows(ckpt)
    assert rows["actions"].dtype == np.int32 and rows["actions"].shape == (120,)
    assert set(np.unique(rows["actions"])) == {0, 1}
    # the 40 warm-up actions are uniform draws: both actions appear, about equally often
    assert 10 < rows["actions"][:40].sum() < 30
    # the seeds explore differently
    assert not np.array_equal(rows["actions"], buffer_rows(ckpt, 1)["actions"])
    # 80 updates after the warm-up, one per environment step
    np.testing.assert_array_equal(ckpt.states.actor.step, [80, 80])
    # CartPole terminates when the pole falls: stored with mask 0
    assert (rows["masks"] == 0).any() and (rows["masks"] == 1 - rows["dones"]).all()


def test_online_discrete_resume_matches_the_uninterrupted_run(
    discrete_agent, tmp_path, monkeypatch
):
    """Interrupted at its third checkpoint, the run resumes from step 80 with its buffer; the
    rows stored before the interruption are those of an uninterrupted run."""
    reference = tmp_path / "reference"
    train_online(discrete_agent, out=reference, **ONLINE)
    path = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, RunDir, "write_checkpoint", 3)
        with pytest.raises(KeyboardInterrupt):
            train_online(discrete_agent, out=path, **ONLINE)
    saved = load_progress(path)
    assert saved.online.env_step == 80
    train_online(discrete_agent, out=path, **ONLINE)
    assert [r["step"] for r in RunDir(path).metrics()] == [40, 80, 120]
    resumed, uninterrupted = load_progress(path), load_progress(reference)
    np.testing.assert_array_equal(resumed.states.actor.step, [80, 80])
    for name, value in buffer_rows(saved).items():
        np.testing.assert_array_equal(buffer_rows(resumed)[name][:80], value, err_msg=name)
        np.testing.assert_array_equal(buffer_rows(uninterrupted)[name][:80], value, err_msg=name)


def test_hybrid_mode_mixes_a_discrete_dataset_with_replay(cartpole, discrete_agent, tmp_path):
    out = tmp_path / "run"
    settings = ONLINE | dict(mode="hybrid", online_steps=40, start_steps=0, log_every=40)
    train_online(discrete_agent, DATASET_ID, out=out, **(settings | dict(eval_every=40)))
    ckpt = load_progress(out)
    np.testing.assert_array_equal(ckpt.states.actor.step, [40, 40])
    assert buffer_rows(ckpt)["actions"].dtype == np.int32


def test_cli_trains_a_discrete_agent_online_on_cartpole(discrete_agent, tmp_path):
    out = tmp_path / "run"
    args = ["train", NAME, "--mode", "online", "--env", "CartPole-v1", "--online-steps", "40"]
    args += ["--start-steps", "20", "--log-every", "20", "--eval-every", "40"]
    args += ["--eval-episodes", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["spec"]["num_actions"] == 2
    assert main(["eval", str(out), "--episodes", "1"]) == 0


# ---- corruption -------------------------------------------------------------------------------


def test_corruption_of_discrete_data(cartpole):
    from valorl.corruption import corrupt

    data = load_dataset(DATASET_ID)
    corrupted = corrupt(data, "rewards", rate=0.5, seed=0).dataset
    assert corrupted.num_actions == 2
    np.testing.assert_array_equal(corrupted.actions, data.actions)
    assert (corrupted.rewards != data.rewards).sum() == round(0.5 * len(data))
    with pytest.raises(ValorlError, match=r"^--kind actions perturbs continuous actions.*Discr"):
        corrupt(data, "actions")
    with pytest.raises(ValorlError, match=r"^--kind obs perturbs continuous observations"):
        corrupt(frames_dataset(), "obs")


# ---- collection -------------------------------------------------------------------------------


def test_collect_in_a_discrete_space_stores_epsilon_greedy_log_probs(
    cartpole, discrete_agent, tmp_path
):
    """`valorl collect` on CartPole: uniform integers (log 1/2) and ε-greedy around a run's
    greedy action (ε = 0.2: log 0.9 for the greedy action, log 0.1 for the other), stored with
    the Minari dataset, which loads with num_actions = 2."""
    from valorl.collection import LOG_PROB_KEY, collect
    from valorl.ope.behaviour import stored_log_probs

    run = tmp_path / "run"
    valorl.train(discrete_agent, DATASET_ID, steps=20, log_every=20, eval_every=20,
                 eval_episodes=0, progress=False, out=run)  # fmt: skip
    data = collect(
        "CartPole-v1",
        ["random", f"{run}:noise=0.2"],
        100,
        dataset_id="valorl/cartpole-mixed-v0",
        reference_episodes=1,
        progress=False,
    )
    assert data.num_actions == 2 and data.actions.dtype == np.int32
    log_probs = stored_log_probs(load_dataset("valorl/cartpole-mixed-v0"))
    assert log_probs is not None and len(log_probs) == 100
    np.testing.assert_allclose(log_probs[:50], np.log(0.5))
    greedy = valorl.load_policy(run)(data.observations[50:])
    expected = np.where(data.actions[50:] == greedy, np.log(0.9), np.log(0.1))
    np.testing.assert_allclose(log_probs[50:], expected)
    assert LOG_PROB_KEY == "behaviour_log_prob"
    with pytest.raises(ValorlError, match="noise= is epsilon of epsilon-greedy"):
        collect("CartPole-v1", [f"{run}:noise=2"], 10, progress=False)
    with pytest.raises(ValorlError, match="cannot act in CartPole-v1's Discrete"):
        collect("CartPole-v1", ["pendulum-swingup"], 10, progress=False)


class TinyCritic(TinyDiscrete):
    """TinyDiscrete read as a critic: Q(s, a) = its logit of a (one ensemble member)."""

    def q_values(self, state, obs, actions):
        logits = self.logits(state, obs)
        return jnp.take_along_axis(logits, actions[:, None], axis=-1)[:, 0][None]


def test_adversarial_observation_attack_on_a_discrete_critic(cartpole):
    """Q is linear in s, so projected sign steps of half the box reach the corner of the box
    that minimises Q(ŝ, a) at the logged (integer) action: never above the clean Q."""
    import jax

    from valorl.agents.base import Spec
    from valorl.corruption import Attack, corrupt

    data = load_dataset(DATASET_ID)
    agent = TinyCritic()
    state = agent.init(jax.random.key(0), Spec((4,), 0, num_actions=2))
    normalizer = fit_normalizer(data, normalize_observations=False, reward_normalization="none")
    attack = Attack(agent=agent, state=state, normalizer=normalizer)
    result = corrupt(
        data, "obs", "adversarial", rate=0.2, attack=attack, attack_steps=5, attack_step_size=0.5
    )
    new = result.dataset
    assert new.num_actions == 2
    np.testing.assert_array_equal(new.actions, data.actions)
    rows = np.flatnonzero((new.observations != data.observations).any(axis=1))
    assert len(rows) == round(0.2 * len(data))
    q = lambda obs: np.asarray(agent.q_values(state, jnp.asarray(obs), data.actions[rows]))[0]
    assert (q(new.observations[rows]) <= q(data.observations[rows]) + 1e-5).all()


def test_a_discrete_run_of_another_network_does_not_export_to_a_policy_file(
    cartpole, discrete_agent, tmp_path
):
    from valorl.collection import export_policy

    run = tmp_path / "run"
    valorl.train(discrete_agent, DATASET_ID, steps=20, log_every=20, eval_every=20,
                 eval_episodes=0, progress=False, out=run)  # fmt: skip
    with pytest.raises(ValorlError, match="only such policies export to a policy file"):
        export_policy(run)
