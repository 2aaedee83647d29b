"""Language-model runs: the compiled verifier, the stages' steps, runs that resume, the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.cli.main import main
from valorl.errors import ValorlError
from valorl.lm import policy_gradient as pg
from valorl.lm.evaluate import Decoding, decode_accuracy
from valorl.lm.objectives import (
    NextToken,
    PolicyGradient,
    ValueLearning,
    exact_match,
    value_targets,
)
from valorl.lm.tasks import get_task, rewards
from valorl.lm.tokenizer import EOS, PAD, CharTokenizer
from valorl.lm.train import Architecture, LMRun, Problems, load_params, task_data, train
from valorl.report.gather import load_run
from valorl.training.run_dir import RunDir

TINY = Architecture(width=16, depth=1, heads=2)
PROBLEMS = Problems(train=200, evaluation=8)


def test_the_compiled_verifier_agrees_with_the_task_verifier():
    tokenizer = CharTokenizer()
    data = task_data(PROBLEMS)
    prompts = data.test_prompts[:4]
    targets = np.asarray(data.test.targets[:4])
    rng = np.random.default_rng(0)
    completions = [
        targets[0],  # the answer
        np.where(targets[1] == EOS, PAD, targets[1]),  # the answer without its EOS
        rng.integers(2, tokenizer.vocab_size, targets.shape[1]),  # garbage
        np.concatenate([[EOS], np.full(targets.shape[1] - 1, PAD)]),  # an empty answer
    ]
    completions = np.stack(completions).astype(np.int32)
    compiled = np.asarray(exact_match(jnp.asarray(completions), jnp.asarray(targets)))
    by_string = rewards(get_task("addition"), prompts, completions, tokenizer)
    np.testing.assert_array_equal(compiled, [1, 0, 0, 0])
    # the answer cut before its EOS counts as an answer in the string verifier when it fills
    # the row; the compiled verifier always wants the EOS (the row here has room for it)
    np.testing.assert_array_equal(by_string[[0, 2, 3]], compiled[[0, 2, 3]])


def test_value_targets_by_hand():
    """Two completions of A = 3 columns: L = 2 tokens rewarded 1, L = 3 tokens rewarded 0."""
    values = jnp.array([[0.2, 0.4, 0.9, 7.0], [0.5, 0.3, 0.1, 0.6]])  # V(s_0..s_3)
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    targets, state_mask = value_targets(values, jnp.array([1.0, 0.0]), mask, lam=0.5)
    # row 0: G_1 = r = 1; G_0 = 0.5·V(s_1) + 0.5·G_1 = 0.2 + 0.5 = 0.7; s_2 (complete) = r
    np.testing.assert_allclose(targets[0, :3], [0.7, 1.0, 1.0], atol=1e-6)
    # row 1: G_2 = 0; G_1 = 0.5·0.1 + 0.5·0 = 0.05; G_0 = 0.5·0.3 + 0.5·0.05 = 0.175; s_3 = 0
    np.testing.assert_allclose(targets[1], [0.175, 0.05, 0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(state_mask, [[1, 1, 1, 0], [1, 1, 1, 1]])


def _step(objective, params=None, seed=0):
    data = task_data(PROBLEMS)
    from valorl.lm.train import _train_state, init_params, policy_model

    model = policy_model(TINY, PROBLEMS)
    run = LMRun("pretrain", NextToken(False), PROBLEMS, TINY)
    params = init_params(model, jax.random.key(seed)) if params is None else params
    state = _train_state(run, model, params)
    return jax.jit(lambda s, k: objective.step(model, s, data.train, None, k))(
        state, jax.random.key(1)
    )


def test_hpt_trains_by_sft_exactly_when_the_gate_says():
    """An untrained model solves nothing: with gate 0 every prompt trains by SFT, and the
    update is the SFT gradient alone (the RL part has no tokens left)."""
    hpt = PolicyGradient(pg.HPT_RL, prompts=4, rollouts=4, hpt_gate=0)
    _, metrics = _step(hpt)
    assert float(metrics["train/reward"]) == 0.0
    assert float(metrics["hpt/sft_fraction"]) == 1.0
    assert float(metrics["hpt/sft_loss"]) > 0.0


def test_group_advantages_of_an_unsolved_batch_leave_the_policy_unchanged():
    """GRPO on rollouts that all fail: every advantage is 0, so the gradient is 0."""
    _, metrics = _step(PolicyGradient(pg.GRPO, prompts=4, rollouts=4))
    assert float(metrics["train/reward"]) == 0.0
    assert float(metrics["train/grad_norm"]) == 0.0


def _run(stage, objective, out, steps=4, init_from=None, **kw):
    run = LMRun(
        stage, objective, PROBLEMS, TINY, steps=steps, seeds=(0, 1), log_every=2,
        eval_every=4, init_from=init_from, **kw,
    )  # fmt: skip
    return train(run, out, progress=False)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, base):
    """Stopped after its first checkpoint and started again, a run ends where `base` (the same
    settings, uninterrupted) ends."""
    write = RunDir.write_checkpoint

    def stop_after_first(self, data, step):
        write(self, data, step)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "write_checkpoint", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        _run("pretrain", NextToken(False, 8), tmp_path / "resumed")
    monkeypatch.undo()
    resumed = _run("pretrain", NextToken(False, 8), tmp_path / "resumed")
    for a, b in zip(
        jax.tree.leaves(load_params(base, (0, 1))),
        jax.tree.leaves(load_params(resumed, (0, 1))),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in RunDir(resumed).metrics()] == [2, 4]
    with np.load(resumed / "evaluations.npz") as f:
        assert f["returns"].shape == (2, 1, 8) and f["ood_returns"].shape == (2, 1, 8)
        np.testing.assert_array_equal(f["normalized_scores"], 100 * f["returns"])
    result = json.loads((resumed / "result.json").read_text())
    assert len(result["test_accuracy"]) == 2


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return _run("pretrain", NextToken(False, 8), tmp_path_factory.mktemp("lm") / "base")


def test_post_training_starts_from_its_source_seed_for_seed(tmp_path, base, value):
    source = load_params(base, (1,))
    # zero steps are refused; one step of SFT with a zero learning rate keeps the source
    sft = _run("sft", NextToken(True, 8), tmp_path / "sft", steps=1, init_from=str(base),
               learning_rate=0.0)  # fmt: skip
    for a, b in zip(jax.tree.leaves(source), jax.tree.leaves(load_params(sft, (1,))), strict=True):
        np.testing.assert_array_equal(a, b)
    config = RunDir(sft).config()
    assert config["agent"]["hyperparameters"]["starts_from"] == "pretrain"
    with pytest.raises(ValorlError, match="learned the values of"):
        decode_accuracy(sft, Decoding("vas"), value)
    with pytest.raises(ValorlError, match="has no seed 5"):
        load_params(base, (5,))
    with pytest.raises(ValorlError, match="needs --init-from"):
        LMRun("rl", PolicyGradient(), PROBLEMS, TINY)
    with pytest.raises(ValorlError, match="not a valorl language-model run"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"agent": {}}')
        load_params(tmp_path / "other", (0,))


def test_greedy_decoding_reproduces_the_runs_last_evaluation(base):
    result = json.loads((base / "result.json").read_text())
    decoded = decode_accuracy(base, Decoding("greedy"))
    np.testing.assert_allclose(decoded.accuracy, result["test_accuracy"])
    reported = load_run(base)  # `valorl report` reads the run: accuracy in percent
    assert reported.agent == "lm-pretrain"
    np.testing.assert_allclose(reported.scores[:, -1], 100 * np.asarray(result["test_accuracy"]))
    with pytest.raises(ValorlError, match="vas needs --value RUN"):
        decode_accuracy(base, Decoding("vas"))
    with pytest.raises(ValorlError, match="uses no value model"):
        decode_accuracy(base, Decoding("sample"), value_run=base)
    with pytest.raises(ValorlError, match="is not a value run"):
        decode_accuracy(base, Decoding("vas"), value_run=base)


@pytest.fixture(scope="module")
def value(tmp_path_factory, base):
    out = tmp_path_factory.mktemp("lm") / "value"
    return _run("value", ValueLearning(2, 2), out, steps=2, init_from=str(base))


def test_best_of_n_by_the_verifier_bounds_best_of_n_by_the_value(
    tmp_path, base, value, monkeypatch
):
    """Same key, same candidates: choosing them by the verifier is never worse than by V.
    The tiny base answers nothing right, so a stand-in verifier (a completion is "right" when
    its first token is even) gives the candidates something to tell apart: by the verifier, a
    prompt is right when any of its 4 candidates is, which beats V's single pick."""
    monkeypatch.setattr(
        "valorl.lm.evaluate.exact_match", lambda tokens, _: (tokens[:, 0] % 2 == 0) * 1.0
    )
    by_verifier = decode_accuracy(base, Decoding("best-of-n-verifier", n=4), split="ood")
    by_value = decode_accuracy(base, Decoding("best-of-n-value", n=4), value, split="ood")
    one = decode_accuracy(base, Decoding("best-of-n-verifier", n=1), split="ood")
    assert (by_verifier.accuracy >= by_value.accuracy).all()
    assert (by_verifier.accuracy >= one.accuracy).all() and by_verifier.accuracy.mean() > 0.5
    assert by_verifier.accuracy.mean() > by_value.accuracy.mean()
    np.testing.assert_array_equal(by_value.scored, [4, 4])
    with pytest.raises(ValorlError, match="is a value run"):
        decode_accuracy(value, Decoding("vas"), value)
    with pytest.raises(ValorlError, match="is a value run"):
        _run("sft", NextToken(True, 8), tmp_path / "sft", steps=1, init_from=str(value))
    assert not (tmp_path / "sft").exists()


@pytest.mark.expensive
def test_the_cli_trains_a_base_then_a_value_model(tmp_path, capsys):
    base, value = tmp_path / "base", tmp_path / "value"
    flags = ["--seeds", "2", "--log-every", "2", "--eval-every", "2", "--quiet"]
    assert main(["lm", "pretrain", "--steps", "2", "--width", "16", "--depth", "1",
                 "--heads", "2", "--train-problems", "100", "--eval-problems", "4", *flags,
                 "--out", str(base)]) == 0  # fmt: skip
    assert "test_accuracy" in capsys.readouterr().out
    assert main(["lm", "value", "--init-from", str(base), "--steps", "2", "--prompts", "2",
                 *flags, "--out", str(value)]) == 0  # fmt: skip
    assert "value/loss" in capsys.readouterr().out
    assert main(["lm", "hpt", "--init-from", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x")]) != 0  # fmt: skip
    assert "is not a valorl run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
