"""Loss terms on hand-computed values: the expectile loss, AWR weights and TD3+BC's actor loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.losses import awr_weights, expectile_loss, td3_bc_actor_loss


def _expectile_by_descent(y: np.ndarray, tau: float, steps: int = 400, lr: float = 0.5) -> float:
    """The constant c minimising mean L2^tau(y - c), by plain gradient descent from the mean.

    The loss is piecewise quadratic in c with curvature 2 * mean(weight) <= 2 * max(tau, 1 - tau)
    < 2, so lr = 0.5 is stable and 400 steps converge far below the tolerances used here."""
    y = jnp.asarray(y, jnp.float32)
    grad = jax.grad(lambda c: expectile_loss(y - c, tau).mean())
    c = jax.lax.fori_loop(0, steps, lambda _, c: c - lr * grad(c), y.mean())
    return float(c)


def test_expectile_loss_hand_values():
    """|tau - 1(u < 0)| * u^2 weights positive and negative residuals asymmetrically."""
    diff = jnp.array([-2.0, 1.0, 3.0])
    # tau = 0.7: negative residual gets 1 - 0.7 = 0.3, positive ones 0.7
    expected = [0.3 * 4, 0.7 * 1, 0.7 * 9]  # = [1.2, 0.7, 6.3]
    np.testing.assert_allclose(expectile_loss(diff, 0.7), expected, rtol=1e-6)


def test_expectile_loss_zero_residual_is_zero():
    """A perfect prediction costs nothing whatever tau is (the weight choice at 0 must not leak)."""
    for tau in (0.1, 0.5, 0.9):
        assert float(expectile_loss(jnp.zeros(()), tau)) == 0.0


def test_expectile_half_is_half_squared_error():
    """tau = 0.5 weights both signs by 0.5: the loss is exactly half the squared error."""
    diff = jnp.array([-3.0, -0.5, 0.0, 0.25, 4.0])
    np.testing.assert_allclose(expectile_loss(diff, 0.5), 0.5 * diff**2, rtol=1e-6)


# y = [0, 1, 2, 5]; the tau-expectile c solves
#   tau * sum_{y>c}(y - c) = (1 - tau) * sum_{y<c}(c - y)
#   tau = 0.9, c in (2, 5): 0.9 (5 - c) = 0.1 (3c - 3)        -> 4.8 = 1.2 c -> c = 4
#   tau = 0.5: the mean                                        -> c = 8 / 4 = 2
#   tau = 0.1, c in (0, 1): 0.1 (8 - 3c) = 0.9 c               -> 0.8 = 1.2 c -> c = 2/3
EXPECTILE_SAMPLE = np.array([0.0, 1.0, 2.0, 5.0])


@pytest.mark.parametrize(("tau", "expectile"), [(0.9, 4.0), (0.5, 2.0), (0.1, 2.0 / 3.0)])
def test_minimising_expectile_loss_finds_the_expectile(tau, expectile):
    """Minimising the loss over a constant lands on the hand-solved tau-expectile: this is
    what makes IQL's V(s) an upper expectile of Q(s, a)."""
    assert _expectile_by_descent(EXPECTILE_SAMPLE, tau) == pytest.approx(expectile, abs=1e-4)


def test_expectiles_are_ordered_around_the_mean():
    """On a skewed random sample, the 0.9-expectile lies above the mean and the 0.1 below it,
    and the 0.5-expectile is the mean: the loss's asymmetry points the right way."""
    y = np.random.default_rng(0).exponential(size=64)
    low, mid, high = (_expectile_by_descent(y, tau) for tau in (0.1, 0.5, 0.9))
    assert low < y.mean() - 0.1
    assert mid == pytest.approx(y.mean(), abs=1e-4)
    assert high > y.mean() + 0.1


def test_awr_weights_below_and_above_clip():
    """exp(beta * A) below the clip, max_weight above, so one outlier cannot dominate."""
    advantages = jnp.array([-1.0, 0.0, 1.0, 2.0])
    # beta = 2: exp(-2) = 0.1353, exp(0) = 1, exp(2) = 7.389 (< 20), exp(4) = 54.6 (> 20 -> 20)
    weights = awr_weights(advantages, beta=2.0, max_weight=20.0)
    np.testing.assert_allclose(weights[:3], [np.exp(-2.0), 1.0, np.exp(2.0)], rtol=1e-6)
    assert float(weights[3]) == 20.0


def test_awr_weights_beta_zero_is_uniform():
    """beta = 0 ignores the advantages: every row gets weight 1, i.e. plain behaviour cloning."""
    weights = awr_weights(jnp.array([-5.0, 0.0, 5.0]), beta=0.0, max_weight=100.0)
    np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])


# q = [1, -2, 3], alpha = 2.5: mean|q| = (1 + 2 + 3) / 3 = 2 -> lambda = 2.5 / 2 = 1.25
# mean q = 2 / 3; bc = mean((0.5 - 0)^2, 0, (1 - 0)^2) = 1.25 / 3 = 5 / 12
# loss = -1.25 * 2/3 + 5/12 = -10/12 + 5/12 = -5/12
TD3_Q = jnp.array([1.0, -2.0, 3.0])
TD3_POLICY = jnp.array([[0.5], [0.0], [1.0]])
TD3_DATA = jnp.zeros((3, 1))


def test_td3_bc_actor_loss_hand_values():
    """lambda = alpha / mean|Q|, loss = -lambda * mean Q + mean (pi - a)^2 (TD3+BC Eq. 3-4)."""
    loss, lmbda = td3_bc_actor_loss(TD3_Q, TD3_POLICY, TD3_DATA, alpha=2.5)
    assert float(lmbda) == pytest.approx(1.25, rel=1e-6)
    assert float(loss) == pytest.approx(-5.0 / 12.0, rel=1e-6)


def test_td3_bc_lambda_is_a_constant_for_gradients():
    """d loss / d q_i = -lambda / N exactly: the normaliser gets no gradient. Differentiating
    through mean|Q| would add a term that pushes |Q| down and change the update."""
    grad_q = jax.grad(lambda q: td3_bc_actor_loss(q, TD3_POLICY, TD3_DATA, 2.5)[0])(TD3_Q)
    np.testing.assert_allclose(grad_q, jnp.full(3, -1.25 / 3), rtol=1e-6)
    grad_lambda = jax.grad(lambda q: td3_bc_actor_loss(q, TD3_POLICY, TD3_DATA, 2.5)[1])(TD3_Q)
    np.testing.assert_array_equal(grad_lambda, jnp.zeros(3))


def test_td3_bc_bc_term_gradient():
    """d loss / d pi = 2 (pi - a) / (N * action_dim): the BC term is a plain mean squared error."""
    grad_pi = jax.grad(lambda p: td3_bc_actor_loss(TD3_Q, p, TD3_DATA, 2.5)[0])(TD3_POLICY)
    np.testing.assert_allclose(grad_pi, 2.0 * (TD3_POLICY - TD3_DATA) / 3.0, rtol=1e-6)
