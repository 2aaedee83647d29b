"""`valorl ope`: off-policy evaluation of trained runs (see valorl/ope/)."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from valorl.launch.args import add_old_spelling
from valorl.ui import out

DESCRIPTION = """\
Estimate each policy's value from logged data, without running it, then check the estimates
against rollouts. Every seed of every RUN_DIR is one candidate policy.

The evaluated policy is the candidate's deterministic action plus Gaussian noise of standard
deviation --target-noise (a fraction of half the action range), clipped to the action bounds:
importance sampling needs a stochastic policy. With discrete actions it is epsilon-greedy
around the candidate's greedy action, epsilon = --target-noise in [0, 1] (0: the greedy policy
itself), and the behaviour is a fitted softmax policy, or epsilon-greedy around a given run's
policy (--behaviour-run, --behaviour-epsilon). Its true value is measured by rolling out exactly
that policy for --episodes episodes. Values are expected discounted returns (--discount) over
the environment's episodes, time limit included.

Estimators, each with a bootstrap 95% interval over the data's complete episodes (episodes
cut short are left out; FQE still trains on their transitions):
  fqe    fitted Q evaluation (Le et al. 2019): mean of V(s_0) under the learned Q, which sees
         the time step when the environment has a time limit
  pdis   per-decision importance sampling (Precup et al. 2000)
  wpdis  weighted per-decision importance sampling (self-normalised, biased, lower variance)
  dr     doubly robust (Jiang & Li 2016): PDIS with FQE's Q and V as control variates

Importance weights need the behaviour's action probabilities: datasets made by `valorl collect`
store them; for other data a Gaussian behaviour policy is fitted by maximum likelihood (the
output says which). Selection metrics per estimator: Spearman rank correlation with the true
values, regret@k (best true value minus the best among the estimator's top k) and SharpeRatio@k
(Kiyohara et al. 2023: best true value among the top k minus the behaviour's value, over the
std of the true values among the top k).
"""

EPILOG = """\
example:
  valorl ope runs/iql-pendulum runs/bc-pendulum --dataset valorl/pendulum-mixed-v0 \\
      --episodes 20 --out ope.json
"""


def add_ope_parser(commands) -> None:
    parser = commands.add_parser(
        "ope",
        help="estimate policies' values from logged data (FQE, PDIS, DR) and check by rollouts",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="directories made by `valorl train`"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="ID_OR_PATH",
        help="logged data: local Minari id, Minari directory, D4RL-layout .hdf5, or .npz",
    )
    parser.add_argument(
        "--env", default=None, help="Gymnasium id for rollouts, if the dataset names none"
    )
    parser.add_argument(
        "--discount", type=float, default=0.99, metavar="GAMMA", help="γ (default: 0.99)"
    )
    parser.add_argument(
        "--target-noise",
        type=float,
        default=0.2,
        metavar="SIGMA",
        help="std of the evaluated policies' action noise, as a fraction of half the action "
        "range (default: 0.2)",
    )
    parser.add_argument(
        "--target-temperature",
        type=float,
        default=None,
        metavar="T",
        help="discrete actions: evaluate the softmax over each candidate's Q-values at "
        "temperature T (critic agents) instead of epsilon-greedy",
    )
    parser.add_argument(
        "--episodes", type=int, default=10, help="rollouts per policy for true values (default: 10)"
    )
    fit = parser.add_argument_group("fitted models")
    fit.add_argument(
        "--fqe-steps", type=int, default=10_000, help="FQE gradient steps (default: 10000)"
    )
    fit.add_argument(
        "--hidden-dims",
        default="256,256",
        help="hidden layers of FQE and of a fitted behaviour model (default: 256,256)",
    )
    fit.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    fit.add_argument("--lr", type=float, default=3e-4, help="learning rate (default: 3e-4)")
    fit.add_argument(
        "--behaviour-steps",
        type=int,
        default=5000,
        help="gradient steps of a fitted behaviour model, when the data store no "
        "log-probabilities (default: 5000)",
    )
    fit.add_argument(
        "--behaviour-run",
        default=None,
        metavar="RUN_DIR",
        help="discrete actions: the data were collected epsilon-greedily around this run's "
        "policy (its first seed), instead of fitting a behaviour model",
    )
    fit.add_argument(
        "--behaviour-epsilon",
        type=float,
        default=0.1,
        help="epsilon of --behaviour-run's collection (default: 0.1)",
    )
    report = parser.add_argument_group("report")
    reps = report.add_argument(
        "--bootstrap-reps",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples per interval (default: 1000)",
    )
    add_old_spelling(report, "--bootstrap", reps)
    report.add_argument(
        "--top-k", default="1,2,3,5", help="k of regret@k and SharpeRatio@k (default: 1,2,3,5)"
    )
    report.add_argument("--seed", type=int, default=0, help="seed of fits and rollouts")
    report.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=cmd_ope)


def cmd_ope(args: argparse.Namespace) -> int:
    from valorl.config import coerce
    from valorl.ope import ESTIMATORS, run_ope

    result = run_ope(
        args.run_dirs,
        args.dataset,
        env=args.env,
        discount=args.discount,
        target_noise=args.target_noise,
        target_temperature=args.target_temperature,
        episodes=args.episodes,
        fqe_steps=args.fqe_steps,
        hidden_dims=coerce(tuple[int, ...], args.hidden_dims, "--hidden-dims"),
        batch_size=args.batch_size,
        lr=args.lr,
        behaviour_steps=args.behaviour_steps,
        behaviour_run=args.behaviour_run,
        behaviour_epsilon=args.behaviour_epsilon,
        bootstrap=args.bootstrap_reps,
        top_k=coerce(tuple[int, ...], args.top_k, "--top-k"),
        seed=args.seed,
        out=args.out,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    settings = result["settings"]
    table = Table(
        title=f"off-policy evaluation on {result['dataset']['name']}: "
        f"{result['dataset']['episodes']} episodes, γ = {settings['discount']}, "
        f"target noise {settings['target_noise']} (estimate [95% interval])"
    )
    table.add_column("policy")
    table.add_column(f"true value ({settings['rollout_episodes']} rollouts)", justify="right")
    for name in ESTIMATORS:
        table.add_column(name, justify="right")
    table.add_column("ESS", justify="right")
    for policy in result["policies"]:
        truth = policy["true_value"]
        table.add_row(
            policy["name"],
            _cell(truth["mean"], truth["low"], truth["high"]),
            *(
                _cell(estimate["estimate"], estimate["low"], estimate["high"])
                for estimate in (policy["estimates"][name] for name in ESTIMATORS)
            ),
            _number(policy["effective_sample_size"]),
        )
    out.print(table)
    metrics = list(next(iter(result["selection"].values())))
    selection = Table(title="policy selection by each estimator (true values from rollouts)")
    selection.add_column("estimator")
    for metric in metrics:
        selection.add_column(metric, justify="right")
    for name, values in result["selection"].items():
        selection.add_row(name, *(_number(values[m]) for m in metrics))
    out.print(selection)
    behaviour = result["behaviour"]
    out.print(
        f"behaviour log-probabilities: {behaviour['log_probs']}; behaviour value "
        f"{_number(behaviour['value'])}; ESS: effective number of episodes of the "
        "importance weights"
    )
    if args.out:
        out.print(f"wrote {args.out}")
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.2f}"


def _cell(point: float | None, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return _number(point)
    return f"{_number(point)} [{_number(low)}, {_number(high)}]"
