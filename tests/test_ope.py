"""Off-policy evaluation: estimators against hand-computed numbers and a tabular MDP whose true
value is known in closed form, selection metrics by hand, FQE on problems with closed-form
values, the behaviour probabilities `collect` stores, and `valorl ope` end to end."""

from __future__ import annotations

import json

import gymnasium as gym
import jax
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from conftest import train_tiny_run

import valorl
from valorl.cli.main import main
from valorl.collection import Behaviour, clipped_gaussian_log_prob, collect
from valorl.collection.controllers import pendulum_swingup
from valorl.data.dataset import Dataset
from valorl.data.transforms import fit_normalizer
from valorl.ope.behaviour import FITTED, STORED, BehaviourModel, behaviour_log_probs
from valorl.ope.estimators import (
    bootstrap_interval,
    direct_method,
    doubly_robust,
    effective_sample_size,
    pad_episodes,
    pdis,
    weighted_pdis,
)
from valorl.ope.fqe import FQE, fit_fqe, time_index
from valorl.ope.selection import regret_at_k, selection_metrics, sharpe_ratio_at_k, spearman

# ---- estimators by hand ------------------------------------------------------------------------

# Two episodes, γ = 0.9: episode 0 has rewards (1, 2) and per-step ratios (2, 0.5); episode 1 has
# one step, reward 3, ratio 0.5. Padded to T = 2.
REWARDS = np.array([[1.0, 2.0], [3.0, 0.0]])
RATIOS = np.array([[2.0, 0.5], [0.5, 1.0]])
VALID = np.array([[True, True], [True, False]])
Q_HAT = np.array([[1.0, 1.0], [2.0, 0.0]])
V_HAT = np.array([[0.5, 1.0], [1.0, 0.0]])


def test_pdis_weighted_pdis_dr_and_dm_on_a_two_step_example():
    """Cumulative weights are ρ = (2, 1) and (0.5, 0.5 carried), so
    PDIS  = mean(2·1 + 0.9·1·2, 0.5·3) = mean(3.8, 1.5) = 2.65;
    WPDIS = (2·1 + 0.5·3)/2.5 + 0.9·(1·2 + 0.5·0)/1.5 = 1.4 + 1.2 = 2.6;
    DR    = mean(2(1−1) + 0.5 + 0.9·[1(2−1) + 2·1], 0.5(3−2) + 1) = mean(3.2, 1.5) = 2.35;
    DM    = mean(0.5, 1) = 0.75."""
    log_ratios = np.log(RATIOS)
    assert pdis(REWARDS, log_ratios, VALID, 0.9) == pytest.approx(2.65)
    assert weighted_pdis(REWARDS, log_ratios, VALID, 0.9) == pytest.approx(2.6)
    assert doubly_robust(REWARDS, log_ratios, Q_HAT, V_HAT, VALID, 0.9) == pytest.approx(2.35)
    assert direct_method(V_HAT[:, 0]) == pytest.approx(0.75)


def test_counts_resample_episodes():
    """Counts weigh episodes: drawing episode 0 twice is the estimate on [ep0, ep0], and a
    (resamples, episodes) array of counts gives one estimate per row."""
    log_ratios = np.log(RATIOS)
    counts = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    assert pdis(REWARDS, log_ratios, VALID, 0.9, counts) == pytest.approx([3.8, 2.65, 1.5])
    # WPDIS on one episode alone: its weights normalise to 1 (1 + 0.9·2, and 3 + 0.9·0)
    assert weighted_pdis(REWARDS, log_ratios, VALID, 0.9, counts) == pytest.approx([2.8, 2.6, 3])
    dr = doubly_robust(REWARDS, log_ratios, Q_HAT, V_HAT, VALID, 0.9, counts)
    assert dr == pytest.approx([3.2, 2.35, 1.5])


def test_on_policy_data_every_importance_estimator_is_the_average_return():
    """With π_e = π_b (all ratios 1), PDIS and weighted PDIS both equal the mean discounted
    return, episodes of different lengths included; every episode counts fully in the ESS."""
    rng = np.random.default_rng(0)
    lengths = [5, 3, 7, 1]
    slices, start = [], 0
    for n in lengths:
        slices.append(slice(start, start + n))
        start += n
    rewards, valid = pad_episodes(rng.normal(size=start), slices)
    zeros = np.zeros_like(rewards)
    returns = [(0.8 ** np.arange(n) * rewards[i, :n]).sum() for i, n in enumerate(lengths)]
    assert pdis(rewards, zeros, valid, 0.8) == pytest.approx(np.mean(returns))
    assert weighted_pdis(rewards, zeros, valid, 0.8) == pytest.approx(np.mean(returns))
    assert effective_sample_size(zeros, valid) == pytest.approx(len(lengths))


def test_weighted_pdis_survives_weights_beyond_floating_point():
    """Log-weights of ±2000 overflow exp(); the self-normalised estimate is still exact: the
    dominant episode's reward."""
    rewards = np.array([[1.0], [5.0]])
    log_ratios = np.array([[2000.0], [-2000.0]])
    valid = np.ones((2, 1), bool)
    assert weighted_pdis(rewards, log_ratios, valid, 0.9) == pytest.approx(1.0)
    counts = np.array([[0.0, 2.0]])  # a resample without the dominant episode
    assert weighted_pdis(rewards, log_ratios, valid, 0.9, counts) == pytest.approx([5.0])


def test_bootstrap_interval_of_a_mean():
    """For a mean the percentile interval matches the normal approximation x̄ ± 1.96·s/√n, and it
    contains the point estimate."""
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    point, low, high = bootstrap_interval(lambda c: direct_method(x, c), len(x), resamples=2000)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert point == pytest.approx(x.mean())
    assert low < point < high
    assert low == pytest.approx(x.mean() - half, abs=0.05)
    assert high == pytest.approx(x.mean() + half, abs=0.05)


# ---- a tabular MDP with a closed-form value -----------------------------------------------------

S, A, H, GAMMA = 3, 2, 4, 0.9


def tabular_mdp():
    """Random dynamics P[s, a, s'], mean rewards R[s, a] (observed with N(0, 0.5²) noise), start
    distribution d0, behaviour π_b and target π_e; the target's time-indexed Q_t and V_t and its
    value J = d0·V_0 by backward dynamic programming over the horizon H."""
    rng = np.random.default_rng(42)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    R = rng.uniform(-1, 1, (S, A))
    d0 = np.array([0.5, 0.3, 0.2])
    pi_b = np.array([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]])
    pi_e = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    Q, V = np.zeros((H, S, A)), np.zeros((H + 1, S))
    for t in reversed(range(H)):
        Q[t] = R + GAMMA * P @ V[t + 1]
        V[t] = (pi_e * Q[t]).sum(axis=1)
    return dict(P=P, R=R, d0=d0, pi_b=pi_b, pi_e=pi_e, Q=Q, V=V[:H], J=float(d0 @ V[0]))


def simulate(mdp, datasets: int, episodes: int, seed: int = 0):
    """`datasets` independent datasets of `episodes` behaviour episodes, flattened to
    (datasets·episodes, H) arrays of states, actions and noisy rewards."""
    rng = np.random.default_rng(seed)
    n = datasets * episodes
    states, actions, rewards = (np.zeros((n, H), int), np.zeros((n, H), int), np.zeros((n, H)))
    s = rng.choice(S, size=n, p=mdp["d0"])
    for t in range(H):
        a = (rng.random(n) > mdp["pi_b"][s, 0]).astype(int)
        states[:, t], actions[:, t] = s, a
        rewards[:, t] = mdp["R"][s, a] + rng.normal(0, 0.5, n)
        cumulative = mdp["P"][s, a].cumsum(axis=1)
        s = (rng.random((n, 1)) > cumulative).sum(axis=1)
    return states, actions, rewards


def per_dataset(estimate, datasets: int, episodes: int) -> np.ndarray:
    """Run `estimate(counts)` once per dataset, by counts that select that dataset's episodes."""
    counts = np.kron(np.eye(datasets), np.ones(episodes))
    return estimate(counts)


def assert_unbiased(values: np.ndarray, truth: float, sigmas: float = 4.0) -> None:
    error = values.mean() - truth
    standard_error = values.std(ddof=1) / np.sqrt(len(values))
    assert abs(error) < sigmas * standard_error, (values.mean(), truth, standard_error)


@pytest.fixture(scope="module")
def mdp_data():
    mdp = tabular_mdp()
    datasets, episodes = 400, 50
    states, actions, rewards = simulate(mdp, datasets, episodes)
    log_ratios = np.log(mdp["pi_e"][states, actions] / mdp["pi_b"][states, actions])
    t = np.arange(H)
    q_true, v_true = mdp["Q"][t, states, actions], mdp["V"][t, states]
    return dict(
        mdp=mdp,
        shape=(datasets, episodes),
        states=states,
        actions=actions,
        rewards=rewards,
        log_ratios=log_ratios,
        valid=np.ones_like(rewards, bool),
        q_true=q_true,
        v_true=v_true,
    )


def test_pdis_is_unbiased_and_its_interval_covers_the_truth(mdp_data):
    """Over 400 datasets of 50 episodes the mean PDIS estimate is within 4 standard errors of the
    closed-form value, and most per-dataset bootstrap intervals contain it."""
    d, truth = mdp_data, mdp_data["mdp"]["J"]
    args = (d["rewards"], d["log_ratios"], d["valid"], GAMMA)
    values = per_dataset(lambda c: pdis(*args, c), *d["shape"])
    assert_unbiased(values, truth)
    episodes = d["shape"][1]
    covered = []
    for i in range(40):
        rows = slice(i * episodes, (i + 1) * episodes)
        one = tuple(a[rows] for a in args[:3])
        _, low, high = bootstrap_interval(
            lambda c, one=one: pdis(*one, GAMMA, c), episodes, resamples=300, seed=i
        )
        covered.append(low <= truth <= high)
    assert np.mean(covered) >= 0.8


def test_dr_is_unbiased_with_exact_ratios_and_a_wrong_q(mdp_data):
    """With exact importance ratios, DR stays unbiased when Q̂ is badly wrong (V̂ = E_{π_e} Q̂ kept
    consistent), while the direct method with the same Q̂ is far off."""
    d, mdp = mdp_data, mdp_data["mdp"]
    offset = np.random.default_rng(3).uniform(-2, 2, (H, S, A))
    q_wrong = mdp["Q"] + offset
    v_wrong = (mdp["pi_e"][None] * q_wrong).sum(axis=2)
    t = np.arange(H)
    q_hat, v_hat = q_wrong[t, d["states"], d["actions"]], v_wrong[t, d["states"]]
    values = per_dataset(
        lambda c: doubly_robust(d["rewards"], d["log_ratios"], q_hat, v_hat, d["valid"], GAMMA, c),
        *d["shape"],
    )
    assert_unbiased(values, mdp["J"])
    dm = per_dataset(lambda c: direct_method(v_hat[:, 0], c), *d["shape"])
    assert abs(dm.mean() - mdp["J"]) > 0.3


def test_dr_is_unbiased_with_the_true_q_and_wrong_ratios(mdp_data):
    """With Q̂ = Q^π_e exactly, every DR correction term has mean zero whatever the weights, so DR
    stays unbiased with arbitrary ratios, while PDIS with the same ratios is biased."""
    d, mdp = mdp_data, mdp_data["mdp"]
    wrong = np.random.default_rng(4).uniform(0.2, 3.0, (S, A))
    log_ratios = np.log(wrong[d["states"], d["actions"]])
    values = per_dataset(
        lambda c: doubly_robust(
            d["rewards"], log_ratios, d["q_true"], d["v_true"], d["valid"], GAMMA, c
        ),
        *d["shape"],
    )
    assert_unbiased(values, mdp["J"])
    biased = per_dataset(
        lambda c: pdis(d["rewards"], log_ratios, d["valid"], GAMMA, c), *d["shape"]
    )
    standard_error = biased.std(ddof=1) / np.sqrt(len(biased))
    assert abs(biased.mean() - mdp["J"]) > 10 * standard_error


# ---- selection metrics --------------------------------------------------------------------------


def test_selection_metrics_on_perfect_and_reversed_rankings():
    truths = np.array([1.0, 4.0, 2.0, 3.0])
    assert spearman(truths * 10, truths) == pytest.approx(1.0)
    assert spearman(-truths, truths) == pytest.approx(-1.0)
    assert regret_at_k(truths, truths, 1) == 0.0
    assert regret_at_k(-truths, truths, 1) == 3.0  # picks the worst (1) instead of the best (4)
    assert regret_at_k(-truths, truths, 4) == 0.0  # every policy deployed


def test_sharpe_ratio_and_regret_by_hand():
    """True values (10, 8, 2, 5), estimates (1, 3, 4, 2): the estimator ranks 2, 1, 3, 0.
    top-2 = true (2, 8): best 8, std 3, so SharpeRatio@2 = (8 − 5)/3 = 1 with J(π_b) = 5;
    top-3 = (2, 8, 5): std √6, SharpeRatio@3 = 3/√6; regret@1 = 10 − 2, regret@2 = 10 − 8.
    Spearman: rank differences (−3, 0, 3, 0), ρ = 1 − 6·18/(4·15) = −0.8."""
    truths, estimates = np.array([10.0, 8.0, 2.0, 5.0]), np.array([1.0, 3.0, 4.0, 2.0])
    assert sharpe_ratio_at_k(estimates, truths, 2, 5.0) == pytest.approx(1.0)
    assert sharpe_ratio_at_k(estimates, truths, 3, 5.0) == pytest.approx(3 / np.sqrt(6))
    metrics = selection_metrics(estimates, truths, 5.0, (1, 2, 3, 10))
    assert metrics == pytest.approx(
        {
            "spearman": -0.8,
            "regret@1": 8.0,
            "regret@2": 2.0,
            "sharpe@2": 1.0,
            "regret@3": 2.0,
            "sharpe@3": 3 / np.sqrt(6),
        }
    )
    assert np.isnan(sharpe_ratio_at_k(estimates, np.ones(4), 2, 0.0))  # no spread: undefined


# ---- FQE ----------------------------------------------------------------------------------------


def chained_dataset(obs, actions, rewards, episode_len):
    """Transitions whose next observation is the next row, cut into timed-out episodes."""
    n = len(rewards)
    timeouts = np.zeros(n, bool)
    timeouts[episode_len - 1 :: episode_len] = True
    return Dataset(
        observations=obs,
        actions=actions,
        rewards=rewards,
        next_observations=np.concatenate([obs[1:], obs[:1]]),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
    )


def small_fqe(**kw) -> FQE:
    return FQE(hidden_dims=(32, 32), lr=3e-3, tau=0.05, batch_size=64, **kw)


def test_fqe_learns_the_target_policys_value_not_the_behaviours():
    """Reward = action, no end, γ = 0.5; logged actions are uniform (behaviour value 0) and the
    target acts 0.5 ± 0.05, so V^π = 0.5 / (1 − 0.5) = 1 and Q^π(s, a) = a + 0.5."""
    rng = np.random.default_rng(0)
    n = 2000
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    data = chained_dataset(obs, actions, actions[:, 0].copy(), 50)
    normalizer = fit_normalizer(data, normalize_observations=True, reward_normalization="none")
    means = np.full((1, n, 1), 0.5)
    fqe = small_fqe(discount=0.5, noise=0.05, steps=600)
    q, v = fit_fqe(fqe, data, normalizer, means, means, None, jax.random.key(0), progress=False)
    assert v.mean() == pytest.approx(1.0, abs=0.05)
    assert np.abs(q[0] - (actions[:, 0] + 0.5)).mean() < 0.05


def test_fqe_with_a_time_limit_learns_the_finite_horizon_value():
    """Reward 1 per step, episodes of H = 5 steps cut by the time limit, γ = 0.9: the value with
    k steps left is (1 − γ^k)/(1 − γ), e.g. 4.0951 at the start, not the stationary 10."""
    rng = np.random.default_rng(1)
    n, horizon = 1000, 5
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    data = chained_dataset(obs, actions, np.ones(n, np.float32), horizon)
    normalizer = fit_normalizer(data, normalize_observations=True, reward_normalization="none")
    means = np.zeros((1, n, 1))
    fqe = small_fqe(discount=0.9, noise=0.1, steps=1000)
    _, v = fit_fqe(fqe, data, normalizer, means, means, horizon, jax.random.key(1), progress=False)
    t = time_index(data)
    for k in range(horizon):
        expected = (1 - 0.9 ** (horizon - k)) / (1 - 0.9)
        assert v[0][t == k].mean() == pytest.approx(expected, rel=0.05)


# ---- behaviour probabilities --------------------------------------------------------------------


def test_clipped_gaussian_is_a_probability_distribution():
    """Density inside the bounds plus the two masses integrate to 1, and the masses match how
    often clipping hits each bound."""
    mean, std, low, high = 1.5, 0.8, -2.0, 2.0
    density = lambda x: np.exp(clipped_gaussian_log_prob([x], [mean], std, [low], [high]))
    inside, _ = scipy.integrate.quad(density, low, high)
    mass_low, mass_high = density(low), density(high)
    assert inside + mass_low + mass_high == pytest.approx(1.0, abs=1e-6)
    samples = np.clip(np.random.default_rng(0).normal(mean, std, 200_000), low, high)
    assert mass_high == pytest.approx(np.mean(samples == high), abs=0.005)
    assert mass_low == pytest.approx(scipy.stats.norm.cdf((low - mean) / std))


def test_collect_stores_behaviour_log_probs_that_match_a_recomputation():
    """`collect` stores each action's log-probability: −log 4 for uniform actions on [−2, 2]; for
    the noisy controller the clipped-Gaussian probability around its action, masses at the
    bounds included. `valorl ope` reads them back as stored."""
    collect(
        "Pendulum-v1",
        ["random", "pendulum-swingup:noise=0.3"],
        400,
        dataset_id="valorl/lp-v0",
        reference_episodes=1,
        progress=False,
    )
    data = valorl.load_dataset("valorl/lp-v0")
    normalizer = fit_normalizer(data, normalize_observations=False, reward_normalization="none")
    stored, source = behaviour_log_probs(data, normalizer, jax.random.key(0), progress=False)
    assert source == STORED
    np.testing.assert_allclose(stored[:200], -np.log(4.0))
    means = np.stack([pendulum_swingup(o) for o in data.observations[200:]])
    expected = clipped_gaussian_log_prob(data.actions[200:], means, 0.3 * 2.0, -2.0, 2.0)
    np.testing.assert_allclose(stored[200:], expected, rtol=1e-6)
    assert np.any(np.abs(data.actions[200:]) == 2.0)  # some clipped: masses were recorded


def test_noise_free_behaviour_probabilities():
    """A noise-free controller is a point mass: log-probability 0 at a saturated bound, +inf
    inside (a Dirac density), so importance weights there are 0."""
    env = gym.make("Pendulum-v1")
    act = Behaviour("pendulum-swingup").build(env)
    rng = np.random.default_rng(0)
    inside = np.array([1.0, 0.0, 0.5], np.float32)  # upright: a small PD action
    action, log_prob = act(inside, rng)
    assert abs(action[0]) < 2 and log_prob == np.inf
    falling = np.array([-1.0, 0.0, 5.0], np.float32)  # hanging and fast: saturated
    action, log_prob = act(falling, rng)
    assert abs(action[0]) == 2 and log_prob == 0.0
    env.close()


def test_fitted_behaviour_model_recovers_a_known_gaussian():
    """Without stored probabilities a Gaussian policy is fitted; on data from a known Gaussian
    behaviour (no clipping in practice) its log-probabilities are close to the true ones."""
    rng = np.random.default_rng(0)
    n = 3000
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    mean = 0.4 * np.tanh(obs[:, :1])
    actions = (mean + 0.2 * rng.normal(size=(n, 1))).astype(np.float32)
    data = chained_dataset(obs, actions, np.zeros(n, np.float32), 100)
    normalizer = fit_normalizer(
        data,
        normalize_observations=True,
        reward_normalization="none",
        action_space=gym.spaces.Box(-2.0, 2.0, (1,)),
    )
    model = BehaviourModel(hidden_dims=(32, 32), lr=1e-2, batch_size=128, steps=800)
    fitted, source = behaviour_log_probs(data, normalizer, jax.random.key(0), model, progress=False)
    assert source == FITTED
    truth = scipy.stats.norm.logpdf(actions[:, 0], mean[:, 0], 0.2)
    assert fitted.mean() == pytest.approx(truth.mean(), abs=0.05)  # the likelihood is matched
    assert np.abs(fitted - truth).mean() < 0.2  # a state-blind Gaussian: 0.7


# ---- valorl ope end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bc_run(pendulum_dataset, tmp_path_factory):
    """A tiny two-seed BC run on Pendulum-v1, shared by this module's CLI tests."""
    path = tmp_path_factory.mktemp("ope") / "r"
    train_tiny_run(pendulum_dataset, path)
    return str(path)


def test_ope_command_end_to_end(bc_run, capsys, tmp_path):
    """`valorl ope` on a collected Pendulum dataset: every candidate (two seeds) gets every
    estimator with low ≤ estimate ≤ high, a measured true value, and every selection metric;
    the JSON also lands in --out."""
    collect(
        "Pendulum-v1",
        ["random", "pendulum-swingup:noise=0.3"],
        800,
        dataset_id="valorl/ope-v0",
        reference_episodes=1,
        progress=False,
    )
    argv = ["ope", bc_run, "--dataset", "valorl/ope-v0", "--fqe-steps", "50"]
    argv += ["--hidden-dims", "8,8", "--batch-size", "32", "--episodes", "2"]
    argv += ["--bootstrap-reps", "100", "--top-k", "1,2", "--json", "--out", "ope.json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((tmp_path / "ope.json").read_text())
    assert result["behaviour"]["log_probs"] == STORED
    assert result["dataset"]["episodes"] == 4  # 400 steps per behaviour: two whole episodes
    assert result["settings"]["horizon"] == 200
    assert [p["name"] for p in result["policies"]] == [f"{bc_run}:index=0", f"{bc_run}:index=1"]
    for policy in result["policies"]:
        truth = policy["true_value"]
        assert truth["low"] <= truth["mean"] <= truth["high"] < 0  # Pendulum rewards are ≤ 0
        assert set(policy["estimates"]) == {"fqe", "pdis", "wpdis", "dr"}
        for estimate in policy["estimates"].values():
            assert estimate["low"] <= estimate["estimate"] <= estimate["high"]
    truths = np.array([p["true_value"]["mean"] for p in result["policies"]])
    for name, metrics in result["selection"].items():
        assert set(metrics) == {"spearman", "regret@1", "regret@2", "sharpe@2"}
        assert metrics["regret@2"] == 0.0  # both candidates are in the top 2
        # the selection is computed from the reported estimates and true values
        estimates = np.array([p["estimates"][name]["estimate"] for p in result["policies"]])
        chosen = truths[np.argmax(estimates)]
        np.testing.assert_allclose(metrics["regret@1"], truths.max() - chosen, atol=1e-6)
        agree = (estimates[0] - estimates[1]) * (truths[0] - truths[1]) > 0
        np.testing.assert_allclose(metrics["spearman"], 1.0 if agree else -1.0, atol=1e-9)


def test_ope_command_table(bc_run, capsys):
    """Without --json the command prints the estimates table and the selection table."""
    collect(
        "Pendulum-v1",
        ["pendulum-swingup:noise=0.5"],
        200,
        dataset_id="valorl/t-v0",
        reference_episodes=1,
        progress=False,
    )
    argv = ["ope", bc_run, "--dataset", "valorl/t-v0", "--fqe-steps", "20", "--hidden-dims", "8"]
    assert main([*argv, "--episodes", "1", "--bootstrap-reps", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "off-policy evaluation on valorl/t-v0" in printed
    assert "policy selection by each estimator" in printed
    assert f"behaviour log-probabilities: {STORED}" in printed


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda run: ["missing-run", "--dataset", "valorl/mc-v0"], "'missing-run' not found"),
        (
            lambda run: [run, "--dataset", "valorl/mc-v0"],
            "was trained on Pendulum-v1, but dataset 'valorl/mc-v0' comes from "
            "MountainCarContinuous-v0",
        ),
        (lambda run: [run, "--dataset", "valorl/mc-v0", "--target-noise", "0"], "--target-noise"),
    ],
)
def test_ope_bad_input_is_a_one_line_error(bc_run, capsys, make_args, message):
    collect(
        "MountainCarContinuous-v0",
        ["random"],
        20,
        dataset_id="valorl/mc-v0",
        reference_episodes=1,
        progress=False,
    )
    assert main(["ope", *make_args(bc_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("valorl: error:") and message in err[0], err
