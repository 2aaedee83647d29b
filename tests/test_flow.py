"""Flow policies and action chunking: the flow-matching loss and Euler sampler on a
distribution with a known answer, flow BC learning two modes, FQL's distillation and Q terms
by hand, QC's best-of-N, the chunk critic's masks, and training end to end with chunks."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled_init, synthetic_dataset

import valorl
from valorl.agents import DQC, FQL, QC, FlowBC, Spec
from valorl.agents.base import apply
from valorl.agents.flow_bc import flow_actions
from valorl.critics import Bernoulli, HLGauss, QEnsemble, Scalar
from valorl.data.dataset import Batch
from valorl.data.nstep import sample_n_step, whole_chunks
from valorl.errors import ValorlError
from valorl.nets.flow import euler_sample, flow_matching_loss

MU, SIGMA = 0.7, 0.3


def gaussian_velocity(s, x, t):
    """The exact marginal velocity E[a − x_0 | x_t] that carries N(0, 1) to N(MU, SIGMA²) on
    the straight path x_t = (1 − t)·x_0 + t·a (a and x_0 jointly Gaussian with x_t)."""
    variance = (1 - t) ** 2 + t**2 * SIGMA**2
    return MU + (t * SIGMA**2 - (1 - t)) / variance * (x - t * MU)


def test_euler_sampler_with_the_exact_field_reaches_the_target_distribution():
    noise = jax.random.normal(jax.random.key(0), (20_000, 1))
    sample = jax.jit(lambda obs, noise: euler_sample(gaussian_velocity, obs, noise, 100))
    samples = np.asarray(sample(jnp.zeros((20_000, 0)), noise))
    assert abs(samples.mean() - MU) < 0.01 and abs(samples.std() - SIGMA) < 0.01


def test_the_exact_field_minimises_the_flow_matching_loss():
    """The conditional expectation has the lowest expected loss: shifting or scaling it costs."""
    actions = MU + SIGMA * jax.random.normal(jax.random.key(1), (50_000, 1))
    obs, key = jnp.zeros((50_000, 0)), jax.random.key(2)
    loss = lambda v: float(jax.jit(lambda a: flow_matching_loss(v, obs, a, key).mean())(actions))
    best = loss(gaussian_velocity)
    assert best < loss(lambda s, x, t: gaussian_velocity(s, x, t) + 0.1)
    assert best < loss(lambda s, x, t: 1.1 * gaussian_velocity(s, x, t))


def test_flow_bc_learns_both_modes_that_a_mean_would_average_away():
    """Actions ±0.8 with equal probability: the trained flow's samples split between the two
    modes and almost none land near their mean 0."""
    n = 512
    actions = jnp.where(jnp.arange(n)[:, None] % 2 == 0, 0.8, -0.8)
    data = Batch(jnp.zeros((n, 1)), actions, jnp.zeros(n), jnp.zeros((n, 1)), jnp.ones(n),
                 jnp.zeros(n))  # fmt: skip
    agent = FlowBC(hidden_dims=(32, 32), flow_steps=10, lr=3e-3)
    state = compiled_init(agent, Spec(obs_shape=(1,), action_dim=1))

    def step(state, key):
        state, _ = agent.update(state, data, key)
        return state, None

    train = jax.jit(lambda state, keys: jax.lax.scan(step, state, keys)[0])
    state = train(state, jax.random.split(jax.random.key(1), 1500))
    samples = np.asarray(jax.jit(agent.act)(state, jnp.zeros((1000, 1)), jax.random.key(2)))
    samples = samples[:, 0]
    assert 0.35 < (samples > 0).mean() < 0.65
    assert (np.abs(samples) < 0.3).mean() < 0.1
    assert np.abs(np.abs(samples) - 0.8).mean() < 0.15


SPEC = Spec(obs_shape=(3,), action_dim=2)


def init(agent):
    return jax.jit(agent.init, static_argnums=1)(jax.random.key(0), SPEC)


def chunk_batch(horizon: int, rows: int = 16) -> Batch:
    data = synthetic_dataset(n=100, obs_dim=3, action_dim=2, episode_len=10).to_batch()
    sample = jax.jit(sample_n_step, static_argnums=(2, 3, 4, 5, 6))
    return sample(data, jax.random.key(3), rows, horizon, 0.9, 1, True)


def test_fql_actor_loss_is_alpha_distillation_minus_q_by_hand():
    """FQL's Eq. 8 on a batch, recomputed from the networks with the same noise: the one-step
    policy's squared distance to the BC flow's Euler sample from that noise, times α, minus
    the mean over members and rows of Q at the clipped one-step action."""
    agent = FQL(hidden_dims=(16, 16), flow_steps=3, alpha=7.0, horizon=2)
    state = init(agent)
    batch, key = chunk_batch(2), jax.random.key(4)

    @jax.jit
    def by_hand(state, batch):
        noise = jax.random.normal(key, (16, 4))
        target = flow_actions(state.flow, state.flow.params, batch.observations, noise, 3)
        raw = apply(state.actor, state.actor.params, batch.observations, noise)
        q = apply(state.critic, state.critic.params, batch.observations, jnp.clip(raw, -1, 1))
        return ((raw - target) ** 2).mean(), q[..., 0].mean()

    loss, metrics = jax.jit(agent.actor_loss)(state.actor.params, state, batch, key)
    distill, q = by_hand(state, batch)
    assert float(metrics["distill_loss"]) == pytest.approx(float(distill), rel=1e-5)
    assert float(loss) == pytest.approx(7.0 * float(distill) - float(q), rel=1e-5)
    assert jax.jit(agent.act)(state, batch.observations, key).shape == (16, 2, 2)


def test_fql_actor_steps_against_the_critic_from_before_the_update():
    """FQL's reference takes one step on the summed losses, so the actor's gradient sees the
    critic as it was before this step: how far the critic moves cannot change the actor."""
    batch, key = chunk_batch(1), jax.random.key(5)
    actors = []
    for critic_lr in (0.0, 0.1):
        agent = FQL(hidden_dims=(16, 16), flow_steps=2, critic_lr=critic_lr)
        state, _ = jax.jit(agent.update)(init(agent), batch, key)
        actors.append(state.actor.params)
    jax.tree.map(np.testing.assert_array_equal, *actors)


def test_qc_best_of_n_picks_the_highest_valued_sample():
    """The chosen chunk is, at every observation, the candidate with the highest mean Q among
    the N flow samples drawn from the same key."""
    agent = QC(hidden_dims=(16, 16), flow_steps=2, samples=8, horizon=2)
    state = init(agent)
    obs, key = jax.random.normal(jax.random.key(5), (6, 3)), jax.random.key(6)
    chosen = jax.jit(agent.best_of_n)(state, obs, key)

    @jax.jit
    def by_hand(state, obs):
        repeated = jnp.repeat(obs, 8, axis=0)
        noise = jax.random.normal(key, (48, 4))
        candidates = flow_actions(state.actor, state.actor.params, repeated, noise, 2)
        q = apply(state.critic, state.critic.params, repeated, candidates)[..., 0].mean(0)
        return candidates, q

    candidates, q = by_hand(state, obs)
    best = candidates.reshape(6, 8, 4)[np.arange(6), np.asarray(q.reshape(6, 8).argmax(1))]
    np.testing.assert_allclose(chosen, best, rtol=1e-6)
    assert len(np.unique(np.asarray(q.reshape(6, 8).argmax(1)))) > 1  # not one fixed index


def test_chunk_critic_leaves_out_chunks_that_a_truncation_cuts():
    """The TD loss over a batch equals the loss over its rows whose target is whole (the last
    chunk step valid, or the sum ended at a termination), and rows that a truncation cuts
    change nothing; chunks that end at a termination count."""
    agent = QC(hidden_dims=(16, 16), flow_steps=2, samples=2, horizon=4)
    state = init(agent)
    batch = chunk_batch(4, rows=64)
    whole = np.asarray(whole_chunks(batch))
    last_valid = np.asarray(batch.valid[:, -1])
    assert 0 < last_valid.sum() < whole.sum() < 64  # terminated chunks kept, truncated left out
    next_chunks = jax.random.uniform(jax.random.key(7), (64, 8), minval=-1, maxval=1)
    params, key = state.critic.params, jax.random.key(8)
    td_loss = jax.jit(lambda batch, chunks: agent.td_loss(params, state, batch, chunks, key)[0])
    keep = np.flatnonzero(whole)
    loss = td_loss(batch, next_chunks)
    loss_kept = td_loss(jax.tree.map(lambda x: x[keep], batch), next_chunks[keep])
    assert float(loss) == pytest.approx(float(loss_kept), rel=1e-5)


def test_a_chunked_agent_trains_and_evaluates_open_loop(pendulum_dataset, tmp_path):
    """QC with chunks of 3 trains on Pendulum data and evaluates by executing its chunks;
    its config records the chunk, the run's policy returns chunks, and its critic of chunks
    gets value diagnostics."""
    result = valorl.train(
        "qc", pendulum_dataset, steps=10, log_every=10, eval_every=10, eval_episodes=1,
        seeds=1, progress=False, out=tmp_path / "qc", horizon=3, samples=2, flow_steps=2,
        hidden_dims=(8, 8), batch_size=8,
    )  # fmt: skip
    assert np.isfinite(result.returns).all()
    policy = valorl.load_policy(tmp_path / "qc")
    assert policy(np.zeros((4, 3), np.float32), key=jax.random.key(0)).shape == (4, 3, 1)
    diagnostics = json.loads((tmp_path / "qc" / "diagnostics.json").read_text())
    assert diagnostics["chunk_length"] == 3 and np.isfinite(diagnostics["bias"]).all()


def test_chunked_agents_refuse_what_they_cannot_do_in_one_line():
    with pytest.raises(ValorlError, match="--n-step needs --horizon 1"):
        FQL(n_step=3, horizon=2)
    with pytest.raises(ValorlError, match="--horizon must be at least 1"):
        QC(horizon=0)
    with pytest.raises(ValorlError, match="trains offline only"):
        valorl.train_online("qc", env="Pendulum-v1", online_steps=10)


def test_dqc_distillation_and_value_losses_by_hand():
    """DQC's action critic: κ_d-expectile weighted squared error of each member towards the
    same member of the chunk critic at the dataset's long chunk; its value: the κ_b pinball
    loss towards the target action critic's min at the short chunk; both over rows whose long
    chunk's target is whole (valid to its end, or ended at a termination)."""
    agent = DQC(hidden_dims=(16, 16), flow_steps=2, samples=2, horizon=4, action_horizon=2,
                critic=Scalar(), distill_expectile=0.8, value_quantile=0.7)  # fmt: skip
    state = init(agent)
    batch, key = chunk_batch(4, rows=64), jax.random.key(9)
    # a target action critic unlike the online one, so using the wrong one would show
    other = jax.jit(agent.init, static_argnums=1)(jax.random.key(1), SPEC)
    state = state.replace(target_action_critic=other.action_critic.params)
    losses = jax.jit(
        lambda s, b: (agent.action_critic_loss(s.action_critic.params, s, b)[0],
                      agent.value_loss(s.value.params, s, b, key)[0])
    )  # fmt: skip
    distill, value = losses(state, batch)

    @jax.jit
    def networks(state, batch):
        long, short = batch.actions.reshape(64, -1), batch.actions[:, :2].reshape(64, -1)
        q_long = apply(state.critic, state.critic.params, batch.observations, long)[..., 0]
        q_short = apply(state.action_critic, state.action_critic.params, batch.observations, short)
        q_target = apply(state.action_critic, state.target_action_critic, batch.observations,
                         short)  # fmt: skip
        v = apply(state.value, state.value.params, batch.observations)
        return q_long, q_short[..., 0], q_target[..., 0], v

    q_long, q_short, q_target, v = (np.asarray(x, np.float64) for x in networks(state, batch))
    whole = (np.asarray(batch.valid[:, -1]) | (np.asarray(batch.masks) == 0)).astype(np.float64)
    target = q_long  # (members, rows): member by member
    weight = np.where(target >= q_short, 0.8, 0.2)
    expected = (weight * (q_short - target) ** 2 * whole).mean(axis=-1).sum()
    assert float(distill) == pytest.approx(expected, rel=1e-4)
    u = q_target.min(0) - v
    expected_v = (np.where(u < 0, 0.3, 0.7) * np.abs(u) * whole).mean()
    assert float(value) == pytest.approx(expected_v, rel=1e-4)


def test_dqc_mean_reduction_averages_probabilities_for_v_and_logits_for_best_of_n():
    """With `--q-reduce mean` and the bce head, as the reference: V's target is the logit of
    the members' mean success probability, and best-of-N scores the sigmoid of the members'
    mean logit (the two differ unless the members agree)."""
    ensemble = QEnsemble(q_reduce="mean", layer_norm=True, norm_after_activation=True,
                         activation="gelu")  # fmt: skip
    agent = DQC(hidden_dims=(16, 16), flow_steps=2, samples=2, horizon=4, action_horizon=2,
                critic=Bernoulli(), ensemble=ensemble, value_quantile=0.7)  # fmt: skip
    state = init(agent)
    batch, key = chunk_batch(4, rows=64), jax.random.key(9)
    short = batch.actions[:, :2].reshape(64, -1)
    logits = np.asarray(
        apply(state.action_critic, state.target_action_critic, batch.observations, short)[..., 0],
        np.float64,
    )  # (members, rows)
    assert np.abs(logits[0] - logits[1]).max() > 0.01  # the members disagree
    v = np.asarray(apply(state.value, state.value.params, batch.observations), np.float64)
    p = (1 / (1 + np.exp(-logits))).mean(0)
    u = np.log(p / (1 - p)) - v
    whole = (np.asarray(batch.valid[:, -1]) | (np.asarray(batch.masks) == 0)).astype(np.float64)
    expected = (np.where(u < 0, 0.3, 0.7) * np.abs(u) * whole).mean()
    value = jax.jit(lambda s, b: agent.value_loss(s.value.params, s, b, key)[0])(state, batch)
    assert float(value) == pytest.approx(expected, rel=1e-4)
    # best-of-N scores with the online action critic (here equal to its target at init)
    scores = np.asarray(agent.score(state, key)(batch.observations, short), np.float64)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits.mean(0))), rtol=1e-5)


def test_dqc_builds_its_networks_as_the_reference_does():
    """DQC's value is a GELU network with LayerNorm after each activation, like its critics,
    and its flow has LayerNorm (the reference's `actor_layer_norm`); FQL's flow has none."""
    from test_agents_heads import mlp_by_hand

    state = init(DQC(hidden_dims=(8, 8), horizon=4, action_horizon=2, critic=Scalar()))
    obs = np.linspace(-1, 1, 12).reshape(4, 3)
    value = np.asarray(jax.jit(lambda s, o: apply(s.value, s.value.params, o))(state, obs))
    mlp = jax.tree.map(np.asarray, state.value.params["MLP_0"])
    gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(value, mlp_by_hand(mlp, obs, gelu, True)[:, 0], rtol=1e-4, atol=1e-5)
    norms = lambda tree: {k for k in tree["MLP_0"] if k.startswith("LayerNorm")}
    assert norms(state.actor.params) == {"LayerNorm_0", "LayerNorm_1"}
    assert norms(init(FQL(hidden_dims=(8, 8))).flow.params) == set()


def test_dqc_clones_the_behaviour_without_the_goal_unless_asked():
    """On [s, g] observations DQC's flow reads s only, as the reference's unconditional BC:
    its velocity is the same whatever the goal; `actor_sees_goal` conditions it on g."""
    spec = Spec(obs_shape=(5,), action_dim=2, goal_dim=2)
    obs = jnp.tile(jnp.linspace(-1, 1, 5), (4, 1))
    other_goal = obs.at[:, 3:].set(7.0)
    x, t = jnp.ones((4, 4)), jnp.full((4, 1), 0.5)
    for sees_goal in (False, True):
        agent = DQC(hidden_dims=(8, 8), horizon=4, action_horizon=2, actor_sees_goal=sees_goal)
        state = jax.jit(agent.init, static_argnums=1)(jax.random.key(0), spec)
        velocity = jax.jit(lambda s, o: apply(s.actor, s.actor.params, o, x, t))
        same = np.allclose(velocity(state, obs), velocity(state, other_goal))
        assert same != sees_goal


def test_the_bce_head_reads_probabilities_and_clips_its_targets():
    head = Bernoulli()
    logits = jnp.array([[0.0], [2.0]])
    np.testing.assert_allclose(head.value(logits), [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    # a target of 1.3 is a probability of 1: −log σ(2)
    np.testing.assert_allclose(head.loss(logits[1:], jnp.array([1.3])), [np.log1p(np.exp(-2.0))],
                               rtol=1e-6)  # fmt: skip


def test_dqc_trains_on_long_chunks_and_acts_in_short_ones(pendulum_dataset, tmp_path):
    """(QC's test above evaluates chunks in the environment; DQC's policy returns h_a-chunks.)"""
    valorl.train(
        "dqc", pendulum_dataset, steps=10, log_every=10, eval_every=10, eval_episodes=0,
        seeds=1, progress=False, out=tmp_path / "dqc", horizon=4, action_horizon=2, samples=2,
        flow_steps=2, hidden_dims=(8, 8), batch_size=8, critic=Scalar(),
    )  # fmt: skip
    policy = valorl.load_policy(tmp_path / "dqc")
    assert policy(np.zeros((4, 3), np.float32), key=jax.random.key(0)).shape == (4, 2, 1)
    assert not (tmp_path / "dqc" / "diagnostics.json").exists()  # no Q of its own 2-chunks
    with pytest.raises(ValorlError, match="--action-horizon must be between 1 and --horizon"):
        DQC(horizon=2, action_horizon=3)
    with pytest.raises(ValorlError, match="one-output critic head"):
        DQC(critic=HLGauss())
