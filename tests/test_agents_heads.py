"""Every critic-based agent with every critic head and ensemble option: the agent contract
holds whichever way Q is represented."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import TINY, synthetic_dataset

import valorl
from valorl.agents import AGENTS, Spec
from valorl.config import from_dict, to_dict
from valorl.critics import HEADS, QEnsemble, resolve_support
from valorl.training.fused import init_seeds, seed_keys, update_chunk

CRITIC_AGENTS = [name for name, cls in AGENTS.items() if "critic" in cls.__dataclass_fields__]
SPEC = Spec(obs_shape=(3,), action_dim=2, total_updates=10)
DATA = synthetic_dataset(obs_dim=3, action_dim=2).to_batch(discount=0.99)  # returns for Cal-QL


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


@pytest.mark.parametrize("head_name", list(HEADS))
@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_every_agent_with_every_head(agent_name, head_name):
    """IQL and TD3+BC train with each head (support set as the trainer would)."""
    head = resolve_support(HEADS[head_name], -5.0, 5.0)
    check_contract(AGENTS[agent_name](critic=head, **TINY[agent_name]))


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


@pytest.mark.parametrize(
    "ensemble",
    [
        QEnsemble(num_qs=4, q_reduce="subset-min", q_subset=2),
        QEnsemble(num_qs=3, q_reduce="pessimistic", q_pessimism=0.5),
        QEnsemble(num_qs=2, q_reduce="mean", layer_norm=True),
        QEnsemble(num_qs=2, spectral_norm=True),
    ],
    ids=["subset-min", "pessimistic", "mean+layernorm", "spectral"],
)
@pytest.mark.parametrize("agent_name", CRITIC_AGENTS)
def test_ensemble_options(agent_name, ensemble):
    """Ensemble sizes, every reduction, LayerNorm and spectral norm train finitely."""
    check_contract(AGENTS[agent_name](ensemble=ensemble, **TINY[agent_name]))


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
