"""`valorl report`: grouping runs into algorithms and tasks, the numbers in summary.json, the
page's sections and figures, and all-or-nothing writing with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import train_two_widths

import valorl
from valorl.cli.main import main
from valorl.errors import ValorlError
from valorl.eval.aggregate import (
    METRICS,
    interval_estimate,
    probability_of_improvement_interval,
)
from valorl.report import build_report, figures
from valorl.report.gather import algorithm_label, distinguishing_keys, gather
from valorl.report.html import SECTIONS, _diagnostics
from valorl.stats import mean_interval
from valorl.training.run_dir import RunDir

REPS = 300  # bootstrap resamples in tests: enough to exercise, fast to compute

IQL = {
    "expectile": 0.7,
    "hidden_dims": [8, 8],
    "critic": {"type": "mse"},
    "ensemble": {"num_qs": 2, "q_reduce": "min"},
}
HL_GAUSS = {"type": "hl-gauss", "bins": 101, "sigma_ratio": 0.75}


def fake_run(
    path: Path,
    scores: np.ndarray,
    *,
    agent: str = "iql",
    hyperparameters: dict | None = None,
    data: str = "task-a",
    seeds: list[int] | None = None,
    steps: list[int] | None = None,
    normalized: bool = True,
    finished: bool = True,
    planned: int | None = None,
) -> Path:
    """A run directory written by hand: `scores` has shape (seeds, evaluations, episodes) and
    holds normalised scores (returns are scores − 1000); without `normalized` there are no
    reference returns and the returns equal `scores`. `planned` steps default to the last
    evaluation's (10 more if unfinished)."""
    scores = np.asarray(scores, np.float64)
    n_seeds, n_evals, _ = scores.shape
    seeds = list(range(n_seeds)) if seeds is None else seeds
    steps = [10 * (i + 1) for i in range(n_evals)] if steps is None else steps
    config = {
        "valorl_version": valorl.__version__,
        "agent": {"name": agent, "hyperparameters": hyperparameters or {}},
        "data": {"name": data, "source": "", "fingerprint": f"fp-{data}", "env_id": None},
        "schedule": {"steps": planned or (steps[-1] if finished else steps[-1] + 10)},
        "seeds": seeds,
    }
    run = RunDir.open(path, config)
    if normalized:
        run.write_evaluations(np.array(steps), scores - 1000, scores)
    else:
        run.write_evaluations(np.array(steps), scores, None)
    if finished:
        run.write_result({"step": steps[-1]})
    return path


def per_seed(finals: list[float], evals: int = 2, episodes: int = 2) -> np.ndarray:
    """(seeds, evals, episodes) scores whose final-evaluation episode mean is `finals`; earlier
    evaluations score 10 less, and episodes straddle the mean by ±1."""
    finals = np.asarray(finals, np.float64)
    curve = finals[:, None] - 10.0 * np.arange(evals)[::-1]
    return curve[:, :, None] + np.array([-1.0, 1.0][:episodes])[None, None, :]


# ---- grouping ------------------------------------------------------------------------------------


def test_algorithms_are_labelled_by_the_hyperparameters_that_differ(tmp_path):
    """IQL with two critic heads on two tasks and BC on one: three algorithms, labelled by
    the differing key only; the HL-Gauss support fitted per dataset does not split it."""
    runs = tmp_path / "runs"
    scores = per_seed([50.0, 60.0])
    for task, (vmin, vmax) in [("task-a", (-10.0, 0.0)), ("task-b", (-50.0, 0.0))]:
        fake_run(runs / f"mse-{task}", scores, hyperparameters=IQL, data=task)
        hl = IQL | {"critic": HL_GAUSS | {"vmin": vmin, "vmax": vmax}}
        fake_run(runs / f"hl-{task}", scores, hyperparameters=hl, data=task)
    fake_run(runs / "bc", scores, agent="bc", hyperparameters={"hidden_dims": [8, 8]})
    study = gather([runs])
    labels = sorted(a.label for a in study.algorithms)
    assert labels == ["bc", "iql critic=hl-gauss", "iql critic=mse"]
    assert study.tasks == ["task-a", "task-b"]
    by_label = {a.label: a for a in study.algorithms}
    assert len(by_label["iql critic=hl-gauss"].runs) == 2
    matrix, tasks = study.matrix(by_label["iql critic=mse"])
    assert sorted(tasks) == ["task-a", "task-b"] and matrix.shape == (2, 2)
    assert any("bc was not run on task-b" in w for w in study.warnings)
    assert not any("vmin" in w for w in study.warnings)  # fitted to each dataset, unremarkable


def test_settings_tuned_per_task_keep_one_algorithm_with_a_warning(tmp_path):
    """An expectile chosen per dataset (as IQL's paper does per domain) is one algorithm; a sweep
    of the expectile on one dataset is two."""
    scores = per_seed([50.0, 60.0])
    fake_run(tmp_path / "a", scores, hyperparameters=IQL, data="task-a")
    fake_run(tmp_path / "b", scores, hyperparameters=IQL | {"expectile": 0.9}, data="task-b")
    study = gather([tmp_path / "a", tmp_path / "b"])
    assert [a.label for a in study.algorithms] == ["iql"]
    assert "iql: expectile differs between tasks (0.7 on task-a; 0.9 on task-b)" in "\n".join(
        study.warnings
    )
    fake_run(tmp_path / "c", scores, hyperparameters=IQL | {"expectile": 0.9}, data="task-a")
    study = gather([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert [a.label for a in study.algorithms] == ["iql expectile=0.7", "iql expectile=0.9"]


def test_distinguishing_keys_and_labels_by_hand():
    a = {"expectile": 0.7, "hidden_dims": (64, 64), "critic.type": "mse", "critic.vmin": None}
    b = a | {"expectile": 0.9, "hidden_dims": (256, 256)}
    assert distinguishing_keys([a, b], ["t", "t"]) == ["expectile", "hidden_dims"]
    assert algorithm_label("iql", {"expectile": 0.9, "hidden_dims": (256, 256)}) == (
        "iql expectile=0.9 hidden_dims=256,256"
    )
    # settings that differ only between tasks are tuned per task; on one task they count
    assert distinguishing_keys([a, b], ["t1", "t2"]) == []
    c, d = a | {"critic.vmin": -10.0}, a | {"critic.vmin": -50.0}
    assert distinguishing_keys([c, d], ["t1", "t1"]) == ["critic.vmin"]
    # a key only some runs have is told apart by the key that selects it
    e = a | {"critic.type": "hl-gauss", "critic.bins": 101}
    assert distinguishing_keys([a, e], ["t", "t"]) == ["critic.type"]
    # a tagged head's type is shown under the head's name; settings a head lacks are skipped
    settings = {"critic.type": "mse", "critic.bins": None, "ensemble.layer_norm": True}
    assert algorithm_label("iql", settings) == "iql critic=mse layer_norm=true"
    # the same short name twice keeps the full keys
    clash = {"actor.lr": 0.001, "critic.lr": 0.0003}
    assert algorithm_label("x", clash) == "x actor.lr=0.001 critic.lr=0.0003"


# ---- numbers ------------------------------------------------------------------------------------


def test_summary_numbers_equal_the_aggregate_functions_on_the_same_matrix(tmp_path):
    """Two algorithms on two tasks, runs spread over two directories per cell: summary.json's
    aggregates, improvement probabilities and per-dataset intervals are exactly those of
    valorl.eval on the hand-made (runs × tasks) matrices."""
    finals = {
        ("iql", "task-a"): [10.0, 40.0, 20.0, 80.0],
        ("iql", "task-b"): [55.0, 65.0, 90.0, 5.0],
        ("bc", "task-a"): [5.0, 15.0, 25.0, 30.0],
        ("bc", "task-b"): [35.0, 25.0, 45.0, 60.0],
    }
    for (agent, task), values in finals.items():
        for half in (0, 1):  # seeds 0-1 and 2-3 in separate run directories
            fake_run(
                tmp_path / "runs" / f"{agent}-{task}-{half}",
                per_seed(values[2 * half : 2 * half + 2]),
                agent=agent,
                data=task,
                seeds=[2 * half, 2 * half + 1],
            )
    summary = build_report([tmp_path / "runs"], tmp_path / "out", reps=REPS, seed=3)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    matrices = {
        agent: np.array([finals[(agent, t)] for t in ("task-a", "task-b")]).T
        for agent in ("iql", "bc")
    }
    assert {a["label"] for a in on_disk["algorithms"]} == {"iql", "bc"}
    assert on_disk["metrics"] == list(METRICS)
    for agent, matrix in matrices.items():
        for name, metric in METRICS.items():
            expected = interval_estimate(matrix, metric, reps=REPS, seed=3)
            got = on_disk["aggregates"][agent][name]
            assert (got["point"], got["low"], got["high"]) == pytest.approx(expected)
    pair = next(p for p in on_disk["probability_of_improvement"] if p["x"] == "iql")
    expected = probability_of_improvement_interval(
        matrices["iql"], matrices["bc"], reps=REPS, seed=3
    )
    assert (pair["point"], pair["low"], pair["high"]) == pytest.approx(expected)
    row = next(r for r in on_disk["per_task"] if (r["algorithm"], r["task"]) == ("bc", "task-b"))
    assert row["seeds"] == 4 and row["steps"] == [20]
    got = row["score"]
    assert (got["point"], got["low"], got["high"]) == pytest.approx(
        mean_interval(finals[("bc", "task-b")])
    )
    assert row["return"]["point"] == pytest.approx(np.mean(finals[("bc", "task-b")]) - 1000)
    # learning curves: two evaluations, the first 10 below the last for every run
    curve = on_disk["learning_curves"]["iql"]
    assert curve["steps"] == [10, 20]
    assert curve["all_tasks"]["point"][1] - curve["all_tasks"]["point"][0] == pytest.approx(10)
    assert on_disk["warnings"] == []


def test_unfinished_runs_uneven_seeds_and_raw_returns_are_warned(tmp_path):
    """An unfinished run contributes its latest evaluation; a task with 3 seeds and one with 2
    are cut to 2 for the aggregates; a dataset without reference returns is scored in returns
    and the optimality gap (which needs normalised scores) is left out."""
    a = per_seed([1.0, 2.0, 3.0])
    fake_run(tmp_path / "a", a, data="task-a", finished=False, planned=30)
    b = per_seed([-200.0, -100.0])
    fake_run(tmp_path / "b", b, data="task-b", normalized=False, planned=30)
    summary = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", reps=REPS)
    warnings = "\n".join(summary["warnings"])
    assert "unfinished (last evaluation at step 20 of 30)" in warnings
    assert "different seed counts per task (3 on task-a, 2 on task-b)" in warnings
    assert "no reference returns for task-b" in warnings
    assert summary["metrics"] == ["mean", "median", "iqm"]
    assert summary["algorithms"][0]["scores"] == [[1.0, -200.0], [2.0, -100.0]]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "unfinished: step 20 of 30" in html and "Optimality gap" not in html


# ---- the page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, pendulum_dataset) -> list[Path]:
    """Two real tiny IQL runs (2 seeds, two evaluations each) differing in their hidden layers."""
    return train_two_widths(pendulum_dataset, tmp_path_factory.mktemp("report-runs"))


def test_report_from_tiny_runs_has_every_section_and_figure(tiny_runs, tmp_path):
    out = tmp_path / "report"
    summary = build_report(tiny_runs, out, reps=REPS)
    labels = [a["label"] for a in summary["algorithms"]]
    assert labels == ["iql hidden_dims=8,8", "iql hidden_dims=16,16"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*figures.FIGURES.values(), "report.html", "summary.json"])
    assert summary["figures"] == list(figures.FIGURES.values())
    html = (out / "report.html").read_text()
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}">\n<h2>{heading}</h2>' in html
    for file_name in figures.FIGURES.values():
        png = (out / file_name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
        assert f'href="{file_name}"' in html
    assert html.count('<img src="data:image/png;base64,') == len(figures.FIGURES)
    # self-contained: no scripts, no external resources
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert summary["runs"][0]["finished"] and summary["runs"][0]["evaluations"] == 2
    with_diagnostics = [p for p in tiny_runs if (p / "diagnostics.json").is_file()]
    assert len(summary["diagnostics"]) == len(with_diagnostics)
    if not with_diagnostics:
        assert "No diagnostics (run <code>valorl diagnose RUN_DIR</code>)" in html


def test_diagnostics_are_tabled_per_run_and_missing_ones_named(tmp_path):
    with_diag = fake_run(tmp_path / "with", per_seed([1.0, 2.0]), hyperparameters=IQL)
    diag = {
        "step": 20,
        "seeds": [0, 1],
        "heldout_episodes": 3,
        "train_episodes": 7,
        "q_mean": [-12.5, -13.25],
        "mc_return_mean": -14.0,
        "bias": [1.5, 0.75],
        "td_error_train": [0.125, 0.25],
        "td_error_heldout": [0.5, 0.625],
        "return_range": [-13.0, 0.0],
        "q_diverged": [False, True],
    }
    (with_diag / "diagnostics.json").write_text(json.dumps(diag))
    chunked = fake_run(tmp_path / "chunked", per_seed([1.0, 2.0]), agent="qc")
    empty = dict.fromkeys(("q_mean", "mc_return_mean", "bias", "td_error_train"))
    (chunked / "diagnostics.json").write_text(json.dumps(diag | empty | {"chunk_length": 5}))
    bare = fake_run(tmp_path / "bare", per_seed([1.0, 2.0]), agent="bc")
    summary = build_report([with_diag, chunked, bare], tmp_path / "out", reps=REPS)
    assert [d["path"] for d in summary["diagnostics"]] == [str(with_diag), str(chunked)]
    assert summary["without_diagnostics"] == [str(bare)]
    html = (tmp_path / "out" / "report.html").read_text()
    for value in ("-12.500", "-13.250", "1.500", "0.750", "0.125", "0.625", "-14.000"):
        assert value in html
    assert html.count("Q of chunks of 5 actions, h-step TD errors") == 1  # the one-step run: none
    assert f"No diagnostics for <code>{bare}</code>" in html
    # seed 1 flagged in both runs' tables
    assert html.count("The critic of seed(s) 1 has diverged: its mean Q lies beyond [-13.000,") == 2
    damaged = {"path": "r", "algorithm": "iql", "task": "t", **diag, "return_range": ["a", 1]}
    note = _diagnostics({"diagnostics": [damaged], "without_diagnostics": []})
    assert "The critic of seed(s) 1 has diverged: its mean Q lies beyond [–, –]" in note
    assert "had not settled" not in html  # no drift recorded
    moving = _diagnostics(
        {"diagnostics": [damaged | {"q_settled": [True, False]}], "without_diagnostics": []}
    )
    assert "The critic of seed(s) 1 had not settled: its mean Q still moved" in moving
    settled = _diagnostics(
        {"diagnostics": [damaged | {"q_settled": [True, True]}], "without_diagnostics": []}
    )
    assert "had not settled" not in settled


def test_the_critic_on_the_policys_own_episodes_is_tabled_where_diagnose_played_some():
    diag = {"path": "r", "algorithm": "iql", "task": "t", "step": 20, "seeds": [0, 1]}
    diag |= {"q_mean": [1.0, 2.0], "mc_return_mean": 0.5, "bias": [0.5, 1.5]}
    on_policy = {"episodes": 3, "env": "Hopper-v5", "return": [812.25, 640.5]}
    on_policy |= {"q_mean": [120.5, 99.0], "return_to_go_mean": [80.25, 101.0]}
    on_policy |= {"bias": [40.25, -2.0], "td_error": [1.125, "damaged"]}
    html = _diagnostics(
        {"diagnostics": [diag | {"on_policy": on_policy}], "without_diagnostics": []}
    )
    assert "own episodes (3 per seed in <code>Hopper-v5</code>)" in html
    for value in ("812.250", "120.500", "80.250", "40.250", "-2.000", "1.125"):
        assert f">{value}<" in html
    assert html.split("own episodes")[1].count(">–</td>") == 1  # the damaged TD error
    plain = _diagnostics({"diagnostics": [diag], "without_diagnostics": []})
    assert "own episodes" not in plain


# ---- writing and errors -------------------------------------------------------------------------


def one_line_error(capsys, phrase: str) -> None:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("valorl: error:") and phrase in err, err


def test_cli_refuses_an_existing_out_unless_forced(tmp_path, capsys):
    run = fake_run(tmp_path / "run", per_seed([1.0, 2.0]))
    out = tmp_path / "out"
    args = ["report", str(run), "--out", str(out), "--bootstrap-reps", "50", "--quiet"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    first = (out / "summary.json").read_text()
    assert main(args) == 2
    one_line_error(capsys, f"--out {out} exists and is not empty")
    assert (out / "summary.json").read_text() == first
    assert main([*args, "--force", "--seed", "7"]) == 0
    replaced = json.loads((out / "summary.json").read_text())
    assert replaced["bootstrap_seed"] == 7
    assert replaced["command"].endswith(f"--out {out} --force --bootstrap-reps 50 --seed 7")
    # --force never wipes a folder that holds no report
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["report", str(run), "--out", str(other), "--force"]) == 2
    one_line_error(capsys, "holds no earlier report")
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out", "run"]


def test_bad_inputs_are_one_line_errors_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["report", str(missing)]) == 2
    one_line_error(capsys, f"{missing} does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    one_line_error(capsys, f"{empty} is not a valorl run (no config.json)")
    no_evals = tmp_path / "no-evals"
    config = {
        "agent": {"name": "bc", "hyperparameters": {}},
        "data": {"name": "d"},
        "schedule": {"steps": 10},
        "seeds": [0],
    }
    RunDir.open(no_evals, config)
    assert main(["report", str(no_evals)]) == 2
    one_line_error(capsys, f"{no_evals} has no evaluations")
    assert not (tmp_path / "report").exists()


def test_a_failure_mid_build_leaves_nothing_behind(tmp_path, monkeypatch):
    """A figure that fails aborts the build without creating --out or leaving a temporary
    directory; over an earlier report (--force), the earlier report survives intact."""
    run = fake_run(tmp_path / "run", per_seed([1.0, 2.0]))

    def broken(summary):
        raise RuntimeError("drawing failed")

    with monkeypatch.context() as patch:
        patch.setattr(figures, "learning_curves", broken)
        with pytest.raises(RuntimeError, match="drawing failed"):
            build_report([run], tmp_path / "out", reps=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    build_report([run], tmp_path / "out", reps=50)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    monkeypatch.setattr(figures, "performance_profile", broken)
    with pytest.raises(RuntimeError):
        build_report([run], tmp_path / "out", reps=50, force=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


def test_report_help_names_the_inputs_and_outputs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("RUN_DIR", "--out", "--force", "report.html", "summary.json", "IQM"):
        assert phrase in text


def test_gather_rejects_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValorlError, match=r"file\.txt is not a valorl run"):
        gather([tmp_path / "file.txt"])
