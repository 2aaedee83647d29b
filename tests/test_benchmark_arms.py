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
    longer = flags(arm("mopo-lambda0.5-epochs10", "hopper-medium-v0"))
    assert longer["--model-max-epochs"] == "10" and longer["--penalty-coef"] == "0.5"
    assert arm("mopo-epochs10", "hopper-medium-v0").count("--model-max-epochs") == 1
    normed = flags(arm("mopo-single-lip-epochs10-layernorm", "walker2d-medium-v0"))
    assert normed["--layer-norm"] == "true" and normed["--model-max-epochs"] == "10"
    assert normed["--model-members"] == "1" and "--layer-norm" not in flags(
        arm("mopo", "walker2d-medium-v0")
    )


def test_unknown_arms_and_variants_of_model_free_arms_are_refused(model_based_offline):
    with pytest.raises(SystemExit, match="unknown arm 'mopo2'"):
        model_based_offline.arm("mopo2", "hopper-medium-replay-v0")
    with pytest.raises(SystemExit, match="only the SAC-based arms take variants"):
        model_based_offline.arm("iql-temp0.1", "hopper-medium-replay-v0")
    with pytest.raises(SystemExit, match="only the SAC-based arms take variants"):
        model_based_offline.arm("cql-layernorm", "hopper-medium-replay-v0")


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


def test_a_cell_counts_the_seeds_whose_critic_diverged(model_based_offline, tmp_path):
    final = [1.0, 2.0, 3.0]
    plain = model_based_offline.cell(tmp_path, final)  # not diagnosed: no count
    assert plain.startswith("2.0 [") and "diverged" not in plain
    (tmp_path / "diagnostics.json").write_text('{"q_diverged": [true, false, true]}')
    assert model_based_offline.cell(tmp_path, final) == plain + " (2 diverged)"


def test_model_on_policy_error_scores_a_model_by_hand(monkeypatch):
    """Two members, member 1 the elite: its mean is scored against the real next state in
    units of the data's spread; u is the largest ‖σ‖ over all members; a fall the rule sees in
    the prediction is not missed."""
    import numpy as np

    from valorl.data import Dataset
    from valorl.models.termination import termination_rule

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = importlib.import_module("model_on_policy_error")
    z = np.array([[1.2, 0.0], [0.5, 0.0]], np.float32)  # hopper (z, angle); the second fell
    rows = Dataset(
        z, np.zeros((2, 1), np.float32), np.array([1.0, 2.0], np.float32),
        z + np.array([[0.1, 0.0], [-0.1, 0.0]], np.float32),
        np.array([False, True]), np.array([True, False]),
    )  # fmt: skip

    class Model:
        def predict(self, obs, actions, seed_index):
            assert seed_index == 0
            return {
                "elites": np.array([1]),
                "next_obs_mean": np.stack([obs + 9.0, obs]),  # the elite predicts no change
                "next_obs_std": np.array([[[0.3, 0.0]] * 2, [[0.0, 0.0]] * 2]),
                "reward_mean": np.array([[9.0, 9.0], [1.5, 2.5]]),
                "reward_std": np.array([[0.4, 0.4], [0.0, 0.0]]),
            }

    obs_error, reward_error, u, missed = script.scores(
        Model(), 0, rows, np.array([0.5, 1.0]), termination_rule("Hopper-v5")
    )
    # errors (0.1 / 0.5)² on z, 0 on the angle, averaged over 2 rows × 2 dimensions
    assert obs_error == pytest.approx(0.04 / 2)
    assert reward_error == pytest.approx(0.5)  # the elite promises 0.5 more on both rows
    assert u == pytest.approx(0.5)  # member 0's ‖(0.3, 0, 0.4)‖ on both rows
    assert missed == 0.0  # the fallen row's predicted z = 0.5 is unhealthy too


def test_gridworld_runs_of_two_sizes_of_one_world_get_their_own_directories(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    generalization = importlib.import_module("model_generalization")
    out = Path("runs")
    five = generalization.run_dir(out, "high", "PanFlute-v0", "er")
    eight = generalization.run_dir(out, "high", "PanFlute-8pipes-v0", "er")
    assert five == out / "high-panflute-er" and eight == out / "high-panflute-8pipes-er"
    assert generalization.arm_flags("er", "PanFlute-8pipes-v0", "high", "200") == (
        generalization.arm_flags("er", "PanFlute-v0", "high", "200")
    )  # the tuned step size and temperature are the family's
