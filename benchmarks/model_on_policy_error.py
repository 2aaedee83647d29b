"""Is an offline model-based policy exploiting its model? The run's learned dynamics models
scored on transitions its own policy makes in the real environment, beside the same scores on
the dataset's rows.

    MINARI_DATASETS_PATH=... python benchmarks/model_on_policy_error.py \\
        runs/mb-offline40/mopo-hopper-medium-v0 runs/mb-offline40/mobile-hopper-medium-replay-v0

For every run and seed: the seed's greedy policy plays `--episodes` episodes; on its real
transitions and on `--rows` random dataset rows the seed's model (the mean over its elites)
is scored by

- obs error: the mean squared error of the predicted next observation, per dimension, in units
  of the data's observation standard deviation (1.0: as wrong as guessing the data's mean);
- reward error: the predicted reward less the real one (positive: the model promises more);
- u: MOPO's uncertainty max_i ‖σ_i(s, a)‖₂ (the penalty before λ);
- missed falls: of the real transitions that terminate, the share whose predicted next state
  the environment's termination rule (`valorl.models.termination`) calls healthy: a model that
  does not see the fall coming rewards the actions that cause it;
- Q / G: on the policy's own transitions, the critics' mean Q(s, a) against the discounted
  return the policy then really collects from s (γ of the run; `valorl diagnose --episodes`).

A policy that exploits its model shows errors on its own transitions far above those on the
data while u stays near the data's (the penalty does not see the error); a critic that
overrates the policy shows Q far above G. Prints one Markdown table row per run and seed.
"""

from __future__ import annotations

import numpy as np
from common import BenchmarkParser

import valorl
from valorl.collection.on_policy import play
from valorl.data import Dataset
from valorl.models.termination import termination_rule
from valorl.training.diagnostics import policy_value_check


def scores(model, seed_index: int, rows: Dataset, obs_std: np.ndarray, rule):
    """(obs error, reward error, mean u, missed falls or nan) of one seed's model on rows."""
    p = model.predict(rows.observations, rows.actions, seed_index)
    elites = p["elites"]
    next_obs = p["next_obs_mean"][elites].mean(axis=0)
    reward = p["reward_mean"][elites].mean(axis=0)
    std = np.concatenate([p["next_obs_std"], p["reward_std"][..., None]], axis=-1)
    u = np.sqrt(np.square(std).sum(axis=-1)).max(axis=0)
    obs_error = float(np.mean(np.square((next_obs - rows.next_observations) / obs_std)))
    missed = np.nan
    if rule is not None and rows.terminals.any():
        missed = float(1.0 - np.asarray(rule(next_obs[rows.terminals])).mean())
    return obs_error, float(np.mean(reward - rows.rewards)), float(u.mean()), missed


def main() -> None:
    parser = BenchmarkParser(__doc__)
    parser.add_argument("runs", nargs="+", help="model-based run directories (MOPO, MOBILE)")
    parser.add_argument("--episodes", type=int, default=5, help="real episodes per seed")
    parser.add_argument("--rows", type=int, default=5000, help="dataset rows scored per seed")
    args = parser.parse_args()
    print("| run | seed | return | obs error (policy / data) | reward error (policy / data) "
          "| u (policy / data) | missed falls | Q / G (policy) |")  # fmt: skip
    print("|---|---:|---:|---|---|---|---:|---|")
    for run in args.runs:
        policy, model = valorl.load_policy(run), valorl.load_model(run)
        data = valorl.load_dataset(policy.info.name)
        obs_std = data.observations.std(axis=0) + 1e-6
        rule = termination_rule(policy.info.env_id)
        pick = np.random.default_rng(0).choice(len(data), args.rows, replace=False)
        data_rows = Dataset(
            data.observations[pick],
            data.actions[pick],
            data.rewards[pick],
            data.next_observations[pick],
            data.terminals[pick],
            ~data.terminals[pick],  # unrelated rows: each its own piece
        )
        played = [play(policy, i, args.episodes) for i in range(len(policy.seeds))]
        critic = policy_value_check(policy.agent, policy.states, policy.normalizer, played)
        for seed_index, (seed, real) in enumerate(zip(policy.seeds, played, strict=True)):
            on_policy = scores(model, seed_index, real, obs_std, rule)
            on_data = scores(model, seed_index, data_rows, obs_std, None)
            q, to_go = critic["q_mean"][seed_index], critic["return_to_go_mean"][seed_index]
            ret = critic["return"][seed_index]
            print(
                f"| {run} | {seed} | {ret:.0f} | {on_policy[0]:.3f} / {on_data[0]:.3f} "
                f"| {on_policy[1]:+.3f} / {on_data[1]:+.3f} | {on_policy[2]:.3f} / "
                f"{on_data[2]:.3f} | {on_policy[3]:.2f} | {q:.0f} / {to_go:.0f} |"
            )


if __name__ == "__main__":
    main()
