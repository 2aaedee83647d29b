"""Model-based training end to end: MOPO and MOBILE offline, MBPO online, resume, errors."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled_init, interrupt_on_call, synthetic_dataset

import valorl
from valorl.errors import ValorlError
from valorl.models import DynamicsModel, Rollouts
from valorl.training.restore import load_checkpoint
from valorl.training.run_dir import RunDir

MODEL = DynamicsModel(
    model_members=3, model_elites=2, model_hidden_dims=(8,), model_max_epochs=3,
    model_batch_size=32,
)  # fmt: skip
TINY = dict(hidden_dims=(8, 8), batch_size=16, model=MODEL)
OFFLINE = Rollouts(rollout_batch=16, rollout_length=3, rollout_every=5, rollout_retain=2)
ONLINE = Rollouts(
    rollout_batch=8, rollout_length=3, rollout_start_length=1, rollout_schedule=(100, 200),
    rollout_every=50, rollout_retain=2,
)  # fmt: skip


def train_offline(out, agent="mopo", **kw):
    settings = dict(steps=20, log_every=10, eval_every=20, eval_episodes=0, seeds=2)
    settings |= dict(progress=False, out=out, rollouts=OFFLINE, **TINY)
    return valorl.train(agent, synthetic_dataset(400), **(settings | kw))


def train_mbpo(out, **kw):
    settings = dict(env="Pendulum-v1", online_steps=300, start_steps=100, log_every=100)
    settings |= dict(eval_every=100, eval_episodes=0, seeds=2, progress=False, out=out)
    settings |= dict(utd=1, rollouts=ONLINE, **TINY)
    return valorl.train_online("mbpo", **(settings | kw))


MOPO_RUN = dict(robust_coef=0.1, holdout=0.25, checkpoint_every=10)
"""The settings of the module's MOPO run (and of the interrupted copy that resumes)."""


@pytest.fixture(scope="module")
def mopo_run(tmp_path_factory):
    """A MOPO run trained start to finish: 20 steps, 2 seeds, 8 synthetic episodes of which 2
    held out, checkpoints at 10 and 20."""
    path = tmp_path_factory.mktemp("mopo") / "run"
    train_offline(path, "mopo", **MOPO_RUN)
    return path


def test_an_offline_model_based_run_fits_imagines_and_logs_each_phase(mopo_run):
    lines = RunDir(mopo_run).metrics()
    assert [(r["step"], r.get("phase")) for r in lines] == [(0, "model"), (10, None), (20, None)]
    assert lines[0]["model/epochs"] == [3, 3]
    for line in lines[1:]:
        assert 0 < min(line["rollout/length"]) <= 3
        assert all(v > 0 for v in line["critic/lipschitz"] + line["critic/robust"])
        assert min(line["rollout/penalty"]) > 0  # a probabilistic model's σ lowers rewards
    ckpt = load_checkpoint(mopo_run, with_buffers=True)[1]
    # two rounds of 16 rollouts per chunk, at most 3 steps each, two rounds kept
    size = np.asarray(ckpt.model_buffers.size)
    assert ckpt.model_buffers.data.rewards.shape == (2, 96)
    assert np.all((size > 32) & (size <= 96))
    model = json.loads((mopo_run / "diagnostics.json").read_text())["model"]
    assert model["split"] == "heldout" and model["episodes"] == 2
    assert len(model["obs_mse"]) == 2 and len(model["obs_mse"][0]) == 5
    # a new run takes OfflineRL-Kit's cosine actor schedule (not the old configs' constant)
    config = json.loads((mopo_run / "config.json").read_text())
    assert config["agent"]["hyperparameters"]["actor_lr_schedule"] == "cosine"


def test_the_logged_model_fit_time_waits_for_the_fit(monkeypatch):
    """JAX returns from a compiled call before its arrays are computed: the model line's
    wall_s must count the fit itself, not only its dispatch."""
    from types import SimpleNamespace

    from valorl.training import loop

    heavy = jax.jit(lambda m: jax.lax.fori_loop(0, 200, lambda i, m: jnp.tanh(m @ m), m))
    matrix = jnp.ones((400, 400)) / 400
    heavy(matrix).block_until_ready()  # compiled before it is timed
    start = time.perf_counter()
    heavy(matrix).block_until_ready()
    seconds = time.perf_counter() - start
    fit = lambda states, keys, data: (states, {"model/check": heavy(matrix)[0, 0]})
    monkeypatch.setattr(loop, "fit_on_dataset", lambda agent, seeds: fit)
    records = []
    fake = SimpleNamespace(
        plan=SimpleNamespace(agent=None, seeds=(0,)),
        states=None,
        keys=None,
        offline=None,
        run_dir=SimpleNamespace(append_metrics=records.append),
    )
    loop.Loop.fit_models(fake)
    assert records[0]["phase"] == "model" and records[0]["wall_s"] >= 0.5 * seconds


@pytest.mark.expensive  # 28 s; the penalty by hand: test_models.py
def test_mobile_trains_on_its_penalised_targets(tmp_path):
    train_offline(tmp_path / "run", "mobile", steps=10, penalty_samples=2)
    line = RunDir(tmp_path / "run").metrics()[-1]
    assert line["step"] == 10 and np.isfinite(line["critic/loss"]).all()
    assert line["rollout/penalty"] == [0.0, 0.0]  # MOBILE penalises targets, not rewards
    assert min(line["critic/penalty"]) > 0  # members disagree about the Bellman target


def test_a_resumed_offline_model_based_run_equals_an_uninterrupted_one(
    mopo_run, tmp_path, monkeypatch
):
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, RunDir, "write_checkpoint", 2)
        with pytest.raises(KeyboardInterrupt):
            train_offline(tmp_path / "cut", "mopo", **MOPO_RUN)
    train_offline(tmp_path / "cut", "mopo", **MOPO_RUN)
    whole = load_checkpoint(mopo_run, with_buffers=True)[1]
    cut = load_checkpoint(tmp_path / "cut", with_buffers=True)[1]
    jax.tree.map(np.testing.assert_array_equal, whole.states, cut.states)
    jax.tree.map(np.testing.assert_array_equal, whole.model_buffers, cut.model_buffers)
    steps = [r["step"] for r in RunDir(tmp_path / "cut").metrics()]
    assert steps == [0, 10, 20]


@pytest.mark.expensive  # 32 s; host-loop resume: test_online.py; model buffers: offline resume
def test_a_resumed_mbpo_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """Checkpointed at step 200, the end of Pendulum's first episode, the resumed run starts
    the same next episode as the uninterrupted one, and everything else is in the checkpoint
    (models, model buffers, replay, keys): the two end identical."""
    train_mbpo(tmp_path / "whole", checkpoint_every=200)
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, RunDir, "write_checkpoint", 2)
        with pytest.raises(KeyboardInterrupt):
            train_mbpo(tmp_path / "cut", checkpoint_every=200)
    assert load_checkpoint(tmp_path / "cut")[1].step == 200
    train_mbpo(tmp_path / "cut", checkpoint_every=200)
    whole = load_checkpoint(tmp_path / "whole", with_buffers=True)[1]
    cut = load_checkpoint(tmp_path / "cut", with_buffers=True)[1]
    jax.tree.map(np.testing.assert_array_equal, whole.states, cut.states)
    jax.tree.map(np.testing.assert_array_equal, whole.model_buffers, cut.model_buffers)
    lines = RunDir(tmp_path / "whole").metrics()
    # the model is refitted every 50 steps from the end of the warm-up, rollouts grow 1 -> 3
    assert "model/epochs" not in lines[0] and lines[1]["model/epochs"] == [3.0, 3.0]
    # lengths 1 + floor(2·(step − 100)/100): 1 and 2 at steps 100 and 150, then 3
    assert lines[1]["rollout/length"] == [1.5, 1.5]
    assert lines[2]["rollout/length"] == [3.0, 3.0]


def test_load_model_predicts_in_environment_units(mopo_run, tmp_path):
    model = valorl.load_model(mopo_run)
    out = model.predict(np.zeros((4, 3)), np.zeros((4, 1)), seed_index=1)
    assert out["next_obs_mean"].shape == (3, 4, 3) and out["reward_mean"].shape == (3, 4)
    assert np.all(out["next_obs_std"] > 0) and len(out["elites"]) == 2
    with pytest.raises(ValorlError, match="seed_index 2 is out of range"):
        model.predict(np.zeros((4, 3)), np.zeros((4, 1)), seed_index=2)
    valorl.train("bc", synthetic_dataset(400), steps=10, log_every=10, eval_every=10,
                 eval_episodes=0, progress=False, out=tmp_path / "bc",
                 hidden_dims=(8,), batch_size=16)  # fmt: skip
    with pytest.raises(ValorlError, match="trained bc, which learns no model"):
        valorl.load_model(tmp_path / "bc")


def test_bad_model_based_settings_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValorlError, match="--steps must be a multiple of 5"):
        train_offline(out, steps=12)
    with pytest.raises(ValorlError, match="--robust-coef regularises the critic on imagined"):
        train_offline(out, robust_coef=1.0, rollouts=dataclasses.replace(OFFLINE, real_ratio=1.0))
    with pytest.raises(ValorlError, match=r"--model-loss vagram .* needs a model refitted"):
        train_offline(out, model=dataclasses.replace(MODEL, model_loss="vagram"))
    with pytest.raises(ValorlError, match="--start-steps must be a positive multiple"):
        train_mbpo(out, start_steps=120)
    with pytest.raises(ValorlError, match="--mode hybrid is not supported"):
        valorl.train_online("mbpo", synthetic_dataset(400), mode="hybrid", env="Pendulum-v1",
                            online_steps=300, start_steps=100, progress=False, out=out,
                            rollouts=ONLINE, **TINY)  # fmt: skip
    assert not out.exists()


def test_the_cli_builds_model_based_agents_from_their_flags():
    """Model, rollout and robust-loss flags reach the nested settings of `valorl train mopo`
    (and unknown combinations are refused by the dataclasses' own checks)."""
    from valorl.cli.main import build_parser
    from valorl.launch.args import parse_overrides

    argv = ["train", "mopo", "--dataset", "x", "--model-members", "2", "--model-elites", "1"]
    argv += ["--model-kind", "deterministic", "--model-hidden-dims", "8", "--rollout-batch", "8"]
    argv += ["--rollout-length", "2", "--penalty-coef", "0.5", "--spectral-norm", "true"]
    argv += ["--robust-coef", "1", "--model-weight-decay", "1e-4"]
    args = build_parser().parse_args(argv)
    agent = valorl.make_agent("mopo", **parse_overrides(args, args.agent_cls))
    assert agent.model == DynamicsModel(
        model_members=2, model_elites=1, model_kind="deterministic", model_hidden_dims=(8,),
        model_weight_decay=(1e-4,),
    )  # fmt: skip
    assert agent.rollouts == Rollouts(rollout_batch=8, rollout_length=2)
    assert agent.penalty_coef == 0.5 and agent.robust_coef == 1.0 and agent.ensemble.spectral_norm


def test_open_loop_model_errors_grow_as_a_biased_model_drifts():
    """Episodes of s' = s + 1 and a model that predicts s + 1.1: the k-step open-loop error is
    (0.1·k)², over the starts that have k steps left in their episode; the reward error is
    (model 2 − data 0.5)²."""
    from valorl.data.dataset import Dataset
    from valorl.data.transforms import Normalizer
    from valorl.training.model_diagnostics import model_diagnostics

    episodes = [
        dict(
            observations=np.arange(length + 1, dtype=np.float32)[:, None],
            actions=np.zeros((length, 1), np.float32),
            rewards=np.full(length, 0.5, np.float32),
            terminations=np.eye(length, dtype=bool)[-1],
            truncations=np.zeros(length, bool),
        )
        for length in (4, 6)
    ]
    data = Dataset.from_episodes(episodes)
    model = DynamicsModel(
        model_members=1, model_elites=1, model_kind="deterministic", model_hidden_dims=()
    )
    state = compiled_init(model, 1, 1)
    params = {"layer_0": {"kernel": jnp.zeros((1, 2, 3)), "bias": jnp.array([[1.1, 2.0, -50.0]])}}
    state = state.replace(net=state.net.replace(params=params))
    stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], state)
    result = model_diagnostics(model, stacked, Normalizer.identity((1,), 1), data, horizon=3)
    assert result["starts"] == [10, 8, 6]  # rows with k steps left: 4 + 6, 3 + 5, 2 + 4
    np.testing.assert_allclose(result["obs_mse"][0], [0.01, 0.04, 0.09], rtol=1e-4)
    np.testing.assert_allclose(result["reward_mse"], [2.25], rtol=1e-5)


def test_the_report_shows_the_model_errors():
    from valorl.report.html import _diagnostics

    diag = dict(path="runs/mopo", algorithm="mopo", task="hopper", step=10, seeds=[0, 1])
    diag |= dict(q_mean=[1.0, 2.0], bias=[0.1, 0.2], mc_return_mean=3.0)
    diag["model"] = dict(split="heldout", episodes=4, obs_mse=[[0.01, 0.04], [0.02, 0.05]],
                         reward_mse=[0.5, 0.25])  # fmt: skip
    html = _diagnostics({"diagnostics": [diag], "without_diagnostics": []})
    assert "k steps ahead" in html and "on 4 held-out episodes" in html
    assert "<th>k = 2</th>" in html and ">0.050<" in html and ">0.250<" in html
