"""Configuration dataclasses: JSON round trip, value coercion with one-line errors, field docs."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Literal

import pytest

from valorl.agents import AGENTS, IQL, MOPO, make_agent
from valorl.config import (
    coerce,
    field_docs,
    flag,
    from_dict,
    require_at_least_one,
    require_positive,
    to_dict,
)
from valorl.critics import Categorical, CriticHead, QEnsemble, Scalar
from valorl.errors import ValorlError
from valorl.models import DynamicsModel, Rollouts


def _other_value(tp, default):
    """A valid value of type `tp` that differs from `default`, so a round trip that silently
    fell back to defaults would be caught."""
    if tp == CriticHead:
        return Categorical(bins=11, vmin=-1.0, vmax=2.0)
    if tp is QEnsemble:  # subset-min keeps TD3+BC's distributional backup valid
        return QEnsemble(
            num_qs=5,
            q_reduce="subset-min",
            q_subset=3,
            q_pessimism=0.5,
            layer_norm=True,
            spectral_norm=True,
            activation="elu",
        )
    if tp is DynamicsModel:
        return DynamicsModel(
            model_members=3, model_elites=2, model_kind="deterministic",
            model_hidden_dims=(7, 5), model_weight_decay=(1e-4,), model_lr=5e-4,
            model_batch_size=64, model_holdout=0.1, model_max_holdout=100, model_patience=2,
            model_max_epochs=9, model_logvar_bound_loss=0.02, model_loss="vagram",
        )  # fmt: skip
    if tp is Rollouts:
        return Rollouts(
            rollout_batch=7, rollout_length=4, rollout_start_length=2, rollout_schedule=(3, 9),
            rollout_every=11, rollout_retain=2, real_ratio=0.25,
        )  # fmt: skip
    if dataclasses.is_dataclass(tp):  # a nested settings dataclass (model_dqn's model)
        hints = typing.get_type_hints(tp)
        return tp(
            **{f.name: _other_value(hints[f.name], f.default) for f in dataclasses.fields(tp)}
        )
    if tp is str:  # perfect_model_dqn's simulator: a JAX environment id
        return "ProcMaze-4x4-v0"
    if typing.get_origin(tp) is Literal:
        return next(choice for choice in typing.get_args(tp) if choice != default)
    if type(None) in typing.get_args(tp):  # an optional value (X | None): a set X
        (inner,) = (arg for arg in typing.get_args(tp) if arg is not type(None))
        return _other_value(inner, 1.0 if default is None else default)
    if tp is bool:
        return not default
    if tp is int:
        return default + 3
    if tp is float:
        return default * 0.5 + 0.125
    if typing.get_origin(tp) is tuple:
        return (7, 5, 3)
    raise AssertionError(f"no test value for {tp}")


SPECIAL = {
    "fql": {"horizon": 1},
    "dqc": {"critic": Scalar()},
    "jowa": {
        "width": 96,
        "heads": 3,
        "normalize_observations": False,
        "reward_normalization": "none",
        "behaviour_cloning": False,
        "world_model_steps": 0,
    },
}
"""Values given instead where changing every field would combine options an agent refuses
(FQL's n-step returns with chunks; DQC with a distributional head; JOWA's width not a multiple
of its heads, its token observations normalised, planning with a behaviour-cloning head, or
imagination before its world model has trained)."""


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_round_trip_through_json(name):
    """to_dict -> json -> from_dict rebuilds an equal agent with every field changed from its
    default: checkpoints and run records store hyperparameters this way."""
    cls = AGENTS[name]
    hints = typing.get_type_hints(cls)
    special = SPECIAL.get(name, {})
    changed = {
        f.name: _other_value(hints[f.name], f.default)
        for f in dataclasses.fields(cls)
        if f.init and f.name not in special
    }
    agent = cls(**changed, **special)
    assert all(getattr(agent, k) != getattr(cls(), k) for k in changed)
    rebuilt = from_dict(cls, json.loads(json.dumps(to_dict(agent))))
    assert rebuilt == agent
    if hasattr(rebuilt, "hidden_dims"):  # JSON lists come back as tuples (hashable)
        assert type(rebuilt.hidden_dims) is tuple


def test_to_dict_is_plain_json():
    """Tuples become lists and nothing else changes, so the dict is valid JSON as is."""
    data = to_dict(IQL(hidden_dims=(4, 2), expectile=0.9))
    assert data["hidden_dims"] == [4, 2]
    assert data["expectile"] == 0.9
    assert data["actor_lr_schedule"] == "cosine"
    assert set(data) == {f.name for f in dataclasses.fields(IQL)}


def test_from_dict_partial_keeps_defaults():
    """Fields left out of the dict keep their defaults (old run records stay loadable)."""
    assert from_dict(IQL, {"beta": "10"}) == IQL(beta=10.0)


def test_a_field_added_later_reads_older_configs_as_they_behaved():
    """MOPO's actor schedule is a cosine now; a config written before the field existed
    trained with a constant rate and is read so, and one that names it keeps its value."""
    new = to_dict(MOPO())
    assert new["actor_lr_schedule"] == "cosine"
    old = {k: v for k, v in new.items() if k != "actor_lr_schedule"}
    assert from_dict(MOPO, old).actor_lr_schedule == "constant"
    assert from_dict(MOPO, new) == MOPO()
    # a new agent from overrides (the CLI's and Python API's path) is not an old config
    assert make_agent("mopo", penalty_coef=0.5).actor_lr_schedule == "cosine"
    assert make_agent("mobile").actor_lr_schedule == "cosine"
    assert make_agent("mopo", actor_lr_schedule="constant").actor_lr_schedule == "constant"


@pytest.mark.parametrize(
    ("tp", "value", "expected"),
    [
        (tuple[int, ...], "64,64", (64, 64)),
        (tuple[int, ...], " 8, 16 ,", (8, 16)),
        (tuple[int, ...], [32, "4"], (32, 4)),
        (tuple[int, ...], "", ()),
        (bool, "true", True),
        (bool, "false", False),
        (bool, "TRUE", True),
        (bool, "0", False),
        (bool, "yes", True),
        (bool, "off", False),
        (bool, False, False),
        (float, "3e-4", 3e-4),
        (float, 2, 2.0),
        (int, "12", 12),
        (int, 4.0, 4),
        (str, 5, "5"),
        (Literal["cosine", "constant"], "constant", "constant"),
        (float | None, None, None),
        (float | None, "0.5", 0.5),
    ],
)
def test_coerce_conversions(tp, value, expected):
    """Command-line strings and JSON values convert to the declared field type."""
    result = coerce(tp, value, "X.f")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("tp", "value", "message"),
    [
        (float, "abc", "IQL.expectile: expected float, got 'abc'"),
        (int, "2.5", "IQL.expectile: expected int, got '2.5'"),
        (int, 2.5, "IQL.expectile: expected int, got 2.5"),
        (bool, "maybe", "IQL.expectile: expected true or false, got 'maybe'"),
        (bool, 2, "IQL.expectile: expected true or false, got 2"),
        (
            Literal["none", "return_range"],
            "minmax",
            "IQL.expectile: 'minmax' is not one of none, return_range",
        ),
        (tuple[int, ...], "64,x", "IQL.expectile: expected int, got 'x'"),
    ],
)
def test_coerce_errors(tp, value, message):
    """Bad values raise ValorlError with the field name, expected type and the value."""
    with pytest.raises(ValorlError) as exc:
        coerce(tp, value, "IQL.expectile")
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"expectile": "high"}, "IQL.expectile: expected float, got 'high'"),
        (
            {"normalize_observations": "perhaps"},
            "IQL.normalize_observations: expected true or false, got 'perhaps'",
        ),
        (
            {"actor_lr_schedule": "linear"},
            "IQL.actor_lr_schedule: 'linear' is not one of constant, cosine",
        ),
        ({"zeta": 1, "alpha": 2.5}, "unknown IQL field(s): alpha, zeta"),
        ({"name": "bc"}, "unknown IQL field(s): name"),
    ],
)
def test_from_dict_errors(data, message):
    """from_dict names the class and field; ClassVars like `name` are not settable fields."""
    with pytest.raises(ValorlError) as exc:
        from_dict(IQL, data)
    assert str(exc.value) == message


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_field_docs_cover_every_field(name):
    """Every hyperparameter has a non-empty docstring: the CLI shows it as the option's help."""
    cls = AGENTS[name]
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    assert all(text.strip() for text in docs.values())


def test_field_docs_text_is_the_attribute_docstring():
    """The doc is the string literal under the field, whitespace collapsed to one line."""
    docs = field_docs(IQL)
    assert docs["max_weight"] == "Clip on the exponentiated advantages."
    assert "\n" not in docs["expectile"]


@dataclasses.dataclass(frozen=True)
class _Counts:
    seeds: int = 1
    eval_episodes: int = 1
    init_temperature: float = 1.0


def test_flag_spells_a_field_as_its_command_line_option():
    assert flag("eval_episodes") == "--eval-episodes"
    assert flag("utd") == "--utd"


def test_require_at_least_one_names_the_first_field_below_one():
    require_at_least_one(_Counts(), "seeds", "eval_episodes")  # 1 is allowed
    with pytest.raises(ValorlError, match=r"^--eval-episodes must be at least 1, got 0$"):
        require_at_least_one(_Counts(eval_episodes=0), "seeds", "eval_episodes")
    with pytest.raises(ValorlError, match=r"^--seeds must be at least 1, got -2$"):
        require_at_least_one(_Counts(seeds=-2, eval_episodes=0), "seeds", "eval_episodes")


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_require_positive_refuses_zero_negative_and_nan(bad):
    require_positive(_Counts(init_temperature=1e-9), "init_temperature")
    with pytest.raises(ValorlError, match=r"^--init-temperature must be positive, got "):
        require_positive(_Counts(init_temperature=bad), "init_temperature")


def test_agents_and_models_check_their_counts_with_the_flag_in_the_message():
    from valorl.agents import SAC

    with pytest.raises(ValorlError, match=r"--utd must be at least 1, got 0"):
        SAC(utd=0)
    with pytest.raises(ValorlError, match=r"--model-max-epochs must be at least 1, got 0"):
        DynamicsModel(model_max_epochs=0)
    with pytest.raises(ValorlError, match=r"--rollout-retain must be at least 1, got 0"):
        Rollouts(rollout_retain=0)
