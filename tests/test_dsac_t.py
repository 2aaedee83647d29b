"""DSAC-T (Duan et al. 2025): its three refinements on hand-computed values (the expected-value
target, the twin rule, the clipped sampled target and the ω-scaled gradient), the moving
average of σ, and a short offline run on Pendulum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import TINY, compiled_init, synthetic_dataset

import valorl
from valorl.agents import DSACT, Spec
from valorl.agents.base import apply, grad_step, polyak
from valorl.agents.dsac_t import dsac_t_critic_loss, dsac_t_critic_loss_2025, dsac_t_targets
from valorl.critics import QEnsemble
from valorl.data.dataset import sample_batch
from valorl.training.run_dir import RunDir

SPEC = Spec((3,), 2, total_updates=100)


def test_mean_target_uses_the_expected_next_value():
    """Refinement 1: y_Q = r + γ·m·(Q̄' − α·log π'), whatever the sampled return; y_b is built
    from the sampled return Z' instead (unclipped here: a wide bound)."""
    args = dict(
        q=jnp.zeros(2),
        rewards=jnp.array([1.0, 2.0]),
        discounts=jnp.array([0.9, 0.0]),  # the second transition is terminal
        next_value=jnp.array([10.0, 10.0]),
        next_entropy=jnp.array([1.0, 1.0]),
        bound=jnp.array([100.0, 100.0]),
    )
    y_q, y_b = dsac_t_targets(next_sample=jnp.array([13.0, 5.0]), **args)
    np.testing.assert_allclose(np.asarray(y_q), [1.0 + 0.9 * 9.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y_b), [1.0 + 0.9 * 12.0, 2.0], rtol=1e-6)
    y_q_other, _ = dsac_t_targets(next_sample=jnp.array([-50.0, 70.0]), **args)
    np.testing.assert_array_equal(np.asarray(y_q_other), np.asarray(y_q))


def test_sampled_target_is_clipped_to_mean_plus_minus_xi_b():
    """Refinement 3: y_b = Q + clip(y_z − Q, −ξb, ξb); here ξb = 3 around Q = 5."""
    _, y_b = dsac_t_targets(
        q=jnp.full(3, 5.0),
        rewards=jnp.zeros(3),
        discounts=jnp.ones(3),
        next_value=jnp.zeros(3),
        next_sample=jnp.array([15.0, -5.0, 6.0]),
        next_entropy=jnp.zeros(3),
        bound=jnp.asarray(3.0),
    )
    np.testing.assert_allclose(np.asarray(y_b), [8.0, 2.0, 6.0])


def test_twin_rule_follows_the_member_with_the_smaller_mean():
    """Refinement 2: Q̄' is the smaller of the two means and Z' is drawn from that member (here
    with a tiny σ, while the other member's σ is e³); draws are clipped to ±3σ."""
    agent = DSACT(**TINY["dsac_t"])
    means = jnp.array([[1.0, 5.0, 0.0], [2.0, 4.0, 0.0]])  # (members, batch)
    log_stds = jnp.array([[-5.0, 3.0, -5.0], [3.0, -5.0, 3.0]])
    outputs = jnp.stack([means, log_stds], axis=-1)
    for seed in range(5):
        value, sample = agent.next_value_and_sample(outputs, jax.random.key(seed))
        np.testing.assert_allclose(np.asarray(value), [1.0, 4.0, 0.0])
        assert np.all(np.abs(np.asarray(sample) - [1.0, 4.0, 0.0]) <= 3 * np.exp(-5.0) + 1e-6)
    wide = jnp.stack([jnp.zeros((2, 4000)), jnp.full((2, 4000), np.log(2.0))], axis=-1)
    _, sample = agent.next_value_and_sample(wide, jax.random.key(9))
    z = np.abs(np.asarray(sample)) / 2.0
    assert z.max() <= 3.0 + 1e-6 and np.isclose(z.max(), 3.0)  # some draws hit the clip


def test_mean_ensemble_reduces_the_sampled_returns_too():
    """Without a member choice (q_reduce mean), Z' is the mean of the members' draws."""
    agent = DSACT(**TINY["dsac_t"], ensemble=QEnsemble(num_qs=2, q_reduce="mean"))
    outputs = jnp.stack([jnp.array([[1.0], [3.0]]), jnp.full((2, 1), -5.0)], axis=-1)
    value, sample = agent.next_value_and_sample(outputs, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(value), [2.0])
    np.testing.assert_allclose(np.asarray(sample), [2.0], atol=3 * np.exp(-5.0))


def test_critic_gradient_is_the_adjusted_gradient():
    """Refinement 3: ∂L/∂Q = −ω·(y_Q − Q)/(σ² + ε)/B and ∂L/∂σ = −ω·((y_b − Q)² − σ²)/(σ³ + ε)/B
    per member, with ω = b² + ε; the value is the Gaussian NLL of both targets."""
    eps = 0.1
    mean = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    std = jnp.array([[1.0, 0.5], [2.0, 0.25]])
    y_q = jnp.array([[1.0, 0.0], [2.5, 0.0]])
    y_b = jnp.array([[3.0, 1.0], [0.0, -2.0]])
    b = jnp.array([1.0, 2.0])
    loss = lambda m, s: dsac_t_critic_loss(m, s, y_q, y_b, b, eps).sum()
    value = float(loss(mean, std))
    grad_mean, grad_std = jax.grad(loss, argnums=(0, 1))(mean, std)
    m, s, yq, yb = map(np.asarray, (mean, std, y_q, y_b))
    omega = (np.asarray(b) ** 2 + eps)[:, None]
    np.testing.assert_allclose(np.asarray(grad_mean), -omega * (yq - m) / (s**2 + eps) / 2)
    np.testing.assert_allclose(
        np.asarray(grad_std), -omega * ((yb - m) ** 2 - s**2) / (s**3 + eps) / 2, rtol=1e-6
    )
    nll = ((yq - m) ** 2 + (yb - m) ** 2) / (2 * s**2) + np.log(s)
    np.testing.assert_allclose(value, nll.mean(axis=1).sum(), rtol=1e-6)
    # ω scales the gradient, not the value: doubling b multiplies member 1's by (16+ε)/(4+ε)
    grad_big = jax.grad(lambda m: dsac_t_critic_loss(m, std, y_q, y_b, 2 * b, eps).sum())(mean)
    ratio = np.asarray(grad_big) / np.asarray(grad_mean)
    np.testing.assert_allclose(ratio[:, 0], [(4 + eps) / (1 + eps), (16 + eps) / (4 + eps)])


def test_reference_2025_critic_loss_by_hand():
    """Jingliang-Duan/DSAC-v2 c5105eb: ρ = clip(b²/(σ² + ε), 0.1, 10); value
    E[ρ·(huber(Q − y_Q) + σ·(σ² − huber(Q − y_b))/(σ + ε))]; ∂/∂Q = ρ·huber'(Q − y_Q)/B,
    ∂/∂σ = ρ·(σ² − huber(Q − y_b))/(σ + ε)/B; Huber quadratic within 50, linear beyond."""
    eps = 0.1
    mean = jnp.array([[0.0, 1.0]])
    std = jnp.array([[1.0, 0.5]])
    y_q = jnp.array([[1.0, 101.0]])  # the second error (−100) is past δ = 50: slope −50
    y_b = jnp.array([[3.0, 1.0]])
    b = jnp.array([2.0])
    loss = lambda m, s: dsac_t_critic_loss_2025(m, s, y_q, y_b, b, eps).sum()
    grad_mean, grad_std = jax.grad(loss, argnums=(0, 1))(mean, std)
    ratio = np.clip(4.0 / (np.array([1.0, 0.25]) + eps), 0.1, 10.0)  # [3.636, 10]
    np.testing.assert_allclose(np.asarray(grad_mean)[0], ratio * np.array([-1.0, -50.0]) / 2)
    huber_b = np.array([0.5 * 3.0**2, 0.0])
    spread = (np.array([1.0, 0.25]) - huber_b) / (np.array([1.0, 0.5]) + eps)
    np.testing.assert_allclose(np.asarray(grad_std)[0], ratio * spread / 2, rtol=1e-6)
    huber_q = np.array([0.5, 50.0 * (100.0 - 25.0)])
    value = (ratio * (huber_q + np.array([1.0, 0.5]) * spread)).mean()
    np.testing.assert_allclose(float(loss(mean, std)), value, rtol=1e-6)


def test_std_average_starts_at_the_batch_mean_then_moves_by_tau_b():
    """b starts at the first batch's mean σ (per member), then b ← (1 − τ_b)·b + τ_b·mean σ."""
    agent = DSACT(**TINY["dsac_t"], tau_b=0.25)
    state = compiled_init(agent, SPEC)
    np.testing.assert_array_equal(np.asarray(state.std_average), [-1.0, -1.0])
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    batch = sample_batch(data, jax.random.key(1), 16)
    outputs = jax.jit(apply)(state.critic, state.critic.params, batch.observations, batch.actions)
    sigma = np.exp(np.asarray(agent.critic.mean_log_std(outputs)[1])).mean(axis=1)
    critic_loss = jax.jit(agent.critic_loss)
    _, metrics = critic_loss(state.critic.params, state, batch, jax.random.key(2))
    np.testing.assert_allclose(np.asarray(metrics["std_average"]), sigma, rtol=1e-6)
    moved = state.replace(std_average=jnp.array([2.0, 3.0]))
    _, metrics = critic_loss(state.critic.params, moved, batch, jax.random.key(2))
    np.testing.assert_allclose(
        np.asarray(metrics["std_average"]), 0.75 * np.array([2.0, 3.0]) + 0.25 * sigma, rtol=1e-6
    )


def test_update_structure_and_defaults():
    """One update: `delay_update` critic steps, then one actor, temperature and target step;
    the state's b leaves its sentinel. Defaults are the reference code's."""
    agent = DSACT(**TINY["dsac_t"])
    assert agent.batches_per_update == 2
    assert (agent.clip_xi, agent.epsilon, agent.tau, agent.tau_b) == (3.0, 0.1, 0.005, 0.005)
    assert (agent.actor_lr, agent.critic_lr, agent.temperature_lr) == (1e-4, 1e-4, 3e-4)
    assert np.isclose(agent.init_temperature, np.e) and agent.critic.name == "gaussian"
    state = compiled_init(agent, SPEC)
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    batch = sample_batch(data, jax.random.key(1), 16, 2)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert int(new.critic.step) == 2 and int(new.actor.step) == 1
    assert int(new.temperature.step) == 1
    assert np.all(np.asarray(new.std_average) > 0)
    assert {"critic/q_std", "temperature/alpha", "actor/entropy"} <= set(metrics)


def test_short_offline_run_lowers_critic_loss(pendulum_dataset):
    """400 steps on 2,000 Pendulum transitions: training runs, metrics stay finite, and the
    critic loss of the last chunk is below that of the first."""
    result = valorl.train(
        "dsac_t",
        pendulum_dataset,
        steps=400,
        log_every=80,
        eval_every=400,
        eval_episodes=0,
        progress=False,
        out="run",
        **{**TINY["dsac_t"], "hidden_dims": (32, 32), "batch_size": 64},
    )
    metrics = RunDir(result.path).metrics()
    assert len(metrics) == 5
    for record in metrics:
        for key, value in record.items():
            assert np.all(np.isfinite(value)), key
    assert metrics[-1]["critic/loss"][0] < metrics[0]["critic/loss"][0]


def test_update_is_delayed_critic_steps_then_actor_temperature_and_targets():
    """One update, written out: `delay_update` critic steps (each moving b) with keys split from
    the first half of the update's key, then the shared actor and temperature step on the last
    batch with the second half, then one Polyak step of the target actor and critics."""
    agent = DSACT(**TINY["dsac_t"])
    state = compiled_init(agent, SPEC)
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    batch = sample_batch(data, jax.random.key(3), 16, 2)
    key = jax.random.key(4)

    @jax.jit
    def by_hand(state, batch, key):
        key_critic, key_actor = jax.random.split(key)
        losses = []
        for i, sub_key in enumerate(jax.random.split(key_critic, 2)):
            sub = jax.tree.map(lambda x, i=i: x[i], batch)
            critic, metrics = grad_step(
                state.critic, lambda p, s=state, b=sub, k=sub_key: agent.critic_loss(p, s, b, k)
            )
            state = state.replace(critic=critic, std_average=metrics["std_average"])
            losses.append(metrics["loss"])
        actor, temperature, _ = agent.actor_step(state, sub, key_actor)
        state = state.replace(
            actor=actor,
            temperature=temperature,
            target_actor=polyak(actor.params, state.target_actor, agent.tau),
            target_critic=polyak(state.critic.params, state.target_critic, agent.tau),
        )
        return state, jnp.mean(jnp.stack(losses))

    new, metrics = jax.jit(agent.update)(state, batch, key)
    expected, critic_loss = by_hand(state, batch, key)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(metrics["critic/loss"]), float(critic_loss), rtol=1e-6)
