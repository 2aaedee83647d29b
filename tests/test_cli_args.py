"""Agent hyperparameters from the command line: plain fields, the nested ensemble settings and
the critic head with its parameters."""

from __future__ import annotations

import pytest

import valorl
from valorl.cli.main import build_parser
from valorl.critics import Categorical, HLGauss, Huber, QEnsemble, Scalar
from valorl.errors import ValorlError
from valorl.launch.args import parse_overrides


def overrides(*argv: str, agent: str = "iql") -> dict:
    args, unknown = build_parser().parse_known_args(["train", agent, "--dataset", "x", *argv])
    assert not unknown
    return parse_overrides(args, args.agent_cls)


def test_no_flags_no_overrides():
    assert overrides() == {}


def test_head_by_name_with_parameters():
    """`--critic hl-gauss --bins 51 --vmin -10 --vmax 0` builds exactly that head."""
    got = overrides("--critic", "hl-gauss", "--bins", "51", "--vmin", "-10", "--vmax", "0")
    assert got == {"critic": HLGauss(bins=51, vmin=-10.0, vmax=0.0)}
    assert overrides("--critic", "huber", "--huber-delta", "2")["critic"] == Huber(huber_delta=2.0)


def test_head_parameters_apply_to_the_default_head():
    """A parameter alone changes the agent's default head (mse has none, so it is refused)."""
    with pytest.raises(ValorlError, match="--bins does not apply to --critic mse"):
        overrides("--bins", "11")
    agent = valorl.make_agent("iql", **overrides("--critic", "c51"))
    assert agent.critic == Categorical() and valorl.IQL().critic == Scalar()


def test_parameter_of_another_head_is_refused():
    with pytest.raises(ValorlError, match="--sigma-ratio does not apply to --critic c51"):
        overrides("--critic", "c51", "--sigma-ratio", "0.5")


def test_ensemble_flags_build_the_nested_settings():
    """Flags of the nested ensemble change only what they name."""
    got = overrides("--num-qs", "10", "--q-reduce", "subset-min", "--layer-norm", "true")
    assert got == {"ensemble": QEnsemble(num_qs=10, q_reduce="subset-min", layer_norm=True)}


def test_bad_ensemble_values_are_one_line_errors():
    with pytest.raises(ValorlError, match="--num-qs: expected int, got 'many'"):
        overrides("--num-qs", "many")
    with pytest.raises(ValorlError, match="--q-subset must be between 1 and --num-qs"):
        overrides("--q-reduce", "subset-min", "--q-subset", "5")


def test_td3_bc_distributional_backup_flag():
    got = overrides("--critic", "quantile", "--distributional-backup", "true", agent="td3_bc")
    agent = valorl.make_agent("td3_bc", **got)
    assert agent.distributional_backup and agent.critic.name == "quantile"
