"""Off-policy evaluation with discrete actions: ε-greedy probabilities and importance ratios by
hand on a 2-action example, a softmax behaviour fitted by cross-entropy, FQE's exact
expectation over actions on a one-step problem, and `run_ope` end to end on CartPole with a
tiny discrete agent (tests/discrete_agent.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from discrete_agent import collect_cartpole, registered

import valorl
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.sources import load_dataset
from valorl.data.transforms import fit_normalizer
from valorl.errors import ValorlError
from valorl.ope import run_ope
from valorl.ope.behaviour import (
    FITTED_SOFTMAX,
    BehaviourModel,
    CategoricalBehaviourModel,
    behaviour_log_probs,
    epsilon_greedy_behaviour,
)
from valorl.ope.estimators import pad_episodes, pdis, weighted_pdis
from valorl.ope.fqe import FQE, fit_fqe
from valorl.ope.target import TargetPolicies, epsilon_greedy_log_prob, epsilon_greedy_probs


def two_action_data(actions, rewards, ends, obs=None) -> Dataset:
    n = len(actions)
    obs = np.zeros((n, 1), np.float32) if obs is None else obs
    return Dataset(
        observations=obs,
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, np.float32),
        next_observations=obs,
        terminals=np.asarray(ends, bool),
        timeouts=np.zeros(n, bool),
        info=DatasetInfo(name="two-actions"),
        num_actions=2,
    )


def test_epsilon_greedy_probabilities_by_hand():
    log_p = epsilon_greedy_log_prob(np.array([0, 1, 1]), np.array([0, 0, 1]), 0.2, 2)
    np.testing.assert_allclose(np.exp(log_p), [0.9, 0.1, 0.9])
    greedy = epsilon_greedy_log_prob(np.array([0, 1]), np.array([0, 0]), 0.0, 2)
    np.testing.assert_array_equal(greedy, [0.0, -np.inf])  # one-hot: log 1, log 0


def test_importance_ratios_and_pdis_by_hand():
    """Two episodes of two steps under a uniform behaviour (π_b = 1/2); the evaluated policy
    is greedy for action 1 with ε = 0.2: π_e(1) = 0.9, π_e(0) = 0.1. Episode A takes 1, 1
    (rewards 1, 1), episode B takes 1, 0 (rewards 0, 2)."""
    data = two_action_data([1, 1, 1, 0], [1, 1, 0, 2], [False, True, False, True])
    targets = TargetPolicies({}, 0.2, num_actions=2)
    probs = targets._discrete_probabilities(None, np.ones((1, 4), np.int32))
    np.testing.assert_allclose(probs[0, 0], [0.1, 0.9])
    log_e = targets.log_probs(data.actions, probs)[0]
    log_b = epsilon_greedy_behaviour(data, np.zeros(4, np.int32), 1.0)  # ε = 1: uniform
    np.testing.assert_allclose(np.exp(log_b), 0.5)
    ratios = np.exp(log_e - log_b)
    np.testing.assert_allclose(ratios, [1.8, 1.8, 1.8, 0.2])
    rewards, valid = pad_episodes(data.rewards.astype(np.float64), data.episode_slices())
    log_w, _ = pad_episodes(log_e - log_b, data.episode_slices())
    gamma = 0.5
    # A: 1.8·1 + γ·1.8²·1;  B: 1.8·0 + γ·(1.8·0.2)·2
    a, b = 1.8 + gamma * 1.8**2, gamma * 1.8 * 0.2 * 2
    np.testing.assert_allclose(pdis(rewards, log_w, valid, gamma), (a + b) / 2)
    # weighted: step 0: (1.8·1 + 1.8·0)/(1.8 + 1.8); step 1: (3.24·1 + 0.36·2)/(3.24 + 0.36)
    expected = 0.5 + gamma * (3.24 + 0.72) / 3.6
    np.testing.assert_allclose(weighted_pdis(rewards, log_w, valid, gamma), expected)


def test_epsilon_greedy_behaviour_needs_epsilon_above_zero():
    data = two_action_data([0, 1], [0, 0], [False, True])
    with pytest.raises(ValorlError, match=r"epsilon in \(0, 1\]"):
        epsilon_greedy_behaviour(data, np.zeros(2, np.int32), 0.0)


def test_softmax_behaviour_fitted_by_cross_entropy_matches_the_frequencies():
    """A constant state where the data took action 1 three times in four: the fitted softmax
    gives π_b(1) ≈ 3/4 and π_b(0) ≈ 1/4."""
    actions = np.tile([1, 1, 1, 0], 50)
    data = two_action_data(actions, np.zeros(200), np.arange(200) % 10 == 9)
    normalizer = fit_normalizer(data, normalize_observations=False, reward_normalization="none")
    model = CategoricalBehaviourModel((8,), lr=0.05, batch_size=64, steps=300, num_actions=2)
    log_b = model.fit(data, normalizer, jax.random.key(0), progress=False)
    np.testing.assert_allclose(np.exp(log_b[:4]), [0.75, 0.75, 0.75, 0.25], atol=0.05)
    # `behaviour_log_probs` picks the softmax model for discrete data
    small = BehaviourModel((8,), batch_size=16, steps=10)
    _, source = behaviour_log_probs(data, normalizer, jax.random.key(0), small, progress=False)
    assert source == FITTED_SOFTMAX


def test_fqe_takes_the_exact_expectation_over_discrete_actions():
    """One-step episodes from one state: action 1 pays 1, action 0 pays 0. The ε-greedy policy
    around action 1 with ε = 0.5 is worth (1 − ε)·1 + ε·(0 + 1)/2 = 0.75."""
    actions = np.tile([0, 1], 100)
    data = two_action_data(actions, actions.astype(np.float32), np.ones(200, bool))
    normalizer = fit_normalizer(data, normalize_observations=False, reward_normalization="none")
    fqe = FQE(0.9, 0.5, (16,), 1e-2, batch_size=64, steps=400, num_actions=2)
    probs = epsilon_greedy_probs(np.ones((1, 200), np.int32), 0.5, 2)  # [0.25, 0.75] each
    q, v = fit_fqe(fqe, data, normalizer, probs, probs, None, jax.random.key(0), False)
    np.testing.assert_allclose(q[0, :2], [0.0, 1.0], atol=0.05)
    np.testing.assert_allclose(v[0], 0.75, atol=0.05)


def test_run_ope_on_cartpole_with_a_discrete_agent(tmp_path, monkeypatch):
    agent = registered(monkeypatch)
    collect_cartpole("valorl/cartpole-ope-v0")
    data = load_dataset("valorl/cartpole-ope-v0")
    run = tmp_path / "run"
    valorl.train(agent, data, steps=20, log_every=20, eval_every=20, eval_episodes=0,
                 seeds=2, progress=False, out=run)  # fmt: skip
    settings = dict(
        episodes=2, fqe_steps=20, hidden_dims=(8,), batch_size=16, behaviour_steps=20,
        bootstrap=10, top_k=(1,), progress=False,
    )  # fmt: skip
    result = run_ope([run], data, target_noise=0.1, **settings)
    assert result["behaviour"]["log_probs"] == FITTED_SOFTMAX
    assert len(result["policies"]) == 2
    assert result["settings"]["fqe"]["num_actions"] == 2
    for policy in result["policies"]:
        assert set(policy["estimates"]) == {"fqe", "pdis", "wpdis", "dr"}
        assert policy["true_value"]["mean"] > 0
        assert policy["estimates"]["pdis"]["estimate"] is not None
    # the greedy policy itself, against an epsilon-greedy behaviour around the same run
    greedy = run_ope(
        [run], data, target_noise=0.0, behaviour_run=run, behaviour_epsilon=0.5, **settings
    )
    assert greedy["behaviour"]["log_probs"].startswith("epsilon-greedy")
    # uniform target against uniform behaviour: every importance ratio is 1, so per-decision
    # IS and its weighted form both return the data's own mean discounted return
    uniform = run_ope(
        [run], data, target_noise=1.0, behaviour_run=run, behaviour_epsilon=1.0, **settings
    )
    for policy in uniform["policies"]:
        for name in ("pdis", "wpdis"):
            estimate = policy["estimates"][name]["estimate"]
            np.testing.assert_allclose(estimate, uniform["behaviour"]["value"], rtol=1e-5)
        assert policy["effective_sample_size"] == pytest.approx(uniform["dataset"]["episodes"])
    with pytest.raises(ValorlError, match=r"must be in \[0, 1\]"):
        run_ope([run], data, target_noise=1.5, **settings)
    with pytest.raises(ValorlError, match=r"softmax over Q, but .* has no Q-function"):
        run_ope([run], data, target_temperature=1.0, **settings)


def test_softmax_over_q_target_policy():
    """With a temperature the evaluated policy is softmax(Q(s, ·)/T) of the candidate's critic
    (here Q = the tiny agent's logits), and its samples follow those probabilities."""
    from discrete_agent import TinyDiscrete

    from valorl.agents.base import Spec
    from valorl.eval.policy import Policy

    class LogitCritic(TinyDiscrete):
        def q_values(self, state, obs, actions):
            logits = self.logits(state, obs)
            return jnp.take_along_axis(logits, actions[:, None], axis=-1)[:, 0][None]

    agent = LogitCritic()
    state = agent.init(jax.random.key(1), Spec((3,), 0, num_actions=3))
    data = Dataset(
        observations=np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32),
        actions=np.array([0, 1, 2, 0, 1]),
        rewards=np.zeros(5, np.float32),
        next_observations=np.zeros((5, 3), np.float32),
        terminals=np.eye(5, dtype=bool)[-1],
        timeouts=np.zeros(5, bool),
        num_actions=3,
    )
    normalizer = fit_normalizer(data, normalize_observations=False, reward_normalization="none")
    stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], state)
    policy = Policy(agent, stacked, normalizer, [0], DatasetInfo(), 0, num_actions=3)
    targets = TargetPolicies({"run": policy}, 0.0, num_actions=3, temperature=0.5)
    probs = targets.probabilities(data.observations)
    logits = np.asarray(agent.logits(state, jnp.asarray(data.observations)), np.float64) / 0.5
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(probs[0], expected, rtol=1e-5)
    np.testing.assert_allclose(
        targets.log_probs(data.actions, probs)[0],
        np.log(expected[np.arange(5), data.actions]),
        rtol=1e-5,
    )
    obs = np.broadcast_to(data.observations[:1], (1, 4000, 3))
    samples = targets.act(obs, np.random.default_rng(0))[0]
    frequencies = np.bincount(samples, minlength=3) / len(samples)
    np.testing.assert_allclose(frequencies, expected[0], atol=0.03)
