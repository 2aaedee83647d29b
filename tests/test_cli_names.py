"""One name per concept across commands, the old spellings still accepted for one release with
a one-line note, and the documented exit statuses, all in-process through `valorl.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import synthetic_dataset

import valorl.collection
import valorl.eval.evaluate
from valorl.cli.main import build_parser, main
from valorl.data.sources import minari_root, save_npz
from valorl.errors import ValorlError
from valorl.launch.args import ExitCode, renamed_spec_options


def status(argv: list[str]) -> int:
    """`valorl ARGV`'s exit status, whether main returns it or argparse raises it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def help_text(argv: list[str], capsys) -> str:
    assert status([*argv, "--help"]) == 0
    return capsys.readouterr().out


# ---- one name per concept ----------------------------------------------------------------------


def test_corrupt_help_names_the_new_dataset_by_id_and_its_directory_by_out(capsys):
    text = help_text(["corrupt"], capsys)
    assert "--id NEW_ID" in text and "--out DIR" in text
    assert "--dir" not in text.split("examples:")[0]  # the old spelling is hidden from usage


def test_bench_throughput_help_shows_hidden_dims_and_batch_size(capsys):
    text = help_text(["bench", "throughput"], capsys)
    assert "--hidden-dims" in text and "--batch-size" in text
    assert "--hidden " not in text and "--batch " not in text


def test_report_and_ope_share_one_bootstrap_flag(capsys):
    for command in (["report"], ["ope"]):
        text = help_text(command, capsys)
        assert "--bootstrap-reps N" in text and "--reps" not in text


@pytest.mark.parametrize(
    "argv, dest, value, note",
    [
        (["bench", "throughput", "--hidden", "8,8"], "hidden_dims", "8,8",
         "valorl: --hidden is deprecated; use --hidden-dims"),
        (["bench", "throughput", "--batch", "4"], "batch_size", 4,
         "valorl: --batch is deprecated; use --batch-size"),
        (["report", "r", "--reps", "50"], "bootstrap_reps", 50,
         "valorl: --reps is deprecated; use --bootstrap-reps"),
        (["ope", "r", "--dataset", "d", "--bootstrap", "20"], "bootstrap_reps", 20,
         "valorl: --bootstrap is deprecated; use --bootstrap-reps"),
        (["lm", "sft", "--init-from", "r", "--out", "o", "--batch", "4"], "batch_size", 4,
         "valorl: --batch is deprecated; use --batch-size"),
    ],
    ids=["hidden", "batch", "reps", "bootstrap", "lm-batch"],
)  # fmt: skip
def test_an_old_spelling_sets_the_new_flag_with_one_note(capsys, argv, dest, value, note):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.splitlines() == [note]


def test_new_spellings_print_no_note_and_defaults_survive_the_aliases(capsys):
    args = build_parser().parse_args(
        ["bench", "throughput", "--hidden-dims", "8", "--batch-size", "4"]
    )
    assert (args.hidden_dims, args.batch_size) == ("8", 4)
    defaults = build_parser().parse_args(["report", "r"])
    assert defaults.bootstrap_reps == 2000
    assert capsys.readouterr().err == ""


def test_behaviour_spec_seed_option_becomes_index(capsys):
    assert renamed_spec_options("runs/x:noise=0.1,seed=2", {"seed": "index"}) == (
        "runs/x:noise=0.1,index=2"
    )
    assert capsys.readouterr().err == (
        "valorl: seed= in 'runs/x:noise=0.1,seed=2' is deprecated; use index=\n"
    )
    for spec in ("random", "runs/x:index=1", "pendulum-swingup:noise=0.3,share=2"):
        assert renamed_spec_options(spec, {"seed": "index"}) == spec
    assert capsys.readouterr().err == ""


def test_collect_passes_renamed_specs_to_the_library(monkeypatch, capsys):
    given = []

    def fake_collect(env, specs, steps, **kwargs):
        given.append(specs)
        raise ValorlError("stop here")

    monkeypatch.setattr(valorl.collection, "collect", fake_collect)
    argv = ["collect", "--env", "Pendulum-v1", "--steps", "10", "--id", "t/x-v0"]
    assert main([*argv, "--policy", "random", "--policy", "runs/r:seed=1,noise=0.1"]) == 2
    assert given == [["random", "runs/r:index=1,noise=0.1"]]
    assert "seed= in 'runs/r:seed=1,noise=0.1' is deprecated; use index=" in capsys.readouterr().err


# ---- corrupt: --out NEW_ID --dir DIR became --id NEW_ID --out DIR ------------------------------


CORRUPT = ["corrupt", "data.npz", "--kind", "rewards", "--quiet"]


def written_id(directory: Path) -> str:
    return json.loads((directory / "data" / "metadata.json").read_text())["dataset_id"]


@pytest.mark.parametrize(
    "flags, where, notes",
    [
        (["--id", "test/new-v0", "--out", "a"], "a", []),
        (["--id", "test/new-v0"], None, []),
        (["--out", "test/new-v0", "--dir", "a"], "a", [
            "valorl: --dir is deprecated; use --out",
            "valorl: --out NEW_ID is deprecated; use --id NEW_ID (--out now names the directory)",
        ]),
        (["--out", "test/new-v0"], None, [
            "valorl: --out NEW_ID is deprecated; use --id NEW_ID (--out now names the directory)",
        ]),
        (["--id", "test/new-v0", "--dir", "a"], "a", ["valorl: --dir is deprecated; use --out"]),
    ],
    ids=["new", "new-minari-root", "old", "old-minari-root", "new-id-old-dir"],
)  # fmt: skip
def test_corrupt_reads_old_command_lines_the_old_way_when_id_is_absent(
    isolated, capsys, flags, where, notes
):
    save_npz(synthetic_dataset(n=40), "data.npz")
    assert main([*CORRUPT, *flags]) == 0
    directory = isolated / where if where else minari_root() / "test/new-v0"
    assert written_id(directory) == "test/new-v0"
    assert capsys.readouterr().err.splitlines() == notes


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "name the new dataset with --id NEW_ID"),
        (["--id", "test/new-v0", "--out", "a", "--dir", "b"],
         "--dir is the old spelling of --out; give only --out"),
    ],
    ids=["no-id", "out-and-dir"],
)  # fmt: skip
def test_corrupt_refuses_a_target_it_cannot_read(isolated, capsys, flags, message):
    save_npz(synthetic_dataset(n=40), "data.npz")
    assert main([*CORRUPT, *flags]) == ExitCode.BAD_INPUT
    assert capsys.readouterr().err.splitlines()[-1] == f"valorl: error: {message}"
    assert sorted(p.name for p in isolated.iterdir()) == ["data.npz"]


# ---- exit statuses -----------------------------------------------------------------------------


def test_top_level_help_documents_every_exit_status(capsys):
    text = help_text([], capsys)
    listed = text.split("exit status:\n")[1].splitlines()
    assert [int(line.split()[0]) for line in listed] == [0, 1, 2, 3, 130]
    assert "3    `valorl sweep`: some groups failed" in text


@pytest.mark.parametrize(
    "raised, code, last_line",
    [
        (ValorlError("no such run"), 2, "valorl: error: no such run"),
        (KeyboardInterrupt(), 130, "valorl: interrupted; run the same command again to resume "
         "from the last checkpoint"),
        (RuntimeError("boom"), 1, "valorl: internal error: RuntimeError: boom (a bug in valorl; "
         "please report it with the traceback above)"),
    ],
    ids=["bad-input", "interrupted", "internal-error"],
)  # fmt: skip
def test_each_failure_has_its_exit_status(monkeypatch, capsys, raised, code, last_line):
    def evaluate_run(*args, **kwargs):
        raise raised

    monkeypatch.setattr(valorl.eval.evaluate, "evaluate_run", evaluate_run)
    assert main(["eval", "runs/x"]) == code
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == last_line
    assert (err[0] == "Traceback (most recent call last):") == (code == 1)  # bugs keep theirs


@pytest.mark.parametrize(
    "argv", [["eval"], ["bench", "throughput", "--nope"], ["report", "r", "--bootstrap-reps", "x"]]
)
def test_usage_errors_exit_2(capsys, argv):
    assert status(argv) == ExitCode.BAD_INPUT
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_a_sweep_with_a_failed_group_exits_3(isolated, capsys):
    """A group whose dataset does not exist fails before training; the sweep says so with 3."""
    spec = isolated / "s.toml"
    spec.write_text(
        f'agents = ["bc"]\ndatasets = ["{isolated / "missing"}"]\nseeds = 1\n'
        "[settings]\nsteps = 10\nhidden_dims = [8]\n"
    )
    argv = ["sweep", str(spec), "--out", str(isolated / "o"), "--quiet", "--no-report"]
    assert main(argv) == ExitCode.SWEEP_GROUPS_FAILED == 3
    assert "failed bc-missing" in capsys.readouterr().out
    assert (isolated / "o" / "bc-missing.error.log").is_file()
