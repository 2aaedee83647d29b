"""SAC specifics: the tanh-squashed Gaussian's density, the temperature loss and its gradient
sign, the target entropy, the critic loss by hand, and the update-to-data structure. (The
agent contract, `test_agents_contract.py -k sac`, covers the rest.)"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import TINY, synthetic_dataset

from valorl.agents import SAC, Spec
from valorl.agents.base import apply, grad_step, polyak
from valorl.agents.entropy import temperature_loss
from valorl.data.dataset import sample_batch
from valorl.errors import ValorlError
from valorl.nets.policies import tanh_gaussian_log_prob, tanh_gaussian_sample, tanh_log_det
from valorl.training.fused import init_seeds, seed_keys

OBS_DIM, ACTION_DIM = 3, 2
SPEC = Spec((OBS_DIM,), ACTION_DIM, total_updates=100)


# ---- the squashed Gaussian -------------------------------------------------------------------


def test_tanh_gaussian_density_matches_change_of_variables():
    """In one dimension, integrating exp(log π) over [a1, a2] gives the probability the
    pre-squash Gaussian puts on [atanh a1, atanh a2], and the density integrates to 1."""
    mean, std = 0.4, 0.7
    grid = np.linspace(-0.999, 0.999, 200_001)
    density = np.exp(
        np.asarray(
            tanh_gaussian_log_prob(
                jnp.full((grid.size, 1), mean),
                jnp.full((grid.size, 1), np.log(std)),
                jnp.asarray(grid[:, None], jnp.float32),
            ),
            np.float64,
        )
    )
    gaussian = scipy.stats.norm(mean, std)
    for a1, a2 in [(-0.5, 0.2), (0.1, 0.9), (-0.999, 0.999)]:
        inside = (grid >= a1) & (grid <= a2)
        integral = np.trapezoid(density[inside], grid[inside])
        exact = gaussian.cdf(np.arctanh(a2)) - gaussian.cdf(np.arctanh(a1))
        np.testing.assert_allclose(integral, exact, rtol=2e-3, atol=1e-5)


def test_tanh_gaussian_log_prob_by_hand():
    """log π(a) = Σ_i [log N(u_i; μ_i, σ_i) − log(1 − a_i²)], u = atanh a, in float64 numpy."""
    mean = np.array([[0.3, -1.2], [2.0, 0.0]])
    log_std = np.array([[-0.5, 0.2], [0.1, -1.0]])
    actions = np.array([[0.5, -0.8], [0.95, 0.1]])
    u = np.arctanh(actions)
    expected = (scipy.stats.norm(mean, np.exp(log_std)).logpdf(u) - np.log(1.0 - actions**2)).sum(
        axis=-1
    )
    got = tanh_gaussian_log_prob(jnp.asarray(mean), jnp.asarray(log_std), jnp.asarray(actions))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4)


def test_tanh_gaussian_sample_is_consistent_and_stable():
    """A sample's log-probability equals the density at the sampled action, actions stay in
    (−1, 1), and the log-Jacobian stays finite where tanh(u) rounds to ±1."""
    mean, log_std = jnp.zeros((1000, 2)), jnp.full((1000, 2), -0.3)
    actions, log_prob = tanh_gaussian_sample(jax.random.key(0), mean, log_std)
    assert np.all(np.abs(np.asarray(actions)) < 1.0)
    moderate = np.all(np.abs(np.asarray(actions)) < 0.99, axis=-1)
    np.testing.assert_allclose(
        np.asarray(log_prob)[moderate],
        np.asarray(tanh_gaussian_log_prob(mean, log_std, actions))[moderate],
        rtol=1e-4,
        atol=1e-4,
    )
    u = jnp.array([[0.0, 3.0, -12.0, 30.0]])
    expected = np.sum(np.log1p(-np.tanh(np.float64([0.0, 3.0]))) + np.log1p(np.tanh([0.0, 3.0])))
    expected += 2 * (np.log(2.0) - 12.0 - np.log1p(np.exp(-24.0)))  # |u| large: 2(log 2 − |u|)
    expected += 2 * (np.log(2.0) - 30.0 - np.log1p(np.exp(-60.0)))
    np.testing.assert_allclose(float(tanh_log_det(u)[0]), expected, rtol=1e-5)


# ---- temperature -----------------------------------------------------------------------------


@pytest.mark.parametrize("entropy, target, sign", [(1.0, -2.0, 1.0), (-3.0, -2.0, -1.0)])
def test_temperature_gradient_sign(entropy, target, sign):
    """J(α) = α·(H − H̄): with the entropy above the target the gradient in log α is positive
    (gradient descent lowers α), below it negative; its value is α·(H − H̄)."""
    log_alpha = jnp.log(0.5)
    loss, grad = jax.value_and_grad(
        lambda la: temperature_loss(jnp.exp(la), jnp.float32(entropy), target)
    )(log_alpha)
    np.testing.assert_allclose(float(loss), 0.5 * (entropy - target), rtol=1e-6)
    np.testing.assert_allclose(float(grad), 0.5 * (entropy - target), rtol=1e-6)
    assert np.sign(float(grad)) == sign


@pytest.fixture(scope="module")
def sac():
    """A TINY SAC agent with one initialised seed and a batch of synthetic data."""
    agent = SAC(**TINY["sac"])
    state = jax.tree.map(lambda x: x[0], init_seeds(agent, SPEC)(seed_keys([0])[0]))
    data = synthetic_dataset(obs_dim=OBS_DIM, action_dim=ACTION_DIM).to_batch()
    return agent, state, data


def test_update_moves_temperature_towards_the_target_entropy(sac):
    """One update reports temperature/loss = α·(H − H̄) with H̄ = −|A| by default (H the
    actor's entropy estimate); α falls when the policy's entropy is above the target (the
    default here) and rises when the target is far above it."""
    agent, state, data = sac
    batch = sample_batch(data, jax.random.key(1), agent.batch_size)
    alpha0 = float(agent.alpha(state))
    assert alpha0 == pytest.approx(agent.init_temperature)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    entropy = float(metrics["actor/entropy"])
    assert entropy > -ACTION_DIM
    np.testing.assert_allclose(
        float(metrics["temperature/loss"]), alpha0 * (entropy + ACTION_DIM), rtol=1e-5
    )
    assert float(agent.alpha(new)) < alpha0
    above = dataclasses.replace(agent, target_entropy=100.0)
    moved, _ = jax.jit(above.update)(state, batch, jax.random.key(2))
    assert float(above.alpha(moved)) > alpha0


# ---- critic and update structure ---------------------------------------------------------------


def test_critic_loss_by_hand_at_terminal_transitions(sac):
    """With masks 0 the soft target is the reward alone, so the critic loss is
    Σ_members mean_batch (Q_i(s, a) − r)², computed here from the network outputs."""
    agent, state, data = sac
    batch = sample_batch(data, jax.random.key(3), 32)
    batch = batch.replace(masks=jnp.zeros_like(batch.masks))
    loss, _ = agent.critic_loss(state.critic.params, state, batch, jax.random.key(4))
    q = np.asarray(apply(state.critic, state.critic.params, batch.observations, batch.actions))
    assert q.shape == (2, 32, 1)
    expected = ((q[..., 0] - np.asarray(batch.rewards)) ** 2).mean(axis=1).sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_soft_target_by_hand_bootstraps_from_the_target_critic_with_the_entropy_bonus(sac):
    """With masks 1: y = r + γ·(min_i Q̄_i(s', a') − α·log π(a'|s')) with a' drawn by the key's
    first half (Eq. 3 and 5), from the target critic (here made different from the online
    one); without the entropy backup, y = r + γ·min_i Q̄_i(s', a')."""
    agent, state, data = sac
    state = state.replace(target_critic=jax.tree.map(lambda w: 0.5 * w + 0.1, state.target_critic))
    batch = sample_batch(data, jax.random.key(9), 16)
    batch = batch.replace(masks=jnp.ones_like(batch.masks))
    key = jax.random.key(10)
    mean, log_std = apply(state.actor, state.actor.params, batch.next_observations)
    next_actions, log_prob = tanh_gaussian_sample(jax.random.split(key)[0], mean, log_std)
    next_q = apply(state.critic, state.target_critic, batch.next_observations, next_actions)
    smallest = np.asarray(next_q)[..., 0].min(axis=0)
    online_q = apply(state.critic, state.critic.params, batch.next_observations, next_actions)
    assert not np.allclose(np.asarray(online_q)[..., 0].min(axis=0), smallest)
    alpha, rewards = float(agent.alpha(state)), np.asarray(batch.rewards)
    soft = rewards + agent.discount * (smallest - alpha * np.asarray(log_prob))
    target, _ = jax.jit(agent.critic_target)(state, batch, key)
    np.testing.assert_allclose(np.asarray(target), soft, rtol=1e-5, atol=1e-5)
    plain = dataclasses.replace(agent, backup_entropy=False)
    target, _ = jax.jit(plain.critic_target)(state, batch, key)
    np.testing.assert_allclose(
        np.asarray(target), rewards + agent.discount * smallest, rtol=1e-5, atol=1e-5
    )


def test_utd_takes_several_critic_steps_per_actor_step(sac):
    """utd = 3: one update consumes a (3, B) batch, takes 3 critic steps (each followed by a
    target step) and one actor and one temperature step."""
    agent, state, data = sac
    agent = dataclasses.replace(agent, utd=3)
    assert agent.batches_per_update == 3
    batch = sample_batch(data, jax.random.key(5), agent.batch_size, 3)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(6))
    assert int(new.critic.step) == 3
    assert int(new.actor.step) == 1 and int(new.temperature.step) == 1
    # three Polyak steps of the target from the same start, each towards a newer critic:
    # the target moved, but by far less than the critic did
    before = jax.tree.leaves(state.target_critic)
    after = jax.tree.leaves(new.target_critic)
    critic = jax.tree.leaves(new.critic.params)
    for b, a, c in zip(before, after, critic, strict=True):
        moved, critic_moved = np.abs(a - b).max(), np.abs(c - b).max()
        assert 0 < moved < critic_moved
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_update_is_utd_critic_steps_then_one_actor_step(sac):
    """One update, written out: the key splits into a critic key and an actor key; the critic
    key into `utd` keys, one per critic step on its own batch, each step followed by a Polyak
    step of the target; then the shared actor and temperature step on the last batch."""
    agent, state, data = sac
    agent = dataclasses.replace(agent, utd=2)
    batch = sample_batch(data, jax.random.key(7), agent.batch_size, 2)
    key = jax.random.key(8)

    @jax.jit
    def by_hand(state, batch, key):
        key_critic, key_actor = jax.random.split(key)
        losses = []
        for i, sub_key in enumerate(jax.random.split(key_critic, 2)):
            sub = jax.tree.map(lambda x, i=i: x[i], batch)
            critic, metrics = grad_step(
                state.critic, lambda p, s=state, b=sub, k=sub_key: agent.critic_loss(p, s, b, k)
            )
            target = polyak(critic.params, state.target_critic, agent.tau)
            state = state.replace(critic=critic, target_critic=target)
            losses.append(metrics["loss"])
        actor, temperature, metrics = agent.actor_step(state, sub, key_actor)
        return state.replace(actor=actor, temperature=temperature), jnp.mean(jnp.stack(losses))

    new, metrics = jax.jit(agent.update)(state, batch, key)
    expected, critic_loss = by_hand(state, batch, key)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(metrics["critic/loss"]), float(critic_loss), rtol=1e-6)


def test_a_cosine_actor_schedule_reaches_zero_at_the_end_of_training(sac):
    """With `--actor-lr-schedule cosine` over one update, the first update moves the actor at
    the full rate and the second at rate 0, while the critic keeps learning; held, the
    second moves the actor too. (MOPO and MOBILE default to it, as OfflineRL-Kit.)"""
    agent, _, data = sac
    batch = sample_batch(data, jax.random.key(9), agent.batch_size)
    moved = {}
    for schedule in ("cosine", "constant"):
        cosine = dataclasses.replace(agent, actor_lr_schedule=schedule)
        state = jax.jit(cosine.init, static_argnums=1)(
            jax.random.key(0), dataclasses.replace(SPEC, total_updates=1)
        )
        update = jax.jit(cosine.update)
        first, _ = update(state, batch, jax.random.key(1))
        second, _ = update(first, batch, jax.random.key(2))
        change = lambda a, b: float(
            jax.tree.reduce(jnp.maximum, jax.tree.map(lambda x, y: jnp.abs(x - y).max(), a, b))
        )
        assert change(first.actor.params, state.actor.params) > 0
        assert change(second.critic.params, first.critic.params) > 0
        moved[schedule] = change(second.actor.params, first.actor.params)
    assert moved["cosine"] == 0 and moved["constant"] > 0


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValorlError, match="--utd must be at least 1, got 0"):
        SAC(utd=0)
    with pytest.raises(ValorlError, match="--init-temperature must be positive"):
        SAC(init_temperature=0.0)


def test_the_actors_log_std_is_clipped_where_the_agent_says():
    """SAC keeps RLPD's lower clip (−20); MOPO and MOBILE take OfflineRL-Kit's −5, and a MOPO
    config saved before the field existed reads as it trained (−20). An actor whose raw log σ
    lies far below the clip returns the clip."""
    from valorl.agents import MOBILE, MOPO
    from valorl.config import from_dict, to_dict

    assert SAC().policy_log_std_min == -20.0
    assert MOPO().policy_log_std_min == MOBILE().policy_log_std_min == -5.0
    saved = {k: v for k, v in to_dict(MOPO()).items() if k != "policy_log_std_min"}
    assert from_dict(MOPO, saved).policy_log_std_min == -20.0
    obs = jnp.ones((4, OBS_DIM))
    for clip in (-20.0, -5.0):
        actor = SAC(policy_log_std_min=clip, **TINY["sac"]).init(jax.random.key(0), SPEC).actor
        layers = actor.params["MLP_0"]
        out = f"Dense_{len(layers) - 1}"  # the output layer: (mean, raw log σ) per dimension
        lowered = {**layers, out: {**layers[out], "bias": layers[out]["bias"] - 100.0}}
        _, log_std = apply(actor, {"MLP_0": lowered}, obs)
        np.testing.assert_allclose(np.asarray(log_std), clip)
