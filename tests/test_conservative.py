"""CQL (Kumar et al. 2020) and Cal-QL (Nakamoto et al. 2023): the importance-sampled soft
maximum against a numerical integral, the conservative gap's effect on Q, Cal-QL's lower bound
on hand-computed values, Monte-Carlo returns-to-go from the dataset through the trainer, and
short offline runs on Pendulum."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, compiled_init, synthetic_dataset

import valorl
from valorl.agents import CQL, CalQL, Spec, make_agent
from valorl.agents.base import apply
from valorl.data.dataset import Batch, sample_batch
from valorl.data.transforms import Normalizer, fit_normalizer
from valorl.errors import ValorlError
from valorl.losses import cql_logsumexp
from valorl.nets import tanh_gaussian_sample
from valorl.training.run_dir import RunDir
from valorl.training.sources import dataset_rows

SPEC = Spec((3,), 2, total_updates=100)


# ---- the importance-sampled soft maximum -----------------------------------------------------


def test_cql_logsumexp_matches_numerical_integral():
    """With Q a known function of a 2-d action, the estimate minus log(3N) (uniform proposals
    plus two tanh-Gaussian policies, N each) equals log ∫_{[-1,1]²} exp Q(a) da, computed on a
    grid."""

    def q(a):
        return 2.0 - 3.0 * (a[..., 0] - 0.4) ** 2 + 0.5 * a[..., 1]

    n = 20_000
    keys = jax.random.split(jax.random.key(0), 3)
    uniform = jax.random.uniform(keys[0], (n, 2), minval=-1.0, maxval=1.0)
    a1, lp1 = tanh_gaussian_sample(keys[1], jnp.full((n, 2), 0.4), jnp.full((n, 2), -0.5))
    a2, lp2 = tanh_gaussian_sample(keys[2], jnp.full((n, 2), -0.2), jnp.full((n, 2), 0.0))
    policy = jnp.concatenate([a1, a2])
    log_probs = jnp.concatenate([lp1, lp2])
    estimate = float(cql_logsumexp(q(uniform), q(policy), log_probs, action_dim=2))
    estimate -= np.log(3 * n)

    x = np.linspace(-1.0, 1.0, 2001)
    inner_0 = np.trapezoid(np.exp(-3.0 * (x - 0.4) ** 2), x)
    inner_1 = np.trapezoid(np.exp(0.5 * x), x)
    exact = 2.0 + np.log(inner_0) + np.log(inner_1)
    np.testing.assert_allclose(estimate, exact, atol=0.01)


def test_cql_logsumexp_by_hand():
    """One uniform action in 1-d (density 1/2) and one policy action of log-density 0.5:
    value log(2e^0 + 2e^1 + e^{2 − 0.5}) and gradients the normalised importance weights."""
    q_random, q_policy, log_probs = jnp.array([0.0, 1.0]), jnp.array([2.0]), jnp.array([0.5])
    terms = np.array([2.0, 2.0 * np.e, np.exp(1.5)])
    value, grads = jax.value_and_grad(cql_logsumexp, argnums=(0, 1))(
        q_random, q_policy, log_probs, 1
    )
    np.testing.assert_allclose(float(value), np.log(terms.sum()), rtol=1e-6)
    weights = terms / terms.sum()
    np.testing.assert_allclose(np.asarray(grads[0]), weights[:2], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads[1]), weights[2:], rtol=1e-5)
    # temperature T: T·log Σ exp(x / T)
    np.testing.assert_allclose(
        float(cql_logsumexp(q_random, q_policy, log_probs, 1, temperature=2.0)),
        2.0 * np.log(np.sum(np.exp(np.log(terms) / 2.0))),
        rtol=1e-6,
    )


# ---- the conservative gap on a critic network ------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    """A CQL agent with small networks, one initialised state and a batch with returns-to-go."""
    agent = CQL(hidden_dims=(16, 16), batch_size=32, cql_n_actions=4)
    state = compiled_init(agent, SPEC)
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch(discount=0.99)
    batch = sample_batch(data, jax.random.key(1), agent.batch_size)
    proposals = agent.proposals(state, batch, jax.random.key(2))
    return agent, state, batch, proposals


def gap_fn(agent, state, batch, proposals):
    """The summed conservative gap as a function of the critic's parameters."""

    def gap(params):
        q_data = agent.critic.value(apply(state.critic, params, batch.observations, batch.actions))
        q_random = agent.q_at(state.critic, params, batch.observations, proposals.random)
        q_policy = agent.q_at(state.critic, params, batch.observations, proposals.policy)
        return agent.conservative_gap(q_data, q_random, q_policy, proposals.log_probs, batch).sum()

    return gap


def test_cql_gap_pushes_policy_q_below_data_q(setup):
    """Gradient descent on the conservative gap alone lowers Q at the policy's actions relative
    to Q at the dataset's actions (Eq. 4: push down the soft maximum, push up the data)."""
    agent, state, batch, proposals = setup
    gap = jax.jit(gap_fn(agent, state, batch, proposals))
    grad = jax.jit(jax.grad(gap))

    @jax.jit
    def policy_minus_data(params):
        n = agent.cql_n_actions
        q_policy = agent.q_at(state.critic, params, batch.observations, proposals.policy[:, n:])
        q_data = agent.critic.value(apply(state.critic, params, batch.observations, batch.actions))
        return q_policy.mean() - q_data.mean()

    descend = jax.jit(lambda params: jax.tree.map(lambda p, g: p - 0.1 * g, params, grad(params)))
    params = state.critic.params
    before, gap_before = float(policy_minus_data(params)), float(gap(params))
    for _ in range(30):
        params = descend(params)
    assert float(gap(params)) < gap_before - 0.2
    assert float(policy_minus_data(params)) < before - 0.1


def test_cql_critic_loss_is_td_plus_alpha_gap(setup):
    """critic_loss = Σ_i [TD loss_i + α·gap_i]; the Lagrangian variant weighs the gap's excess
    over the target by α·α'."""
    agent, state, batch, proposals = setup
    target = batch.rewards
    gap = float(gap_fn(agent, state, batch, proposals)(state.critic.params))
    outputs = apply(state.critic, state.critic.params, batch.observations, batch.actions)
    td = float(((outputs[..., 0] - target) ** 2).mean(axis=-1).sum())
    loss, metrics = agent.critic_loss(
        state.critic.params, state, batch, target, proposals, alpha_prime=None
    )
    np.testing.assert_allclose(float(loss), td + agent.cql_alpha * gap, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["cql_gap"]), gap / 2, rtol=1e-5)  # mean of 2
    loss, _ = agent.critic_loss(
        state.critic.params, state, batch, target, proposals, alpha_prime=jnp.asarray(0.5)
    )
    excess = gap - 2 * agent.cql_target_action_gap
    np.testing.assert_allclose(float(loss), td + 0.5 * agent.cql_alpha * excess, rtol=1e-5)


def test_cql_td_target_by_hand_single_sample_and_max_backup(setup):
    """y = r + γ·m·Q̄'(s', a') with a' ~ π(·|s') and Q̄' the target critics' min (CQL's
    default); with the max backup (Cal-QL's default), the largest of N such values, less
    α·log π of the chosen a' when the entropy is backed up."""
    agent, state, batch, _ = setup
    state = state.replace(target_critic=jax.tree.map(lambda w: 0.5 * w + 0.1, state.target_critic))
    batch = batch.replace(masks=jnp.ones_like(batch.masks))
    key, alpha = jax.random.key(5), 0.3
    mean, log_std = apply(state.actor, state.actor.params, batch.next_observations)

    def by_hand(n, entropy):
        repeat = lambda x: jnp.repeat(x[:, None], n, axis=1)
        actions, log_probs = tanh_gaussian_sample(
            jax.random.split(key)[0], repeat(mean), repeat(log_std)
        )
        obs = jnp.repeat(batch.next_observations, n, axis=0)
        q = apply(state.critic, state.target_critic, obs, actions.reshape(-1, 2))
        smallest = np.asarray(q)[..., 0].reshape(2, -1, n).min(axis=0)  # (B, n)
        values = smallest - (alpha * np.asarray(log_probs) if entropy else 0.0)
        best = smallest.argmax(axis=1)
        return np.asarray(batch.rewards) + agent.discount * values[np.arange(len(best)), best]

    single = jax.jit(agent.td_target)(state, batch, jnp.asarray(alpha), key)
    np.testing.assert_allclose(np.asarray(single), by_hand(1, False), rtol=1e-5, atol=1e-5)
    maximal = dataclasses.replace(agent, cql_max_target_backup=True, backup_entropy=True)
    backed_up = jax.jit(maximal.td_target)(state, batch, jnp.asarray(alpha), key)
    expected = by_hand(agent.cql_n_actions, True)
    np.testing.assert_allclose(np.asarray(backed_up), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, by_hand(1, True))


def test_cql_lagrange_multiplier_follows_the_gap():
    """α' grows while the gap exceeds its target and shrinks once it is below."""
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    batch = sample_batch(data, jax.random.key(1), 16)
    for gap_target, direction in ((-100.0, 1.0), (100.0, -1.0)):
        agent = CQL(**TINY["cql"], cql_lagrange=True, cql_target_action_gap=gap_target)
        state = compiled_init(agent, SPEC)
        new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(3))
        before = float(apply(state.lagrange, state.lagrange.params))
        after = float(apply(new.lagrange, new.lagrange.params))
        np.testing.assert_allclose(float(metrics["lagrange/alpha_prime"]), before, rtol=1e-6)
        assert np.sign(after - before) == direction


def test_update_moves_every_part_from_the_same_parameters(setup):
    """As in the reference code, one update steps the actor and temperature (the shared
    maximum-entropy step, with the first key of a three-way split) against the critic before
    its step, and the critic with the proposals and target of the actor before its step: the
    actor and temperature equal `actor_step` on the initial state."""
    agent, state, batch, _ = setup
    key = jax.random.key(3)
    new, metrics = jax.jit(agent.update)(state, batch, key)
    actor, temperature, expected = jax.jit(agent.actor_step)(
        state, batch, jax.random.split(key, 3)[0]
    )
    for a, b in zip(jax.tree.leaves((new.actor, new.temperature)),
                    jax.tree.leaves((actor, temperature)), strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for name, value in expected.items():
        np.testing.assert_allclose(float(metrics[name]), float(value), rtol=1e-6)
    assert int(new.critic.step) == 1 and not np.allclose(
        np.asarray(jax.tree.leaves(new.critic.params)[0]),
        np.asarray(jax.tree.leaves(state.critic.params)[0]),
    )


# ---- Cal-QL's lower bound --------------------------------------------------------------------


def hand_batch(returns_to_go) -> Batch:
    b = len(returns_to_go)
    return Batch(
        observations=jnp.zeros((b, 3)),
        actions=jnp.zeros((b, 1)),
        rewards=jnp.zeros(b),
        next_observations=jnp.zeros((b, 3)),
        masks=jnp.ones(b),
        dones=jnp.zeros(b),
        returns_to_go=jnp.asarray(returns_to_go, jnp.float32),
    )


def test_calql_bound_replaces_q_below_the_return():
    """Q at policy actions below the state's Monte-Carlo return is replaced by the return;
    Q above it is kept; CQL leaves both alone. The gap is recomputed by hand."""
    batch = hand_batch([1.0, -2.0])
    q_policy = jnp.array([[[0.0, 3.0], [-5.0, -1.0]]])  # (1 member, 2 states, 2 actions)
    bounded = np.asarray(CalQL().bound_policy_values(q_policy, batch))
    np.testing.assert_array_equal(bounded, [[[1.0, 3.0], [-2.0, -1.0]]])
    np.testing.assert_array_equal(np.asarray(CQL().bound_policy_values(q_policy, batch)), q_policy)

    q_data = jnp.array([[0.5, -1.5]])
    q_random = jnp.array([[[0.0], [-3.0]]])
    log_probs = jnp.array([[0.2, -0.1], [0.0, 0.3]])
    gap = float(CalQL().conservative_gap(q_data, q_random, q_policy, log_probs, batch)[0])
    by_hand = []
    for s in range(2):  # 1-d actions: uniform density 1/2, so Q_rand − log(1/2)
        terms = [q_random[0, s, 0] + np.log(2.0)]
        terms += [bounded[0, s, j] - log_probs[s, j] for j in range(2)]
        by_hand.append(np.log(np.sum(np.exp(terms))) - q_data[0, s])
    np.testing.assert_allclose(gap, np.mean(by_hand), rtol=1e-5)
    unbounded = float(CQL().conservative_gap(q_data, q_random, q_policy, log_probs, batch)[0])
    assert unbounded < gap  # the bound only ever raises what is pushed down


def test_calql_with_high_returns_keeps_only_the_data_term(setup):
    """When every Monte-Carlo return is far above Q, the bounded soft maximum is a constant:
    the gap's gradient is exactly that of −E[Q(s, a)] over the data (only the push-up term),
    while CQL's gradient differs."""
    _, state, batch, _ = setup
    cql = CQL(hidden_dims=(16, 16), batch_size=32, cql_n_actions=4)
    calql = CalQL(hidden_dims=(16, 16), batch_size=32, cql_n_actions=4)
    proposals = jax.jit(cql.proposals)(state, batch, jax.random.key(2))
    high = batch.replace(returns_to_go=jnp.full_like(batch.rewards, 1e4))
    grad_calql = jax.jit(jax.grad(gap_fn(calql, state, high, proposals)))(state.critic.params)

    def data_term(params):
        q = calql.critic.value(apply(state.critic, params, batch.observations, batch.actions))
        return -q.mean(axis=-1).sum()

    grad_data = jax.jit(jax.grad(data_term))(state.critic.params)
    for a, b in zip(jax.tree.leaves(grad_calql), jax.tree.leaves(grad_data), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    grad_cql = jax.jit(jax.grad(gap_fn(cql, state, high, proposals)))(state.critic.params)
    assert not all(
        np.allclose(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(grad_cql), jax.tree.leaves(grad_data), strict=True)
    )


def test_calql_without_returns_to_go_is_an_error():
    """A batch without returns-to-go is refused with a message saying how to provide them."""
    agent = CalQL(**TINY["calql"])
    state = compiled_init(agent, SPEC)
    batch = sample_batch(
        synthetic_dataset(obs_dim=3, action_dim=2).to_batch(), jax.random.key(1), 16
    )
    with pytest.raises(ValorlError, match=r"to_batch\(discount=...\)"):
        jax.jit(agent.update)(state, batch, jax.random.key(2))  # refused while tracing


def test_defaults_follow_the_reference_code():
    """CQL: JaxCQL's defaults; Cal-QL: its reference's (max backup on, actor lr 1e-4)."""
    cql, calql = CQL(), CalQL()
    assert (cql.cql_alpha, cql.cql_n_actions, cql.cql_temp, cql.tau) == (5.0, 10, 1.0, 0.005)
    assert cql.cql_importance_sample and not cql.cql_lagrange
    assert not cql.cql_max_target_backup and not cql.backup_entropy
    assert calql.cql_max_target_backup and calql.actor_lr == 1e-4
    assert not CQL.needs_returns_to_go and CalQL.needs_returns_to_go
    with pytest.raises(ValorlError, match="--cql-n-actions must be at least 1"):
        CQL(cql_n_actions=0)


# ---- returns-to-go from the dataset through the trainer --------------------------------------


def test_batch_carries_scaled_monte_carlo_returns():
    """to_batch(discount) adds each row's discounted return-to-go (none by default, which adds
    no leaf), sampling keeps it aligned with its row, and Normalizer.batch scales it like the
    rewards."""
    data = synthetic_dataset(obs_dim=3, action_dim=2)
    plain = data.to_batch()
    assert plain.returns_to_go is None and len(jax.tree.leaves(plain)) == 6
    batch = data.to_batch(discount=0.9)
    expected = data.returns_to_go(0.9)
    np.testing.assert_allclose(np.asarray(batch.returns_to_go), expected, rtol=1e-5)
    sample = sample_batch(batch, jax.random.key(0), 64)
    rows = [
        int(np.flatnonzero((data.observations == o).all(axis=1))[0]) for o in sample.observations
    ]
    np.testing.assert_allclose(np.asarray(sample.returns_to_go), expected[rows], rtol=1e-5)
    scaled = dataclasses.replace(Normalizer.identity((3,), 2), reward_scale=jnp.asarray(0.125))
    np.testing.assert_allclose(
        np.asarray(scaled.batch(batch).returns_to_go), 0.125 * expected, rtol=1e-5
    )
    assert scaled.batch(plain).returns_to_go is None


def test_trainer_gives_returns_to_go_to_agents_that_ask(pendulum_dataset):
    """The offline trainer's device data carries returns-to-go at the agent's own discount, in
    scaled reward units, for Cal-QL (needs_returns_to_go) and not for CQL."""
    calql = CalQL(**TINY["calql"], discount=0.9, reward_normalization="return_range")
    normalizer = fit_normalizer(
        pendulum_dataset, normalize_observations=False, reward_normalization="return_range"
    )
    scale = float(normalizer.reward_scale)
    assert scale != 1.0
    data = dataset_rows(calql, pendulum_dataset, normalizer)
    np.testing.assert_allclose(
        np.asarray(data.returns_to_go), pendulum_dataset.returns_to_go(0.9) * scale, rtol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(data.rewards), pendulum_dataset.rewards * scale, rtol=1e-5
    )
    assert dataset_rows(CQL(**TINY["cql"]), pendulum_dataset, normalizer).returns_to_go is None


# ---- short offline runs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [pytest.param("cql", marks=pytest.mark.expensive), "calql"],  # Cal-QL is CQL + a bound
)
def test_short_offline_run_lowers_critic_loss(pendulum_dataset, name):
    """200 steps on 2,000 Pendulum transitions: training runs, every metric stays finite, and
    the critic loss of the last chunk is below that of the first."""
    result = valorl.train(
        name,
        pendulum_dataset,
        steps=200,
        log_every=40,
        eval_every=200,
        eval_episodes=0,
        progress=False,
        out="run",
        **{**TINY[name], "hidden_dims": (32, 32), "batch_size": 64},
    )
    metrics = RunDir(result.path).metrics()
    assert len(metrics) == 5
    for record in metrics:
        for key, value in record.items():
            assert np.all(np.isfinite(value)), key
    assert metrics[-1]["critic/loss"][0] < metrics[0]["critic/loss"][0]
    if name == "calql":
        assert "critic/bound_rate" in metrics[0]
    assert make_agent(name).name == name
