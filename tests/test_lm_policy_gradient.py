"""The unified policy gradient estimator part by part on hand-computed gradients, SFT and PPO
against their textbook losses, GRPO advantages and HPT's weights by hand, and TD(λ) targets by
hand on two completions of different lengths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valorl.errors import ValorlError
from valorl.lm.policy_gradient import (
    ESTIMATORS,
    GRPO,
    HPT_RL,
    PPO,
    SFT,
    Estimator,
    advantages,
    hpt_coefficients,
    sft_loss,
    surrogate_loss,
)
from valorl.lm.value_targets import td_lambda_targets, value_loss

# A two-token vocabulary and a policy of one logit vector z = (log 3, 0), the same at every
# position: π = (3/4, 1/4). ∇_z log π(a) = onehot(a) − π, so with u = (1, −1)
#   g0 = ∇log π(0) = (1/4, −1/4) = u/4,   g1 = ∇log π(1) = (−3/4, 3/4) = −3u/4.
# Two sequences padded to T = 2: seq 0 = tokens (0, 1), seq 1 = token (1) then padding, so 3
# valid tokens, with π_θ = 3/4, 1/4, 1/4. The rollout policy gave them π_old = 3/8, 1/2, 1/2:
# ratios π_θ/π_old = 2, 1/2, 1/2. Advantages A = (2, −1), ε = 0.2.
Z = jnp.array([np.log(3.0), 0.0])
TOKENS = jnp.array([[0, 1], [1, 0]])
MASK = jnp.array([[1.0, 1.0], [1.0, 0.0]])
LOGP_OLD = jnp.log(jnp.array([[3 / 8, 1 / 2], [1 / 2, 1.0]]))  # the last one is padding
ADV = jnp.array([2.0, -1.0])
U = np.array([1.0, -1.0])


def _logp(z: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(z)[TOKENS]


def _grad(estimator: Estimator, adv: jax.Array = ADV) -> np.ndarray:
    return np.asarray(
        jax.grad(lambda z: surrogate_loss(estimator, _logp(z), LOGP_OLD, adv, MASK)[0])(Z)
    )


@pytest.mark.parametrize(
    ("denominator", "coefficient"),
    [
        # w = 1: Σ A·w·∇log π = 2(g0 + g1) − g1 = 2g0 + g1 = u/2 − 3u/4 = −u/4; loss = −Σ/3
        ("current", 1 / 12),
        # w = ratio: 2(2·g0 + g1/2) − g1/2 = 4g0 + g1/2 = u − 3u/8 = 5u/8
        ("old", -5 / 24),
        # w = π_θ: 2(3/4·g0 + 1/4·g1) − 1/4·g1 = 3/8·u − 3/8·u + 3/16·u = 3u/16
        ("one", -1 / 16),
    ],
)
def test_denominator_hand_gradients(denominator, coefficient):
    """1/π_ref: the score function (current), the importance ratio (old), ∇π itself (one)."""
    grad = _grad(Estimator(mask="none", denominator=denominator, advantage="reward"))
    np.testing.assert_allclose(grad, coefficient * U, rtol=1e-5)


@pytest.mark.parametrize(
    ("mask", "coefficient", "clipped"),
    [
        # nothing masked: the "old" gradient above
        ("none", -5 / 24, 0.0),
        # token 0 of seq 0 (ratio 2 > 1.2, A > 0) and seq 1 (ratio 1/2 < 0.8, A < 0) are
        # masked; token 1 of seq 0 (ratio 1/2, A > 0) is not: PPO's min keeps its gradient.
        # Σ = 2·(1/2)·g1 = −3u/4
        ("clip", 1 / 4, 2 / 3),
        # seq 0's sequence ratio is exp((log 2 + log 1/2)/2) = 1: kept whole, although its
        # first token alone would be clipped; seq 1's is 1/2 with A < 0: masked.
        # Σ = 2(2·g0 + g1/2) = u − 3u/4 = u/4
        ("sequence-clip", -1 / 12, 1 / 3),
    ],
)
def test_stabilisation_mask_hand_gradients(mask, coefficient, clipped):
    estimator = Estimator(mask=mask, denominator="old", advantage="reward")
    np.testing.assert_allclose(_grad(estimator), coefficient * U, rtol=1e-5)
    _, metrics = surrogate_loss(estimator, _logp(Z), LOGP_OLD, ADV, MASK)
    np.testing.assert_allclose(metrics["pg/clipped_fraction"], clipped, rtol=1e-6)
    np.testing.assert_allclose(metrics["pg/ratio_mean"], 1.0, rtol=1e-6)  # (2 + 1/2 + 1/2)/3


def test_clip_masks_the_other_tokens_when_advantages_flip():
    """With A = (−2, 1), a ratio of 2 with A < 0 and of 1/2 with A > 0 are inside PPO's
    pessimistic bound and keep their gradient, while token 1 of seq 0 (ratio 1/2, A < 0) is
    now masked: Σ = −2·2·g0 + 1·(1/2)·g1 = −u − 3u/8 = −11u/8, loss gradient 11u/24."""
    estimator = Estimator(mask="clip", denominator="old", advantage="reward")
    np.testing.assert_allclose(_grad(estimator, -ADV), 11 / 24 * U, rtol=1e-5)


@pytest.mark.parametrize(
    ("advantage", "coefficient"),
    [
        # with w = 1 the gradient is −(A0·(g0 + g1) + A1·g1)/3 = (A0/6 + A1/4)·u
        ("constant", 1 / 6 + 1 / 4),  # A = (1, 1)
        ("reward", 1 / 6),  # A = (1, 0)
        ("group", 1 / 12 - 1 / 8),  # mean 1/2: A = (1/2, −1/2)
        # unbiased std of (1, 0) = sqrt(((1/2)² + (1/2)²) / (2 − 1)) = 1/√2: A = ±1/√2
        ("group-std", (1 / 6 - 1 / 4) / np.sqrt(2)),
    ],
)
def test_advantage_hand_gradients(advantage, coefficient):
    """The two sequences are one group of n = 2 rollouts with rewards (1, 0)."""
    estimator = Estimator(mask="none", denominator="current", advantage=advantage)
    adv = advantages(estimator, jnp.array([[1.0, 0.0]])).reshape(-1)
    np.testing.assert_allclose(_grad(estimator, adv), coefficient * U, rtol=1e-5)


def test_sequence_sum_divides_by_padded_length_per_sequence():
    """sequence-sum: mean over B = 2 sequences of a sum over tokens / T = 2, i.e. Σ/4 instead
    of the token mean's Σ/3: with w = 1 the gradient is −(−u/4)/4 = u/16."""
    estimator = Estimator("none", "current", "reward", aggregation="sequence-sum")
    np.testing.assert_allclose(_grad(estimator), U / 16, rtol=1e-5)


def test_padding_with_infinite_log_probabilities_leaks_no_nan():
    """A model may give padding log-probability −inf; the masked positions must not matter:
    the gradient is finite and the same as with finite log-probabilities there."""
    padded = jnp.where(MASK > 0, 0.0, -jnp.inf)
    for estimator in (GRPO, HPT_RL, SFT):

        def grad(padding, e=estimator):
            loss = lambda z: surrogate_loss(e, _logp(z) + padding, LOGP_OLD, ADV, MASK)[0]
            return jax.grad(loss)(Z)

        assert np.isfinite(grad(padded)).all()
        np.testing.assert_allclose(grad(padded), grad(jnp.zeros_like(padded)), atol=1e-7)
    sft = lambda padding: jax.grad(lambda z: sft_loss(_logp(z) + padding, MASK))(Z)
    assert np.isfinite(sft(padded)).all()
    np.testing.assert_allclose(sft(padded), sft(jnp.zeros_like(padded)), atol=1e-7)


def _random_batch(seed: int = 0, batch: int = 3, length: int = 4, vocab: int = 5):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(batch, length, vocab)), jnp.float32)
    old_logits = logits + 0.5 * jnp.asarray(rng.normal(size=logits.shape), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, vocab, (batch, length)))
    mask = jnp.asarray(np.arange(length)[None] < np.array([length, 2, 3])[:batch, None], float)
    adv = jnp.asarray(rng.normal(size=batch), jnp.float32)

    def logp_of(lg):
        return jnp.take_along_axis(jax.nn.log_softmax(lg), tokens[..., None], -1)[..., 0]

    return logits, logp_of, logp_of(old_logits), mask, adv


def test_sft_gradient_is_cross_entropy_gradient():
    logits, logp_of, _, mask, _ = _random_batch()

    def cross_entropy(lg):
        return -jnp.sum(logp_of(lg) * mask) / jnp.sum(mask)

    def sft_surrogate(lg):
        return surrogate_loss(SFT, logp_of(lg), None, jnp.ones(3), mask)[0]

    expected = jax.grad(cross_entropy)(logits)
    np.testing.assert_allclose(jax.grad(sft_surrogate)(logits), expected, atol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda lg: sft_loss(logp_of(lg), mask))(logits), expected)
    np.testing.assert_allclose(sft_loss(logp_of(logits), mask), cross_entropy(logits))


def test_ppo_gradient_is_clipped_objective_gradient():
    logits, logp_of, logp_old, mask, adv = _random_batch(seed=1)

    def ppo_objective(lg):
        ratio = jnp.exp(logp_of(lg) - logp_old)
        a = adv[:, None]
        clipped = jnp.clip(ratio, 0.8, 1.2)
        return -jnp.sum(jnp.minimum(ratio * a, clipped * a) * mask) / jnp.sum(mask)

    # jitted with the estimator static, as a training step would
    loss_fn = jax.jit(surrogate_loss, static_argnums=0)
    grad = jax.grad(lambda lg: loss_fn(PPO, logp_of(lg), logp_old, adv, mask)[0])(logits)
    np.testing.assert_allclose(grad, jax.grad(ppo_objective)(logits), atol=1e-6)
    ratio = jnp.exp(logp_of(logits) - logp_old)
    a = adv[:, None]
    binding = (jnp.clip(ratio, 0.8, 1.2) * a < ratio * a).astype(jnp.float32)
    _, metrics = loss_fn(PPO, logp_of(logits), logp_old, adv, mask)
    assert 0 < float(metrics["pg/clipped_fraction"]) < 1  # the example exercises both sides
    np.testing.assert_allclose(
        metrics["pg/clipped_fraction"], jnp.sum(binding * mask) / jnp.sum(mask), rtol=1e-6
    )


def test_grpo_group_advantages_by_hand():
    rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    expected_group = [
        [0.5, -0.5, -0.5, 0.5],
        [0.0, 0.0, 0.0, 0.0],
        [-0.25, -0.25, -0.25, 0.75],
    ]
    np.testing.assert_allclose(advantages(HPT_RL, rewards), expected_group, atol=1e-7)
    # unbiased std: group 0: sqrt(4 · 0.25 / 3) = 1/√3, so ±0.5·√3 = ±0.8660;
    # group 1: std 0, advantages 0 (not NaN); group 2: sqrt((3 · 0.0625 + 0.5625) / 3) = 0.5
    std = advantages(GRPO, rewards)
    h = np.sqrt(3) / 2
    np.testing.assert_allclose(
        std, [[h, -h, -h, h], [0, 0, 0, 0], [-0.5, -0.5, -0.5, 1.5]], rtol=1e-5, atol=1e-7
    )
    # one rollout per prompt: no baseline, the reward itself (the released code's convention)
    np.testing.assert_allclose(advantages(GRPO, jnp.array([[1.0], [0.0]])), [[1.0], [0.0]])
    np.testing.assert_allclose(advantages(SFT, rewards), np.ones((3, 4)))


def test_hpt_switch_chooses_sft_exactly_at_or_below_the_gate():
    correct = jnp.array([0, 1, 2, 3, 8])
    rl, sft = hpt_coefficients(correct, n=8, gate=0)
    np.testing.assert_array_equal(sft, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(rl, [0, 1, 1, 1, 1])
    rl, sft = hpt_coefficients(correct, n=8, gate=2)
    np.testing.assert_array_equal(sft, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(rl, [0, 0, 0, 1, 1])


def test_hpt_soft_is_the_released_table():
    # n = 7: the released table row (correct + 1) exactly
    rl, sft = hpt_coefficients(jnp.arange(8), n=7, gate=0, mode="soft")
    np.testing.assert_array_equal(rl, [0, 0.125, 0.25, 0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(sft, [1, 0.5, 0.25, 0.125, 0, 0, 0, 0])
    # n = 14: ⌊7c/14 + 1/2⌋ = 0, 1, 1, 4, 7 correct of 7 for c = 0, 1, 2, 7, 14
    rl, sft = hpt_coefficients(jnp.array([0, 1, 2, 7, 14]), n=14, gate=0, mode="soft")
    np.testing.assert_array_equal(rl, [0, 0.125, 0.125, 1, 1])
    np.testing.assert_array_equal(sft, [1, 0.5, 0.5, 0, 0])


# Two completions, T = 3. Seq A: 3 valid tokens, values (0.2, 0.4, 0.6), reward 1 after the
# last. Seq B: 2 valid tokens, values (0.5, 1.0), reward 2 after its last; its padding
# position holds a value 7 and a reward 5 that must be ignored.
VALUES = jnp.array([[0.2, 0.4, 0.6], [0.5, 1.0, 7.0]])
REWARDS = jnp.array([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
VMASK = jnp.array([[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize(
    ("gamma", "lam", "expected"),
    [
        # G_t = r_t + γ((1 − λ)V_{t+1} + λG_{t+1}), terminal after the last token.
        # λ = 1/2, A: G2 = 1; G1 = 0.5·0.6 + 0.5·1 = 0.8; G0 = 0.5·0.4 + 0.5·0.8 = 0.6
        #          B: G1 = 2; G0 = 0.5·1.0 + 0.5·2 = 1.5
        (1.0, 0.5, [[0.6, 0.8, 1.0], [1.5, 2.0, 0.0]]),
        # λ = 1: the final reward everywhere
        (1.0, 1.0, [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]]),
        # λ = 0: r_t + V_{t+1}, with V = 0 after the last token
        (1.0, 0.0, [[0.4, 0.6, 1.0], [1.0, 2.0, 0.0]]),
        # γ = 0.9, λ = 1/2, A: G1 = 0.9(0.3 + 0.5) = 0.72; G0 = 0.9(0.2 + 0.36) = 0.504
        #                   B: G0 = 0.9(0.5 + 1.0) = 1.35
        (0.9, 0.5, [[0.504, 0.72, 1.0], [1.35, 2.0, 0.0]]),
    ],
)
def test_td_lambda_targets_by_hand(gamma, lam, expected):
    targets = td_lambda_targets(VALUES, REWARDS, VMASK, gamma=gamma, lam=lam)
    np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_td_lambda_targets_are_gae_plus_values():
    """The same targets from GAE's recursion (Schulman et al. 2016), written as a loop."""
    values, rewards, mask = np.asarray(VALUES), np.asarray(REWARDS), np.asarray(VMASK)
    gamma, lam = 0.95, 0.9
    expected = np.zeros_like(values)
    for b in range(2):
        length, gae = int(mask[b].sum()), 0.0
        for t in reversed(range(length)):
            next_value = values[b, t + 1] if t + 1 < length else 0.0
            gae = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * gae
            expected[b, t] = gae + values[b, t]
    targets = td_lambda_targets(VALUES, REWARDS, VMASK, gamma=gamma, lam=lam)
    np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_value_loss_is_half_masked_mse_without_target_gradient():
    predictions = jnp.array([[1.0, 2.0, 3.0]])
    targets = jnp.array([[0.0, 2.0, 5.0]])
    mask = jnp.array([[1, 1, 0]])
    # 0.5 · ((1 − 0)² + (2 − 2)²) / 2 = 0.25; the masked (3 − 5)² is ignored
    np.testing.assert_allclose(value_loss(predictions, targets, mask), 0.25)
    g_pred, g_target = jax.grad(value_loss, argnums=(0, 1))(predictions, targets, mask)
    np.testing.assert_allclose(g_pred, [[0.5, 0.0, 0.0]])
    np.testing.assert_array_equal(g_target, np.zeros((1, 3)))


@pytest.mark.parametrize(
    ("build", "word"),
    [
        (lambda: Estimator(mask="trust-region", denominator="old", advantage="reward"), "mask"),
        (lambda: Estimator(mask="clip", denominator="behaviour", advantage="reward"), "denom"),
        (lambda: Estimator(mask="clip", denominator="old", advantage="gae"), "advantage"),
        (lambda: Estimator("clip", "old", "reward", aggregation="sum"), "aggregation"),
        (lambda: Estimator("clip", "old", "reward", clip_epsilon=0.0), "clip_epsilon"),
        (lambda: hpt_coefficients(jnp.array([0]), n=8, gate=0, mode="hard"), "HPT mode"),
    ],
)
def test_unknown_parts_are_one_line_errors(build, word):
    with pytest.raises(ValorlError, match=word) as error:
        build()
    assert "\n" not in str(error.value)


def test_named_settings():
    assert ESTIMATORS["grpo"] == Estimator("clip", "old", "group-std")
    assert ESTIMATORS["hpt-rl"] == Estimator("none", "old", "group", aggregation="sequence-sum")
    assert len({hash(e) for e in ESTIMATORS.values()}) == len(ESTIMATORS)
