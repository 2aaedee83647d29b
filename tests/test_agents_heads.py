"""Every critic-based agent with every critic head and ensemble option: the agent contract
holds whichever way Q is represented.

Compiling and training an agent takes seconds, and the agent x head and agent x ensemble
matrices hold 77 pairs, so the default run splits the work:

- every pair is built and one update traced abstractly (`jax.eval_shape`: no compilation),
  which catches every shape and wiring mistake and shows the head or ensemble option really
  shapes the critic;
- per agent, a probe head shows the critic's gradient flows through that head's own loss;
- a covering design trains for real, with finite metrics and a config round trip: one
  combination per row, in which every agent, every head and every ensemble option occurs.

The full compiled matrix runs with `make test-all` (marker `full_matrix`).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset

import valorl
from valorl.agents import AGENTS, Spec
from valorl.agents.base import apply
from valorl.config import from_dict, to_dict
from valorl.critics import HEADS, HLGauss, QEnsemble, resolve_support
from valorl.nets.spectral import COLLECTION
from valorl.training.fused import init_seeds, seed_keys, update_chunk

CRITIC_AGENTS = [
    name
    for name, cls in AGENTS.items()
    if "critic" in cls.__dataclass_fields__
    and not cls.discrete
    and not cls.model_based
    and name not in ("dqc", "qc")
]
"""Continuous-action critic agents but DQC, which takes one-output heads only (tested in
tests/test_flow.py), and QC, whose chunk critic is FQL's. tests/test_discrete_agents.py trains
the discrete ones with every head; the model-based agents are SAC with a model, and SAC is
here."""
SPEC = Spec(obs_shape=(3,), action_dim=2, total_updates=10)
DATA = synthetic_dataset(obs_dim=3, action_dim=2).to_batch(discount=0.99, next_actions=True)
ENSEMBLES = {
    "subset-min": QEnsemble(num_qs=4, q_reduce="subset-min", q_subset=2),
    "pessimistic": QEnsemble(num_qs=3, q_reduce="pessimistic", q_pessimism=0.5),
    "mean+layernorm": QEnsemble(num_qs=2, q_reduce="mean", layer_norm=True),
    "spectral": QEnsemble(num_qs=2, spectral_norm=True),
}


def make(agent_name: str, head_name: str | None = None, ensemble: str | None = None):
    """A tiny agent with the named head (its support set as the trainer would) and ensemble."""
    options = dict(TINY[agent_name])
    if head_name is not None:
        options["critic"] = resolve_support(HEADS[head_name], -5.0, 5.0)
    if ensemble is not None:
        options["ensemble"] = ENSEMBLES[ensemble]
    return AGENTS[agent_name](**options)


def covering_design() -> list[tuple[str, str, str]]:
    """(agent, head, ensemble option) rows in which each of them occurs at least once: row i
    takes the i-th of each list, cyclically. Heads are shifted by one so that no agent gets
    its default head (IQL's scalar, RIQL's Huber, DSAC-T's Gaussian): those train elsewhere."""
    heads, ensembles = list(HEADS), list(ENSEMBLES)
    rows = max(len(CRITIC_AGENTS), len(heads), len(ensembles))
    return [
        (
            CRITIC_AGENTS[i % len(CRITIC_AGENTS)],
            heads[(i + 1) % len(heads)],
            ensembles[i % len(ensembles)],
        )
        for i in range(rows)
    ]


COVER = covering_design()


# ---- abstract checks of every pair: traced, not compiled ---------------------------------------


def batch_for(agent):
    """A batch of the agent's size, with the leading axis of `batches_per_update` if it has one."""
    batch = jax.tree.map(lambda x: x[: agent.batch_size], DATA)
    if agent.batches_per_update == 1:
        return batch
    return jax.tree.map(lambda x: np.stack([x] * agent.batches_per_update), batch)


def traced_update(agent):
    """Shapes of (state, state after one update, metrics), traced without compiling."""
    state = jax.eval_shape(lambda key: agent.init(key, SPEC), jax.random.key(0))
    new, metrics = jax.eval_shape(agent.update, state, batch_for(agent), jax.random.key(1))
    return state, new, metrics


def critic_outputs(agent, state) -> tuple[int, ...]:
    """Shape of the critic network's outputs on a batch of the agent's size."""
    obs, actions = DATA.observations[: agent.batch_size], DATA.actions[: agent.batch_size]
    return jax.eval_shape(lambda: apply(state.critic, state.critic.params, obs, actions)).shape


def check_abstract_update(agent):
    """One traced update keeps the state's structure and shapes and reports scalar metrics,
    among them the critic's loss. Returns the initial state (shapes only)."""
    state, new, metrics = traced_update(agent)
    shapes = jax.tree.map(lambda x: x.shape, state)
    assert jax.tree.map(lambda x: x.shape, new) == shapes
    assert "critic/loss" in metrics
    assert {name: m.shape for name, m in metrics.items()} == {name: () for name in metrics}
    return state


@pytest.mark.parametrize("head_name", list(HEADS))
@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_every_head_shapes_every_agents_critic(agent_name, head_name):
    """The critic network has as many outputs as the head needs, for each ensemble member, and
    an update with that head traces."""
    agent = make(agent_name, head_name)
    state = check_abstract_update(agent)
    assert critic_outputs(agent, state) == (
        agent.ensemble.num_qs,
        agent.batch_size,
        agent.critic.out_dim,
    )


@pytest.mark.parametrize("ensemble", list(ENSEMBLES))
@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_every_ensemble_option_shapes_every_agents_critic(agent_name, ensemble):
    """The critic has `num_qs` members, LayerNorm parameters exactly when asked for, and
    spectral-norm state exactly when asked for; an update with the option traces."""
    agent = make(agent_name, ensemble=ensemble)
    state = check_abstract_update(agent)
    options = ENSEMBLES[ensemble]
    assert critic_outputs(agent, state)[0] == options.num_qs
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.critic)]
    assert any("LayerNorm" in path for path in paths) == options.layer_norm
    assert (COLLECTION in state.critic.extra) == options.spectral_norm


def mlp_by_hand(params, x, activation, norm_after_activation: bool) -> np.ndarray:
    """valorl's MLP with LayerNorm in NumPy, from its parameters (flax's names)."""
    dense = sorted(k for k in params if k.startswith("Dense_"))
    layer_norm = lambda h, p: (
        (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6) * p["scale"]
        + p["bias"]
    )
    for i, name in enumerate(dense):
        x = x @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
        if i + 1 < len(dense):
            norm = jax.tree.map(np.asarray, params[f"LayerNorm_{i}"])
            x = activation(layer_norm(x, norm) if not norm_after_activation else x)
            x = layer_norm(x, norm) if norm_after_activation else x
    return x


@pytest.mark.parametrize("after", [False, True], ids=["rlpd", "fql"])
def test_layer_norm_sits_before_or_after_the_activation_by_hand(after):
    """RLPD's code normalises before the activation, FQL's, QC's, DQC's and ReBRAC's after it:
    the ensemble's network computes whichever is asked, and the two differ."""
    ensemble = QEnsemble(num_qs=1, layer_norm=True, norm_after_activation=after)
    net = ensemble.network((8, 8), 1)
    obs, actions = np.linspace(-2, 2, 15).reshape(5, 3), np.linspace(1, -1, 10).reshape(5, 2)
    params = net.init(jax.random.key(0), obs, actions)["params"]
    member = jax.tree.map(lambda p: np.asarray(p)[0], params)
    member = member[next(iter(member))]["MLP_0"]  # the Ensemble's member network's MLP
    relu = lambda x: np.maximum(x, 0.0)
    inputs = np.concatenate([obs, actions], -1)
    got = np.asarray(net.apply({"params": params}, obs, actions))[0]
    np.testing.assert_allclose(got, mlp_by_hand(member, inputs, relu, after), rtol=1e-4, atol=1e-5)
    other = mlp_by_hand(member, inputs, relu, not after)
    assert np.abs(got - other).max() > 1e-3


# ---- the head's loss is what trains the critic ---------------------------------------------------

GRADIENTS_SEEN: list[tuple[int, ...]] = []
"""Shapes of the gradients that reached `ProbedHLGauss.loss`'s outputs while tracing."""


@jax.custom_vjp
def probe(outputs: jax.Array) -> jax.Array:
    """The identity, whose backward pass records the gradient's shape (at trace time)."""
    return outputs


def _probe_forward(outputs):
    return outputs, None


def _probe_backward(_, gradient):
    GRADIENTS_SEEN.append(gradient.shape)
    return (gradient,)


probe.defvjp(_probe_forward, _probe_backward)


@dataclasses.dataclass(frozen=True)
class ProbedHLGauss(HLGauss):
    """HL-Gauss whose loss passes the critic's outputs through `probe`."""

    def loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
        return super().loss(probe(outputs), target)


@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_the_heads_loss_trains_the_critic(agent_name):
    """Differentiating the agent's update runs the backward pass of the head's own loss, on the
    critic's outputs: (members, batch, bins) of this head, not a built-in regression."""
    head = ProbedHLGauss(bins=5, vmin=-5.0, vmax=5.0)
    agent = AGENTS[agent_name](critic=head, ensemble=QEnsemble(num_qs=3), **TINY[agent_name])
    GRADIENTS_SEEN.clear()
    traced_update(agent)
    assert GRADIENTS_SEEN, "the critic's loss never went through the head"
    assert set(GRADIENTS_SEEN) == {(3, agent.batch_size, 5)}


# ---- training for real ---------------------------------------------------------------------------


def check_contract(agent) -> None:
    """Init two seeds, run two fused updates, act, and round-trip the config."""
    init_keys, train_keys, _ = seed_keys([0, 1])
    states = init_seeds(agent, SPEC)(init_keys)
    states, _, metrics = update_chunk(agent, 2)(states, train_keys, DATA)
    for name, value in metrics.items():
        assert np.isfinite(np.asarray(value)).all(), name
    assert "critic/loss" in metrics
    obs = DATA.observations[:5]
    state0 = jax.tree.map(lambda x: x[0], states)
    for deterministic in (True, False):
        actions = agent.act(state0, obs, jax.random.key(3), deterministic)
        assert actions.shape == (5, 2)
        assert (np.abs(np.asarray(actions)) <= 1.0).all()
    assert from_dict(type(agent), json.loads(json.dumps(to_dict(agent)))) == agent


def test_the_covering_design_covers_every_agent_head_and_ensemble_option():
    agents, heads, ensembles = (set(column) for column in zip(*COVER, strict=True))
    assert agents == set(CRITIC_AGENTS)
    assert heads == set(HEADS)
    assert ensembles == set(ENSEMBLES)


@pytest.mark.parametrize(("agent_name", "head_name", "ensemble"), COVER)
def test_covering_design_trains(agent_name, head_name, ensemble):
    """Each row of the covering design trains finitely, acts in bounds and round-trips."""
    check_contract(make(agent_name, head_name, ensemble))


@pytest.mark.full_matrix
@pytest.mark.parametrize("head_name", list(HEADS))
@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_every_agent_with_every_head(agent_name, head_name):
    """Every critic agent trains with each head (support set as the trainer would)."""
    check_contract(make(agent_name, head_name))


@pytest.mark.full_matrix
@pytest.mark.parametrize("ensemble", list(ENSEMBLES))
@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_ensemble_options(agent_name, ensemble):
    """Ensemble sizes, every reduction, LayerNorm and spectral norm train finitely."""
    check_contract(make(agent_name, ensemble=ensemble))


@pytest.mark.parametrize("head_name", ["c51", "quantile", "gaussian"])
def test_td3_bc_distributional_backup(head_name):
    """TD3+BC trains a distributional critic towards the backed-up next-state distribution."""
    head = resolve_support(HEADS[head_name], -5.0, 5.0)
    agent = valorl.TD3BC(
        critic=head,
        distributional_backup=True,
        ensemble=QEnsemble(num_qs=3, q_reduce="subset-min"),
        **TINY["td3_bc"],
    )
    check_contract(agent)


def test_td3_bc_quantile_backup_by_hand():
    """The distributional target, written out for quantiles: per row, the target member with
    the smallest mean at (s', ã') — ã' the target actor's action with TD3's clipped noise from
    the key's first half — and its quantiles shifted, r + γ·m·z_j (TD3+BC has no penalty); the
    loss is the quantile-Huber loss to that target, summed over the online members."""
    head = resolve_support(HEADS["quantile"], -5.0, 5.0)
    agent = valorl.TD3BC(critic=head, distributional_backup=True, **TINY["td3_bc"])
    state = jax.tree.map(lambda x: x[0], init_seeds(agent, SPEC)(seed_keys([0])[0]))
    # target members perturbed apart, so the member with the smallest mean varies by row
    leaves, tree = jax.tree.flatten(state.target_critic)
    keys = jax.random.split(jax.random.key(11), len(leaves))
    noisy = [w + 0.3 * jax.random.normal(k, w.shape) for w, k in zip(leaves, keys, strict=True)]
    state = state.replace(target_critic=jax.tree.unflatten(tree, noisy))
    batch = synthetic_dataset(obs_dim=3, action_dim=2).to_batch()
    batch = jax.tree.map(lambda x: x[:16], batch)
    batch = batch.replace(masks=batch.masks.at[::4].set(0.0))  # terminal rows: target r alone
    key = jax.random.key(3)
    noise = agent.policy_noise * jax.random.normal(jax.random.split(key)[0], batch.actions.shape)
    next_actions = apply(state.actor, state.target_actor, batch.next_observations)
    next_actions = np.clip(
        next_actions + np.clip(noise, -agent.noise_clip, agent.noise_clip), -1, 1
    )
    quantiles = np.asarray(
        apply(state.critic, state.target_critic, batch.next_observations, next_actions)
    )  # (members, B, N)
    member = quantiles.mean(axis=-1).argmin(axis=0)
    chosen = quantiles[member, np.arange(16)]
    discounts = agent.discount * np.asarray(batch.masks)
    target = np.asarray(batch.rewards)[:, None] + discounts[:, None] * chosen
    outputs = apply(state.critic, state.critic.params, batch.observations, batch.actions)
    expected = head.backup_loss(outputs, jax.numpy.asarray(target)).mean(axis=-1).sum()
    loss, _ = jax.jit(agent.critic_loss)(state.critic.params, state, batch, key)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    assert 0 < member.mean() < 1 and 0 < discounts.mean() < agent.discount


def test_distributional_backup_needs_a_distributional_head_and_a_member_choice():
    with pytest.raises(valorl.ValorlError, match="needs a distributional critic"):
        valorl.TD3BC(distributional_backup=True)
    with pytest.raises(valorl.ValorlError, match="needs --q-reduce min or subset-min"):
        valorl.TD3BC(
            critic=HEADS["c51"], distributional_backup=True, ensemble=QEnsemble(q_reduce="mean")
        )


def test_training_records_the_fitted_support(pendulum_dataset):
    """An HL-Gauss critic without vmin/vmax gets a support fitted to the data's returns before
    the run starts, and config.json records the values used."""
    result = valorl.train(
        "iql",
        pendulum_dataset,
        steps=10,
        log_every=10,
        eval_every=10,
        eval_episodes=1,
        progress=False,
        out="r",
        critic=HEADS["hl-gauss"],
        **TINY["iql"],
    )
    config = json.loads((result.path / "config.json").read_text())
    critic = config["agent"]["hyperparameters"]["critic"]
    assert critic["type"] == "hl-gauss"
    assert critic["vmin"] < -100 and critic["vmax"] == 0.0  # Pendulum's rewards are ≤ 0
    policy = valorl.load_policy(result.path)  # the recorded support rebuilds the same network
    assert (policy.agent.critic.vmin, policy.agent.critic.vmax) == (critic["vmin"], critic["vmax"])
