"""RIQL (Yang et al. 2023): the quantile ensemble reduction and the Huber loss on hand-computed
values, the paper's defaults, and RIQL's losses recomputed by hand from its networks."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset

import valorl
from valorl.agents import AGENTS, IQL, RIQL, Spec, make_agent
from valorl.agents.base import apply
from valorl.cli.main import build_parser
from valorl.config import from_dict, to_dict
from valorl.critics import Huber, QEnsemble, Scalar
from valorl.data.dataset import sample_batch
from valorl.errors import ValorlError
from valorl.launch.args import parse_overrides
from valorl.nets import DeterministicPolicy
from valorl.training.fused import init_seeds, seed_keys

SPEC = Spec((3,), 2, total_updates=100)


# ---- the quantile reduction ------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha, expected",
    [
        (0.25, 2.0),  # position 0.25·4 = 1 -> the second smallest, exactly
        (0.1, 1.4),  # position 0.4 -> 1 + 0.4·(2 − 1)
        (0.6, 3.4),  # position 2.4 -> 3 + 0.4·(4 − 3)
        (0.5, 3.0),  # the median
        (0.0, 1.0),  # the min
        (1.0, 5.0),  # the max
    ],
)
def test_quantile_reduction_by_hand(alpha, expected):
    """Members [1, 2, 3, 4, 5] (in any order): the α-quantile is read at position α·(K − 1) of
    the sorted values, interpolating linearly between neighbours (torch.quantile's default, as
    RIQL's reference code uses)."""
    ensemble = QEnsemble(num_qs=5, q_reduce="quantile", q_quantile=alpha)
    values = jnp.array([3.0, 1.0, 5.0, 2.0, 4.0])[:, None] * jnp.array([1.0, 10.0])  # (5, 2)
    got = np.asarray(ensemble.reduce(values, jax.random.key(0)))
    np.testing.assert_allclose(got, [expected, 10 * expected], rtol=1e-6)


def test_quantile_reduction_per_sample_and_batched():
    """Each sample (and each leading batch index) takes the quantile over its own members."""
    ensemble = QEnsemble(num_qs=3, q_reduce="quantile", q_quantile=0.25)
    values = jnp.array([[[0.0, 4.0]], [[2.0, 0.0]], [[1.0, 8.0]]])  # (3, 1, 2)
    got = np.asarray(ensemble.reduce(values, jax.random.key(0)))
    np.testing.assert_allclose(got, [[0.5, 2.0]])  # sorted (0,1,2) at 0.5; (0,4,8) at 0.5


def test_other_reductions_are_unchanged():
    """min, mean, pessimistic and subset-min give what they gave before quantile was added."""
    values = jnp.array([[1.0, -2.0], [3.0, 0.0], [2.0, 4.0]])
    key = jax.random.key(0)
    np.testing.assert_allclose(QEnsemble(num_qs=3).reduce(values, key), [1.0, -2.0])
    np.testing.assert_allclose(QEnsemble(num_qs=3, q_reduce="mean").reduce(values, key), [2, 2 / 3])
    pessimistic = QEnsemble(num_qs=3, q_reduce="pessimistic", q_pessimism=0.5)
    expected = values.mean(0) - 0.5 * np.std(np.asarray(values), axis=0)
    np.testing.assert_allclose(pessimistic.reduce(values, key), expected, rtol=1e-6)
    subset = QEnsemble(num_qs=3, q_reduce="subset-min", q_subset=3)
    np.testing.assert_allclose(subset.reduce(values, key), [1.0, -2.0])
    assert not QEnsemble(q_reduce="quantile").picks_a_member


def test_quantile_must_be_in_the_unit_interval():
    with pytest.raises(ValorlError, match=r"--q-quantile must be between 0 and 1, got 1\.5"):
        QEnsemble(q_reduce="quantile", q_quantile=1.5)
    QEnsemble(q_quantile=1.5)  # unused by other reductions: not checked


# ---- the Huber head ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delta, error, expected",
    [
        (1.0, 0.5, 0.125),  # ½·0.5²
        (1.0, -3.0, 2.5),  # 1·(3 − ½)
        (2.0, 1.5, 1.125),  # ½·1.5²
        (2.0, 3.0, 4.0),  # 2·(3 − 1)
        (0.5, 0.0, 0.0),
    ],
)
def test_huber_loss_by_hand(delta, error, expected):
    """l_δ(u) = ½u² for |u| ≤ δ, δ·(|u| − ½δ) beyond; u = Q − target."""
    outputs = jnp.array([[[1.0 + error]]])  # (members, batch, head outputs)
    loss = Huber(huber_delta=delta).loss(outputs, jnp.array([1.0]))
    np.testing.assert_allclose(np.asarray(loss), [[expected]], rtol=1e-6)


def test_huber_is_the_reference_loss_scaled():
    """RIQL's reference `huber_loss(u, σ)` uses the threshold β = 1/σ² and ½u²/β, |u| − ½β:
    exactly Huber(δ = β) / β, so σ = 1 (its default) is δ = 1 here, and other σ differ only by
    a constant factor (to which Adam is invariant)."""

    def reference(u, sigma):
        beta = 1.0 / sigma**2
        u = np.abs(u)
        return np.where(u < beta, 0.5 * u**2 / beta, u - 0.5 * beta)

    u = np.linspace(-5, 5, 41)
    for sigma in (1.0, 0.5, 3.0):
        delta = 1.0 / sigma**2
        ours = np.asarray(Huber(huber_delta=delta).loss(jnp.asarray(u)[:, None], jnp.zeros(41)))
        np.testing.assert_allclose(ours / delta, reference(u, sigma), rtol=1e-5, atol=1e-7)


# ---- the agent ---------------------------------------------------------------------------------


def test_paper_defaults():
    """RIQL's defaults (reference code, RIQL.py TrainConfig): K = 5 critics, α = 0.25, Huber
    σ = 1 (δ = 1), expectile 0.7, β = 3, normalised observations, a deterministic actor, no
    reward scaling; the rest is IQL's."""
    agent = RIQL()
    assert AGENTS["riql"] is RIQL and make_agent("riql") == agent
    assert agent.ensemble == QEnsemble(num_qs=5, q_reduce="quantile", q_quantile=0.25)
    assert agent.critic == Huber(huber_delta=1.0)
    assert (agent.expectile, agent.beta, agent.max_weight) == (0.7, 3.0, 100.0)
    assert agent.normalize_observations and agent.deterministic_actor
    assert agent.reward_normalization == "none"
    iql = IQL()
    for same in ("discount", "tau", "actor_lr", "critic_lr", "value_lr", "hidden_dims"):
        assert getattr(agent, same) == getattr(iql, same), same
    assert isinstance(agent, IQL) and agent.name == "riql"


def test_config_round_trip_keeps_every_riql_setting():
    agent = RIQL(
        ensemble=QEnsemble(num_qs=3, q_reduce="quantile", q_quantile=0.1),
        critic=Huber(huber_delta=0.5),
        deterministic_actor=False,
        **TINY["riql"],
    )
    back = from_dict(RIQL, json.loads(json.dumps(to_dict(agent))))
    assert back == agent and back.ensemble.q_quantile == 0.1


def test_cli_flags():
    """`valorl train riql` takes --q-quantile, --huber-delta and --deterministic-actor, and
    flags change only what they name (the ensemble keeps RIQL's size and reduction)."""
    argv = ["train", "riql", "--dataset", "x", "--q-quantile", "0.1", "--huber-delta", "0.5"]
    args, unknown = build_parser().parse_known_args([*argv, "--deterministic-actor", "false"])
    assert not unknown
    agent = make_agent("riql", **parse_overrides(args, RIQL))
    assert agent.ensemble == QEnsemble(num_qs=5, q_reduce="quantile", q_quantile=0.1)
    assert agent.critic == Huber(huber_delta=0.5) and not agent.deterministic_actor
    iql_args, _ = build_parser().parse_known_args(["train", "iql", "--dataset", "x"])
    assert make_agent("iql", **parse_overrides(iql_args, IQL)).critic == Scalar()


@pytest.fixture(scope="module")
def riql():
    """A tiny RIQL, one initialised seed with a target critic unlike its online critic (another
    seed's), and a batch."""
    agent = RIQL(**TINY["riql"])
    states = init_seeds(agent, SPEC)(seed_keys([0, 1])[0])
    state = jax.tree.map(lambda x: x[0], states)
    state = state.replace(target_critic=jax.tree.map(lambda x: x[1], states).critic.params)
    data = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    return agent, state, sample_batch(data, jax.random.key(5), 64)


def test_losses_by_hand(riql):
    """One update's reported losses, recomputed in numpy from the networks:
    value: expectile loss of (α-quantile over the 5 *target* critics − V);
    critic: Σ_members mean_batch Huber(Q_i − (r + γ·m·V'(s'))) with the updated V;
    actor: mean of min(exp(β·(Q̂ − V')), 100) · ‖π(s) − a‖² with the deterministic actor."""
    agent, state, batch = riql
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(6))

    obs, actions = batch.observations, batch.actions
    target_q = np.asarray(apply(state.critic, state.target_critic, obs, actions))[..., 0]
    assert target_q.shape == (5, 64)
    q_hat = np.quantile(target_q.astype(np.float64), 0.25, axis=0)  # linear interpolation
    assert not np.allclose(q_hat, target_q.min(0))
    v = np.asarray(apply(state.value, state.value.params, obs), np.float64)
    diff = q_hat - v
    value_loss = np.mean(np.where(diff > 0, 0.7, 0.3) * diff**2)
    np.testing.assert_allclose(float(metrics["value/loss"]), value_loss, rtol=1e-5)

    next_v = np.asarray(apply(new.value, new.value.params, batch.next_observations), np.float64)
    target = np.asarray(batch.rewards) + 0.99 * np.asarray(batch.masks) * next_v
    q = np.asarray(apply(state.critic, state.critic.params, obs, actions), np.float64)[..., 0]
    u = np.abs(q - target)
    huber = np.where(u <= 1.0, 0.5 * u**2, u - 0.5)
    np.testing.assert_allclose(float(metrics["critic/loss"]), huber.mean(1).sum(), rtol=1e-5)

    v_new = np.asarray(apply(new.value, new.value.params, obs), np.float64)
    weights = np.minimum(np.exp(3.0 * (q_hat - v_new)), 100.0)
    policy = np.asarray(apply(state.actor, state.actor.params, obs), np.float64)
    assert policy.shape == (64, 2)  # a deterministic actor: actions, not (mean, log-std)
    actor_loss = np.mean(weights * ((policy - np.asarray(actions)) ** 2).sum(-1))
    np.testing.assert_allclose(float(metrics["actor/loss"]), actor_loss, rtol=1e-4)


def test_deterministic_actor_is_iqls_actor_hook_overridden():
    """RIQL's init is IQL's with one hook changed: the critic and value networks are IQL's for
    the same key, and the actor is a deterministic tanh policy initialised with the key IQL
    gives its actor (the first of a three-way split)."""
    agent = RIQL(**TINY["riql"])
    as_iql = IQL(**{f.name: getattr(agent, f.name) for f in dataclasses.fields(IQL)})
    key = jax.random.key(11)
    ours, theirs = agent.init(key, SPEC), as_iql.init(key, SPEC)
    for part in ("critic", "value"):
        for a, b in zip(jax.tree.leaves(getattr(ours, part).params),
                        jax.tree.leaves(getattr(theirs, part).params), strict=True):  # fmt: skip
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    obs = jnp.zeros((1, 3))
    expected = DeterministicPolicy(agent.hidden_dims, 2).init(jax.random.split(key, 3)[0], obs)
    for a, b in zip(jax.tree.leaves(ours.actor.params),
                    jax.tree.leaves(expected["params"]), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gaussian_actor_option(riql):
    """deterministic_actor=False is IQL's Gaussian actor: same losses as IQL with RIQL's critic
    settings, and stochastic acting samples."""
    agent, _, batch = riql
    gaussian = dataclasses.replace(agent, deterministic_actor=False)
    as_iql = IQL(**{f.name: getattr(gaussian, f.name) for f in dataclasses.fields(IQL)})
    state = init_seeds(gaussian, SPEC)(seed_keys([0])[0])
    state = jax.tree.map(lambda x: x[0], state)
    _, ours = jax.jit(gaussian.update)(state, batch, jax.random.key(1))
    _, theirs = jax.jit(as_iql.update)(state, batch, jax.random.key(1))
    for name in theirs:
        np.testing.assert_allclose(float(ours[name]), float(theirs[name]), rtol=1e-6)
    obs = batch.observations[:4]
    a1 = gaussian.act(state, obs, jax.random.key(1), False)
    a2 = gaussian.act(state, obs, jax.random.key(2), False)
    assert not np.allclose(a1, a2)


def test_trains_end_to_end(pendulum_dataset, isolated):
    """`valorl.train("riql", ...)` runs, evaluates and records RIQL's settings."""
    result = valorl.train(
        "riql",
        pendulum_dataset,
        steps=20,
        log_every=10,
        eval_every=20,
        eval_episodes=1,
        progress=False,
        out="run",
        **TINY["riql"],
    )
    config = json.loads((result.path / "config.json").read_text())
    hyper = config["agent"]["hyperparameters"]
    assert config["agent"]["name"] == "riql"
    assert hyper["ensemble"]["q_reduce"] == "quantile" and hyper["critic"]["type"] == "huber"
    assert np.isfinite(result.final_scores).all()
    policy = valorl.load_policy(result.path)
    assert policy(np.zeros(3, np.float32)).shape == (1,)
