"""Critic heads, ensembles and spectral normalisation on hand-computed examples."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from valorl.agents.base import apply, create_train_state, grad_step
from valorl.critics import (
    HEADS,
    Categorical,
    Gaussian,
    HLGauss,
    Huber,
    QEnsemble,
    Quantile,
    Scalar,
    TwoHot,
    resolve_support,
    support_from_data,
)
from valorl.critics.heads import quantile_huber
from valorl.data.dataset import Dataset
from valorl.errors import ValorlError
from valorl.nets.mlp import MLP


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# ---- classification heads ---------------------------------------------------------------------


def test_two_hot_splits_mass_between_neighbouring_atoms():
    """Atoms 0, 1, 2, 3: y = 1.25 puts 0.75 on atom 1 and 0.25 on atom 2 (distance weights)."""
    head = TwoHot(bins=4, vmin=0.0, vmax=3.0)
    np.testing.assert_allclose(head.target_probs(jnp.array(1.25)), [0, 0.75, 0.25, 0], atol=1e-6)
    np.testing.assert_allclose(head.target_probs(jnp.array(2.0)), [0, 0, 1, 0], atol=1e-6)


def test_hl_gauss_probabilities_by_hand():
    """4 bins over [0, 4] (width 1), σ = 0.75·1, y = 1.5: bin i gets Φ((e_{i+1}−y)/σ) −
    Φ((e_i−y)/σ), renormalised by Φ((4−y)/σ) − Φ((0−y)/σ)."""
    head = HLGauss(bins=4, vmin=0.0, vmax=4.0, sigma_ratio=0.75)
    y, sigma = 1.5, 0.75
    cdf = [phi((e - y) / sigma) for e in (0, 1, 2, 3, 4)]
    expected = np.diff(cdf) / (cdf[-1] - cdf[0])
    np.testing.assert_allclose(head.target_probs(jnp.array(y)), expected, rtol=1e-5)
    np.testing.assert_allclose(head.atoms(), [0.5, 1.5, 2.5, 3.5])


@pytest.mark.parametrize(
    "head",
    [
        HLGauss(bins=51, vmin=-10.0, vmax=10.0),
        TwoHot(bins=51, vmin=-10.0, vmax=10.0),
        Categorical(bins=51, vmin=-10.0, vmax=10.0),
    ],
)
def test_histogram_targets_sum_to_one_and_recover_the_value(head):
    """Target probabilities sum to 1, and their expectation over the atoms recovers a target
    inside the support (exactly for two-hot; up to the Gaussian's truncation for HL-Gauss)."""
    targets = jnp.array([-7.3, -0.2, 0.0, 3.14, 6.0])
    probs = head.target_probs(targets)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()
    recovered = (probs * head.atoms()).sum(-1)
    np.testing.assert_allclose(recovered, targets, atol=1e-4)


@pytest.mark.parametrize(
    "head", [HLGauss(bins=11, vmin=0.0, vmax=1.0), TwoHot(bins=11, vmin=0.0, vmax=1.0)]
)
def test_histogram_targets_clip_outside_the_support(head):
    """A target beyond the support is treated as the nearest end."""
    np.testing.assert_allclose(
        head.target_probs(jnp.array(5.0)), head.target_probs(jnp.array(1.0)), atol=1e-7
    )
    np.testing.assert_allclose(
        head.target_probs(jnp.array(-3.0)), head.target_probs(jnp.array(0.0)), atol=1e-7
    )


def test_classification_loss_is_cross_entropy_and_value_is_the_expectation():
    """loss = −Σ p_i log softmax(logits)_i; value = Σ softmax(logits)_i · atom_i."""
    head = TwoHot(bins=3, vmin=0.0, vmax=2.0)
    logits = jnp.array([0.0, 1.0, 2.0])
    softmax = np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum()
    np.testing.assert_allclose(head.value(logits), softmax @ [0, 1, 2], rtol=1e-6)
    # y = 0.5: half on atom 0, half on atom 1
    expected = -(0.5 * np.log(softmax[0]) + 0.5 * np.log(softmax[1]))
    np.testing.assert_allclose(head.loss(logits, jnp.array(0.5)), expected, rtol=1e-6)


def test_c51_projection_worked_example():
    """Atoms [0, 1, 2], next probabilities [0.2, 0.5, 0.3], r = 0.5, γ = 0.5: the shifted
    atoms 0.5, 1.0, 1.5 split their mass 0.2 → (0.1, 0.1), 0.5 → atom 1, 0.3 → (0.15, 0.15):
    m = [0.1, 0.75, 0.15]."""
    head = Categorical(bins=3, vmin=0.0, vmax=2.0)
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    target = head.backup(logits, jnp.array(0.5), jnp.array(0.5))
    np.testing.assert_allclose(target, [0.1, 0.75, 0.15], atol=1e-6)


def test_c51_projection_clips_at_the_support_and_is_vectorised():
    """r = 2, γ = 1 shifts every atom to ≥ 2: all mass lands on the top atom; a batch of
    different rewards projects row by row."""
    head = Categorical(bins=3, vmin=0.0, vmax=2.0)
    logits = jnp.log(jnp.array([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]]))
    target = head.backup(logits, jnp.array([2.0, 0.5]), jnp.array([1.0, 0.5]))
    np.testing.assert_allclose(target, [[0, 0, 1], [0.1, 0.75, 0.15]], atol=1e-6)


def test_c51_terminal_backup_is_the_reward():
    """At a terminal (discount 0) the target distribution is the reward, two-hot on the atoms,
    whatever the next state's distribution."""
    head = Categorical(bins=5, vmin=-2.0, vmax=2.0)
    target = head.backup(jnp.array([3.0, -1.0, 0.0, 2.0, 1.0]), jnp.array(0.5), jnp.array(0.0))
    np.testing.assert_allclose(target, [0, 0, 0.5, 0.5, 0], atol=1e-6)


# ---- quantile and Gaussian heads --------------------------------------------------------------


def test_quantile_huber_is_asymmetric():
    """κ = 1, τ = 0.9: ρ(+1) = 0.9·½, ρ(−1) = 0.1·½, ρ(+3) = 0.9·(3 − ½) (linear beyond κ)."""
    values = quantile_huber(jnp.array([1.0, -1.0, 3.0]), 0.9, 1.0)
    np.testing.assert_allclose(values, [0.45, 0.05, 2.25], rtol=1e-6)


def test_quantile_loss_minimiser_is_the_quantile():
    """Minimising the quantile loss of one estimate over samples 0..99 gives the τ-quantile
    (κ small, so the Huber part does not blur it)."""
    samples = jnp.arange(100.0)
    loss = lambda theta: quantile_huber(samples - theta, 0.9, 1e-3).mean()
    grid = jnp.linspace(0.0, 99.0, 991)
    best = grid[jnp.argmin(jax.vmap(loss)(grid))]
    assert 88.5 <= float(best) <= 90.5


def test_quantile_head_value_loss_and_backup():
    """Value is the mean of the quantiles; the scalar loss sums ρ over estimates; the backup
    shifts and scales every quantile."""
    head = Quantile(bins=2, huber_delta=1.0)  # τ̂ = 0.25, 0.75
    outputs = jnp.array([0.0, 2.0])
    assert float(head.value(outputs)) == 1.0
    # y = 1: u = (1, −1): 0.25·½ + 0.25·½ = 0.25
    np.testing.assert_allclose(head.loss(outputs, jnp.array(1.0)), 0.25, rtol=1e-6)
    np.testing.assert_allclose(head.backup(outputs, jnp.array(1.0), jnp.array(0.5)), [1.0, 2.0])


def test_gaussian_nll_by_hand():
    """μ = 1, σ = 2, y = 3: log 2 + (2²)/(2·4) + ½ log 2π."""
    head = Gaussian()
    outputs = jnp.array([1.0, math.log(2.0)])
    expected = math.log(2.0) + 4.0 / 8.0 + 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(head.loss(outputs, jnp.array(3.0)), expected, rtol=1e-6)
    assert float(head.value(outputs)) == 1.0


def test_gaussian_backup_scales_mean_and_spread():
    """Target N(r + γμ', (γσ')²), and its cross-entropy exceeds the scalar NLL by σ_t²/2σ²."""
    head = Gaussian()
    target = head.backup(jnp.array([2.0, math.log(3.0)]), jnp.array(1.0), jnp.array(0.5))
    np.testing.assert_allclose(target, [2.0, 1.5], rtol=1e-6)
    outputs = jnp.array([1.0, 0.0])
    extra = head.backup_loss(outputs, target) - head.loss(outputs, jnp.array(2.0))
    np.testing.assert_allclose(extra, 1.5**2 / 2, rtol=1e-5)


@pytest.mark.parametrize(
    "head", [Categorical(bins=11, vmin=-5.0, vmax=5.0), Quantile(bins=4), Gaussian()]
)
def test_backup_of_a_point_mass_equals_the_scalar_loss(head):
    """A distributional target with no spread trains exactly like the scalar target it equals."""
    key = jax.random.key(0)
    outputs = jax.random.normal(key, (3, head.out_dim))
    y = jnp.array([-1.5, 0.0, 2.5])
    if isinstance(head, Categorical):
        point = head.target_probs(y)
    elif isinstance(head, Quantile):
        point = jnp.repeat(y[:, None], 4, axis=1)
    else:
        point = jnp.stack([y, jnp.zeros(3)], -1)
    np.testing.assert_allclose(head.backup_loss(outputs, point), head.loss(outputs, y), rtol=1e-5)


def test_scalar_and_huber_losses():
    """MSE is (q − y)²; Huber is ½u² within δ and δ(|u| − δ/2) beyond."""
    outputs = jnp.array([[1.0], [5.0]])
    y = jnp.array([0.5, 1.0])
    np.testing.assert_allclose(Scalar().loss(outputs, y), [0.25, 16.0])
    np.testing.assert_allclose(Huber(huber_delta=1.0).loss(outputs, y), [0.125, 3.5])


def test_every_head_broadcasts_over_an_ensemble():
    """Outputs (members, batch, out_dim) against targets (batch,) give losses (members, batch)
    and values (members, batch): the shape every agent relies on."""
    for name, head in HEADS.items():
        head = resolve_support(head, -1.0, 1.0)
        outputs = jax.ShapeDtypeStruct((3, 5, head.out_dim), jnp.float32)
        target = jax.ShapeDtypeStruct((5,), jnp.float32)
        assert jax.eval_shape(head.loss, outputs, target).shape == (3, 5), name
        assert jax.eval_shape(head.value, outputs).shape == (3, 5), name


# ---- supports ------------------------------------------------------------------------------


def test_support_from_data_fits_the_returns():
    """Returns in [−10, 30] widen by 10% of the span (4) on each side: [−14, 34]; clipped to
    what the rewards allow, [min(r, 0), max(r, 0)] / (1 − γ)."""
    returns = np.array([-10.0, 0.0, 30.0])
    # rewards in [−2, 2] allow [−20, 20]: the upper end is clipped
    assert support_from_data(returns, np.array([-2.0, 2.0]), 0.9) == pytest.approx((-14.0, 20.0))
    # rewards in [−1, 5] allow [−10, 50]: the lower end is clipped
    assert support_from_data(returns, np.array([-1.0, 5.0]), 0.9) == pytest.approx((-10.0, 34.0))


def test_support_from_data_is_tight_for_a_one_off_bonus():
    """A goal bonus of 100 once per episode: the reward bound 100/(1 − γ) = 10,000 would waste
    the bins; the data's returns keep the support near [−1, 100]."""
    from conftest import synthetic_dataset

    data = synthetic_dataset(n=100, episode_len=50)  # the second episode terminates
    assert data.terminals[99] and not data.terminals[49]
    rewards = np.full(100, -0.01)
    rewards[99] = 100.0  # the bonus on reaching the goal
    data = dataclasses.replace(data, rewards=rewards)
    vmin, vmax = support_from_data(data.returns_to_go(0.99), rewards, 0.99)
    assert -15 < vmin < 0 and 100 < vmax < 115


def test_resolve_support_fills_only_unset_ends():
    head = resolve_support(HLGauss(vmax=3.0), -2.0, 10.0)
    assert (head.vmin, head.vmax) == (-2.0, 3.0)
    assert resolve_support(Scalar(), -2.0, 1.0) == Scalar()


def test_returns_to_go_by_hand():
    """γ = 0.5. A terminated episode r = (1, 2, 4): G = (1 + 0.5·(2 + 0.5·4), 2 + 0.5·4, 4) =
    (3, 4, 4). A truncated one r = (2, 2) continues at its mean 2: tail 2/(1 − 0.5) = 4, so
    G_2 = 2 + 0.5·4 = 4 and G_1 = 2 + 0.5·4 = 4."""
    data = Dataset(
        observations=np.zeros((5, 1)),
        actions=np.zeros((5, 1)),
        rewards=np.array([1.0, 2.0, 4.0, 2.0, 2.0]),
        next_observations=np.zeros((5, 1)),
        terminals=np.array([0, 0, 1, 0, 0]),
        timeouts=np.array([0, 0, 0, 0, 1]),
    )
    np.testing.assert_allclose(data.returns_to_go(0.5), [3.0, 4.0, 4.0, 4.0, 4.0])
    # γ = 1: no (unbounded) tail, just the rewards still to come
    np.testing.assert_allclose(data.returns_to_go(1.0), [7.0, 6.0, 4.0, 4.0, 2.0])


def test_unresolved_support_is_an_error():
    with pytest.raises(ValorlError, match="hl-gauss needs vmin and vmax"):
        HLGauss().atoms()
    with pytest.raises(ValorlError, match=r"vmin .* must be below vmax"):
        TwoHot(vmin=1.0, vmax=1.0)


# ---- ensembles ---------------------------------------------------------------------------------

VALUES = jnp.array([[1.0, 5.0], [3.0, 2.0], [2.0, 8.0], [4.0, 4.0]])  # (members=4, batch=2)


def test_min_mean_and_pessimistic_reductions():
    """min and mean over members; mean − k·std with the population std."""
    key = jax.random.key(0)
    np.testing.assert_allclose(QEnsemble(4).reduce(VALUES, key), [1.0, 2.0])
    np.testing.assert_allclose(QEnsemble(4, "mean").reduce(VALUES, key), [2.5, 4.75])
    pess = QEnsemble(4, "pessimistic", q_pessimism=2.0).reduce(VALUES, key)
    std = np.std(np.asarray(VALUES), axis=0)
    np.testing.assert_allclose(pess, np.array([2.5, 4.75]) - 2 * std, rtol=1e-6)


def test_subset_min_with_a_fixed_key():
    """REDQ's subset-min takes the min over the same 2 random members for the whole batch:
    reproducible for a key, and over many keys every member gets drawn."""
    ensemble = QEnsemble(4, "subset-min", q_subset=2)
    key = jax.random.key(7)
    members = np.asarray(ensemble.members(key))
    assert len(set(members.tolist())) == 2
    np.testing.assert_allclose(ensemble.reduce(VALUES, key), np.asarray(VALUES)[members].min(0))
    np.testing.assert_allclose(ensemble.reduce(VALUES, key), ensemble.reduce(VALUES, key))
    drawn = {int(m) for k in jax.random.split(key, 50) for m in ensemble.members(k)}
    assert drawn == {0, 1, 2, 3}


def test_select_follows_the_minimum_member():
    """The member a distributional backup follows is the argmin of the members looked at."""
    np.testing.assert_array_equal(QEnsemble(4).select(VALUES, jax.random.key(0)), [0, 1])
    assert not QEnsemble(4, "mean").picks_a_member


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_qs=0), "--num-qs must be at least 1"),
        (dict(num_qs=2, q_reduce="subset-min", q_subset=3), "--q-subset must be between 1"),
        (dict(num_qs=1, q_reduce="pessimistic"), "pessimistic reduction needs --num-qs"),
    ],
)
def test_ensemble_validation(kwargs, message):
    with pytest.raises(ValorlError, match=message):
        QEnsemble(**kwargs)


# ---- spectral normalisation --------------------------------------------------------------------


def test_spectral_norm_keeps_the_largest_singular_value_near_one():
    """After some updates (one power-iteration step each), every hidden layer's effective kernel
    W/σ has largest singular value within 2% of 1, while the raw kernels do not."""
    net = MLP((32, 32), 1, spectral_norm=True)
    state = create_train_state(net, jax.random.key(0), (jnp.zeros((1, 5)),), optax.adam(1e-3))
    x = jax.random.normal(jax.random.key(1), (64, 5))
    y = jax.random.normal(jax.random.key(2), (64, 1))
    step = jax.jit(lambda s: grad_step(s, lambda p: (jnp.mean((apply(s, p, x) - y) ** 2), {})))
    for _ in range(30):
        state, _ = step(state)
    hidden = np.asarray(x, np.float64)
    for layer in ("SpectralDense_0", "SpectralDense_1"):
        kernel = np.asarray(state.params[layer]["kernel"], np.float64)
        u = np.asarray(state.extra["spectral"][layer]["u"], np.float64)
        v = kernel @ u / np.linalg.norm(kernel @ u)
        u_next = kernel.T @ v / np.linalg.norm(kernel.T @ v)
        sigma = v @ kernel @ u_next
        top = np.linalg.svd(kernel / sigma, compute_uv=False)[0]
        assert abs(top - 1.0) < 0.02, (layer, top)
        assert abs(np.linalg.svd(kernel, compute_uv=False)[0] - 1.0) > 0.1
        bias = np.asarray(state.params[layer]["bias"], np.float64)
        hidden = np.maximum(hidden @ (kernel / sigma) + bias, 0.0)
    # the network applies exactly those normalised kernels (the output layer is not normalised)
    out = state.params["Dense_0"]
    expected = hidden @ np.asarray(out["kernel"]) + np.asarray(out["bias"])
    np.testing.assert_allclose(apply(state, state.params, x), expected, rtol=1e-4, atol=1e-5)


def test_spectral_norm_vectors_advance_only_in_grad_step():
    """Applying the network never changes u; each grad_step advances it."""
    net = MLP((8,), 1, spectral_norm=True)
    state = jax.jit(lambda key: create_train_state(net, key, (jnp.zeros((1, 3)),), optax.sgd(0.0)))(
        jax.random.key(0)
    )
    u0 = state.extra["spectral"]["SpectralDense_0"]["u"]
    jax.jit(apply)(state, state.params, jnp.ones((2, 3)))
    assert (state.extra["spectral"]["SpectralDense_0"]["u"] == u0).all()
    step = jax.jit(lambda s: grad_step(s, lambda p: (apply(s, p, jnp.ones((2, 3))).sum(), {})))
    state, _ = step(state)
    assert not (state.extra["spectral"]["SpectralDense_0"]["u"] == u0).all()
