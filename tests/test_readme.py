"""README.md's code blocks, checked against the code, so the README cannot drift from it.

A reader runs the blocks in order on a fresh clone; so does this test, as far as the suite's
time allows:

- every ```python block runs, in order, in one namespace, in the test's temporary directory,
  with the README's long settings replaced by short ones through `SHORTER`. A pattern of
  `SHORTER` that is not in the README exactly once fails the test, so the table follows the
  README instead of silently running the long version;
- every ```toml block parses, and one introduced by "Save this as `NAME`:" is written to NAME
  before anything runs, as a reader would save it;
- every `valorl ...` line of a ```bash block parses with the real command-line parser (an
  unknown command, flag or choice fails), and, read in order, uses only datasets, run
  directories and files that an earlier line made or that build themselves (zoo recipes);
  the `--dry-run` and `--help` lines also run;
- every `make TARGET` line names a target of the Makefile.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from valorl.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SHORTER = {
    # collect: 2,000 transitions instead of 60,000, two reference episodes per behaviour
    "60_000,": "2_000, reference_episodes=2, progress=False,",
    # train: 20 steps of 2 seeds, one evaluation episode each
    "steps=30_000, seeds=3,": "steps=20, seeds=2, eval_episodes=1, progress=False,",
    # the sweep: one seed per group, 20 steps, one evaluation episode
    '"seeds": 3,': '"seeds": 1,',
    '"steps": 30_000,': '"steps": 20, "eval_episodes": 1,',
    '"runs/sweep-api")': '"runs/sweep-api", progress=False)',
}
"""README Python text -> what the test runs instead (each pattern must occur exactly once)."""

DATASET, RUN, FILE = "dataset", "run directory", "file"

NEEDS = {
    "train": {"dataset": DATASET},
    "eval": {"run_dir": RUN},
    "diagnose": {"run_dir": RUN},
    "report": {"run_dirs": RUN},
    "ope": {"run_dirs": RUN, "dataset": DATASET},
    "corrupt": {"dataset": DATASET},
    "datasets info": {"name": DATASET},
    "datasets export": {"name": DATASET},
    "sweep": {"spec": FILE},
}
"""Command -> its parsed arguments that name something which must exist already."""

MAKES = {
    "collect": {"dataset_id": DATASET},
    "datasets build": {"names": DATASET},
    "corrupt": {"out": DATASET},
    "train": {"out": RUN},
    "sweep": {"out": RUN},
}
"""Command -> its parsed arguments that name what it makes."""


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its info string (the language), text and where it starts."""

    info: str
    text: str
    line: int
    saved_as: str | None = None
    """The file name the paragraph before the block asks the reader to save it as."""


FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[\w-]*)\s*$")
SAVE = re.compile(r"\bsave\s+(?:it|this(?:\s+one)?)\s+as\s+`([^`]+)`:$", re.IGNORECASE)


def code_blocks(markdown: str) -> list[Block]:
    """Every fenced block of `markdown`, indented ones (in list items) dedented."""
    lines = markdown.splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines):
        if start is None:
            match = FENCE.match(line)
            if match:
                start, indent, info = number, len(match["indent"]), match["info"]
        elif line.strip() == "```":
            body = "\n".join(row[indent:] for row in lines[start + 1 : number]) + "\n"
            saved = SAVE.search(_paragraph_before(lines, start))
            blocks.append(Block(info, body, start + 1, saved[1] if saved else None))
            start = None
    assert start is None, f"README.md line {start + 1}: a code block is never closed"
    return blocks


def _paragraph_before(lines: list[str], index: int) -> str:
    """The text of the paragraph that ends just above line `index`, on one line."""
    end = index
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    begin = end
    while begin > 0 and lines[begin - 1].strip():
        begin -= 1
    return " ".join(line.strip() for line in lines[begin:end])


def shorten(sources: list[str], substitutions: dict[str, str]) -> list[str]:
    """`sources` with each pattern replaced; fails unless a pattern occurs exactly once in all
    of them together."""
    for pattern, replacement in substitutions.items():
        count = sum(source.count(pattern) for source in sources)
        assert count == 1, (
            f"README.md's Python has {pattern!r} {count} times, not once: update SHORTER in "
            "tests/test_readme.py to the README's new text"
        )
        sources = [source.replace(pattern, replacement) for source in sources]
    return sources


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a shell block as argument lists: continuations joined, comments and
    leading `NAME=value` environment assignments dropped."""
    commands = []
    for line in block.text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words.pop(0)
        if words:
            commands.append(words)
    return commands


def parse_valorl(argv: list[str]) -> argparse.Namespace:
    """`argv` parsed as `valorl` parses it: an unknown flag or a bad value fails the test."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args, unknown = build_parser().parse_known_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and ("--help" in argv or "-h" in argv):
            return argparse.Namespace(command="help")
        pytest.fail(f"`valorl {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")
    if unknown:
        pytest.fail(f"`valorl {shlex.join(argv)}` does not parse: unrecognized {unknown}")
    if getattr(args, "agent_cls", None) is not None:  # hyperparameter values convert, too
        from valorl.launch.args import parse_overrides

        parse_overrides(args, args.agent_cls)
    return args


class Made:
    """What the README's commands have made so far, to check that each uses only what exists."""

    def __init__(self, files: set[str]):
        self.things = {DATASET: set(), RUN: set(), FILE: set(files)}

    def use(self, argv: list[str], args: argparse.Namespace) -> None:
        """Check what `valorl argv` needs, then record what it makes."""
        command = " ".join(
            part for part in (args.command, getattr(args, f"{args.command}_command", None)) if part
        )
        for attribute, kind in NEEDS.get(command, {}).items():
            for name in self._values(command, args, attribute):
                if not self._exists(kind, name):
                    pytest.fail(
                        f"`valorl {shlex.join(argv)}` needs the {kind} {name}, which no earlier "
                        "README block makes"
                    )
        for attribute, kind in MAKES.get(command, {}).items():
            self.things[kind].update(self._values(command, args, attribute))

    def _exists(self, kind: str, name: str) -> bool:
        if kind == DATASET:
            from valorl.zoo import find, ogbench_tasks

            known = find(name) is not None or ogbench_tasks.parse(name) is not None
            return name in self.things[DATASET] or known
        return name in self.things[kind]

    @staticmethod
    def _values(command: str, args: argparse.Namespace, attribute: str) -> list[str]:
        assert hasattr(args, attribute), (
            f"`valorl {command}` has no argument {attribute!r}: update NEEDS/MAKES in "
            "tests/test_readme.py"
        )
        value = getattr(args, attribute)
        return [] if value is None else [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return code_blocks(README.read_text())


def save_files(blocks: list[Block]) -> set[str]:
    """Write the blocks the README asks the reader to save, as the reader would."""
    for block in blocks:
        if block.saved_as is not None:
            Path(block.saved_as).write_text(block.text)
    return {b.saved_as for b in blocks if b.saved_as is not None}


def test_every_block_has_a_known_language(blocks):
    """A new language would go unchecked: extend this test when one is added."""
    known = {"bash", "sh", "python", "toml", ""}  # "" marks printed output
    for block in blocks:
        assert block.info in known, f"README.md line {block.line}: unchecked ```{block.info}"
    assert {b.info for b in blocks} >= {"bash", "python", "toml"}


def test_toml_blocks_parse_and_sweep_toml_is_saved(blocks):
    for block in blocks:
        if block.info == "toml":
            tomllib.loads(block.text)
    assert "sweep.toml" in {b.saved_as for b in blocks}


def test_shell_commands_parse_and_run_in_order(blocks):
    made = Made(save_files(blocks))
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    variables = set(re.findall(r"^(\w+)\s*[?:]?=", makefile, re.MULTILINE))
    cheap = []
    for block in blocks:
        if block.info not in ("bash", "sh"):
            continue
        for argv in shell_commands(block):
            program, rest = argv[0], argv[1:]
            if program == "make":  # targets, and VARIABLE=value for variables it defines
                names = {a for a in rest if "=" not in a}
                assigned = {a.split("=", 1)[0] for a in rest if "=" in a}
                assert names <= targets, f"README.md line {block.line}: make {rest}"
                assert assigned <= variables, f"README.md line {block.line}: make {rest}"
            elif program == "valorl":
                made.use(rest, parse_valorl(rest))
                if {"--dry-run", "--help", "-h"} & set(rest):
                    cheap.append(rest)
    assert cheap, "the README runs no --dry-run or --help line any more"
    for argv in cheap:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                status = main(argv)
            except SystemExit as exc:  # --help exits
                status = exc.code
        assert status == 0, f"`valorl {shlex.join(argv)}` exited with {status}"


def test_python_blocks_run_in_order(blocks):
    save_files(blocks)
    python = [b for b in blocks if b.info == "python"]
    namespace: dict = {"__name__": "readme"}
    for block, source in zip(python, shorten([b.text for b in python], SHORTER), strict=True):
        exec(compile(source, f"README.md:{block.line}", "exec"), namespace)

    # what the README's comments promise, at the test's sizes
    assert namespace["result"].scores.shape == (2, 1, 1)  # (seeds, evaluations, episodes)
    assert namespace["action"].shape == (1,)
    assert Path("report-iql/report.html").is_file()
    assert Path("runs/sweep-api/report/report.html").is_file()
    assert namespace["agent"].ensemble.num_qs == 10


def test_shorten_fails_when_the_readme_changes():
    assert shorten(["a", "steps=30_000"], {"steps=30_000": "steps=20"}) == ["a", "steps=20"]
    with pytest.raises(AssertionError, match="update SHORTER"):
        shorten(["steps=50_000"], {"steps=30_000": "steps=20"})
    with pytest.raises(AssertionError, match="2 times"):
        shorten(["a", "a"], {"a": "b"})


def test_code_blocks_reads_info_indent_and_file_names():
    text = (
        "Intro.\n\n```bash\nvalorl demo\n```\n\nSave\nthis one as `x.toml`:\n\n"
        "```toml\na = 1\n```\n\n- item\n\n  ```python\n  print(1)\n  ```\n\n```\nout\n```\n"
    )
    assert code_blocks(text) == [
        Block("bash", "valorl demo\n", 3),
        Block("toml", "a = 1\n", 10, "x.toml"),
        Block("python", "print(1)\n", 16),
        Block("", "out\n", 20),
    ]


def test_order_check_refuses_what_no_earlier_line_made():
    made = Made(files=set())
    with pytest.raises(pytest.fail.Exception, match="needs the run directory runs/x"):
        made.use(["eval", "runs/x"], parse_valorl(["eval", "runs/x"]))
    with pytest.raises(pytest.fail.Exception, match=r"needs the file s\.toml"):
        made.use(["sweep", "s.toml"], parse_valorl(["sweep", "s.toml"]))
    train = ["train", "bc", "--dataset", "pendulum-medium-v0", "--out", "runs/x"]
    made.use(train, parse_valorl(train))  # a zoo recipe builds itself
    made.use(["eval", "runs/x"], parse_valorl(["eval", "runs/x"]))


def test_parse_valorl_refuses_unknown_flags():
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse_valorl(["train", "iql", "--no-such-flag", "1"])
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse_valorl(["collect", "--env", "Pendulum-v1"])  # --policy, --steps, --id missing
