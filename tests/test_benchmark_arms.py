"""Benchmark scripts build the `valorl train` command each arm name stands for: a wrong recipe
would put one setting's numbers under another's name in BENCHMARKS.md."""

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def model_based_offline(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("model_based_offline")


def flags(recipe: str) -> dict[str, str]:
    agent, *rest = recipe.split()
    pairs = {}
    for i, token in enumerate(rest):
        if token.startswith("--"):
            pairs[token] = rest[i + 1]
    return {"agent": agent} | pairs


def test_variant_suffixes_replace_the_reference_penalty_and_start_the_temperature(
    model_based_offline,
):
    arm = model_based_offline.arm
    reference = flags(arm("mopo", "halfcheetah-medium-replay-v0"))
    assert reference["--penalty-coef"] == "0.5" and "--init-temperature" not in reference
    variant = flags(arm("mopo-single-lip-lambda0.1-temp0.1", "halfcheetah-medium-replay-v0"))
    assert variant["--penalty-coef"] == "0.1" and variant["--init-temperature"] == "0.1"
    assert variant["--model-members"] == "1" and variant["--robust-coef"] == "1"
    assert (
        arm("mopo-single-lip-lambda0.1-temp0.1", "hopper-medium-replay-v0").count("--penalty-coef")
        == 1
    )
    walker = flags(arm("mobile-temp0.1", "walker2d-medium-replay-v0"))
    assert walker["agent"] == "mobile" and walker["--penalty-coef"] == "0.5"
    assert walker["--rollout-length"] == "1"


def test_unknown_arms_and_variants_of_model_free_arms_are_refused(model_based_offline):
    with pytest.raises(SystemExit, match="unknown arm 'mopo2'"):
        model_based_offline.arm("mopo2", "hopper-medium-replay-v0")
    with pytest.raises(SystemExit, match="only the SAC-based arms take variants"):
        model_based_offline.arm("iql-temp0.1", "hopper-medium-replay-v0")


def test_medium_datasets_take_the_references_own_penalties(model_based_offline):
    arm = model_based_offline.arm
    assert flags(arm("mopo", "hopper-medium-v0"))["--penalty-coef"] == "5.0"
    assert flags(arm("mopo", "hopper-medium-replay-v0"))["--penalty-coef"] == "2.5"
    assert flags(arm("mobile", "hopper-medium-v0"))["--penalty-coef"] == "1.5"
    walker = flags(arm("mopo", "walker2d-medium-v0"))
    assert walker["--penalty-coef"] == "0.5" and walker["--rollout-length"] == "5"
    with pytest.raises(SystemExit, match="no reference settings for 'hopper-expert-v0'"):
        arm("mopo", "hopper-expert-v0")


def test_model_fits_cap_epochs_by_the_size_of_the_data(model_based_offline):
    arm = model_based_offline.arm
    assert flags(arm("mopo", "hopper-medium-replay-v0"))["--model-max-epochs"] == "30"
    assert flags(arm("mobile", "walker2d-medium-v0"))["--model-max-epochs"] == "2"
    assert arm("mopo-single-lip", "halfcheetah-medium-v0").count("--model-max-epochs") == 1
