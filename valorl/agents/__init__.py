"""Agents: one file per algorithm, registered here by the name the CLI uses."""

from __future__ import annotations

from valorl.agents.base import Agent, AgentBase, CriticAgent, CriticAgentBase, Spec
from valorl.agents.bc import BC
from valorl.agents.calql import CalQL
from valorl.agents.cql import CQL
from valorl.agents.discrete import DiscreteCriticAgentBase
from valorl.agents.discrete_bc import DiscreteBC
from valorl.agents.discrete_cql import DiscreteCQL
from valorl.agents.discrete_iql import DiscreteIQL
from valorl.agents.dqc import DQC
from valorl.agents.dqn import DQN
from valorl.agents.dsac_t import DSACT
from valorl.agents.flow_bc import FlowBC
from valorl.agents.fql import FQL
from valorl.agents.iql import IQL
from valorl.agents.jowa import JOWA
from valorl.agents.mbpo import MBPO
from valorl.agents.mobile import MOBILE
from valorl.agents.model_based import ModelBasedSAC
from valorl.agents.model_dqn import ModelDQN, PerfectModelDQN
from valorl.agents.mopo import MOPO
from valorl.agents.qc import QC
from valorl.agents.rebrac import ReBRAC
from valorl.agents.riql import RIQL
from valorl.agents.sac import SAC
from valorl.agents.td3_bc import TD3BC
from valorl.config import from_dict, new_defaults
from valorl.errors import ValorlError

AGENTS: dict[str, type] = {
    cls.name: cls
    for cls in (
        *(BC, TD3BC, IQL, RIQL, SAC, CQL, CalQL, DSACT),
        *(DQN, DiscreteCQL, DiscreteBC, DiscreteIQL, JOWA),
        *(MBPO, MOPO, MOBILE),
        *(ModelDQN, PerfectModelDQN),
        *(FlowBC, FQL, QC, DQC, ReBRAC),
    )
}


def agent_class(name: str) -> type:
    """The agent class registered as `name` (e.g. "iql")."""
    try:
        return AGENTS[name.replace("-", "_").lower()]
    except KeyError:
        raise ValorlError(f"unknown agent {name!r}; choose from {', '.join(AGENTS)}") from None


def make_agent(name: str, **hyperparameters) -> Agent:
    """An agent by registry name with hyperparameters overridden, e.g. `make_agent("iql",
    expectile=0.9)`; values are checked against the field types. A new agent: fields added
    since older runs were saved take their current defaults, not the ones old runs trained
    with."""
    cls = agent_class(name)
    return from_dict(cls, new_defaults(cls) | hyperparameters)


__all__ = [
    "AGENTS",
    "BC",
    "CQL",
    "DQC",
    "DQN",
    "DSACT",
    "FQL",
    "IQL",
    "JOWA",
    "MBPO",
    "MOBILE",
    "MOPO",
    "QC",
    "RIQL",
    "SAC",
    "TD3BC",
    "Agent",
    "AgentBase",
    "CalQL",
    "CriticAgent",
    "CriticAgentBase",
    "DiscreteBC",
    "DiscreteCQL",
    "DiscreteCriticAgentBase",
    "DiscreteIQL",
    "FlowBC",
    "ModelBasedSAC",
    "ModelDQN",
    "PerfectModelDQN",
    "ReBRAC",
    "Spec",
    "agent_class",
    "make_agent",
]
