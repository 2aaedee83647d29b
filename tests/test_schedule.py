"""The run schedule: chunking, evaluation and checkpoint cadences, wall-clock checkpoints."""

from __future__ import annotations

import pytest
from conftest import TINY, synthetic_dataset

import valorl
from valorl.errors import ValorlError
from valorl.training import loop
from valorl.training.run_dir import RunDir
from valorl.training.schedule import Schedule, parse_checkpoint_every


@pytest.mark.parametrize(
    "text, expected",
    [(None, None), (500, 500), ("500", 500), ("90s", 90.0), ("10min", 600.0), ("1.5h", 5400.0)],
)
def test_checkpoint_every_takes_steps_or_a_duration(text, expected):
    value = parse_checkpoint_every(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["ten", "10 days", "-5s", ""])
def test_checkpoint_every_refuses_what_is_neither(text):
    with pytest.raises(ValorlError, match="--checkpoint-every must be a number of steps"):
        parse_checkpoint_every(text)


def boundaries(schedule: Schedule, online: bool = False) -> list[tuple[int, bool, bool]]:
    """(chunk end, evaluates, checkpoints) of every chunk of a phase."""
    cadence, step, out = schedule.phase(online), 0, []
    while step < cadence.steps:
        end = cadence.chunk_end(step)
        out.append((end, cadence.evaluates(step, end), cadence.checkpoints(step, end)))
        step = end
    return out


def test_one_chunk_size_and_evaluations_at_the_chunk_that_reaches_them():
    """log 10, eval 15, checkpoint 25, 50 steps: chunks of 10; evaluations at the chunk ends
    that pass 15, 30, 45 (and the last); checkpoints at those that pass 25 and 50."""
    schedule = Schedule(offline_steps=50, online_steps=0, log_every=10, eval_every=15,
                        checkpoint_every=25)  # fmt: skip
    assert boundaries(schedule) == [
        (10, False, False),
        (20, True, False),
        (30, True, True),
        (40, False, False),
        (50, True, True),
    ]


def test_checkpoints_default_to_every_evaluation_and_shrink_to_the_phase():
    schedule = Schedule(offline_steps=40, online_steps=30, log_every=10, eval_every=20)
    assert [b for b in boundaries(schedule) if b[2]] == [(20, True, True), (40, True, True)]
    online = Schedule(offline_steps=0, online_steps=30, log_every=50, eval_every=100)
    assert boundaries(online, online=True) == [(30, True, True)]


def test_a_duration_checkpoints_by_wall_clock_only():
    schedule = Schedule(offline_steps=30, online_steps=0, log_every=10, eval_every=10,
                        checkpoint_every=60.0)  # fmt: skip
    assert schedule.checkpoint_seconds == 60.0
    assert [b[2] for b in boundaries(schedule)] == [False, False, True]  # only the last step


def tiny_run(path, **overrides):
    settings = dict(steps=40, log_every=10, eval_every=20, eval_episodes=0, seeds=2,
                    progress=False, out=path, **TINY["bc"])  # fmt: skip
    return valorl.train("bc", synthetic_dataset(), **(settings | overrides))


def checkpoint_steps(monkeypatch) -> list[int]:
    written: list[int] = []
    original = RunDir.write_checkpoint

    def spy(self, data, step):
        written.append(step)
        return original(self, data, step)

    monkeypatch.setattr(RunDir, "write_checkpoint", spy)
    return written


def test_checkpoints_follow_their_own_cadence_not_logging(tmp_path, monkeypatch):
    written = checkpoint_steps(monkeypatch)
    tiny_run(tmp_path / "default")
    assert written == [20, 40]  # every evaluation step, while metrics are logged every 10
    assert [r["step"] for r in RunDir(tmp_path / "default").metrics()] == [10, 20, 30, 40]
    written.clear()
    tiny_run(tmp_path / "by-steps", checkpoint_every=30)
    assert written == [30, 40]


def test_wall_clock_checkpoints(tmp_path, monkeypatch):
    """With a duration, a checkpoint follows the first chunk after that much time."""
    written = checkpoint_steps(monkeypatch)
    clock = iter(range(0, 10_000, 7))  # every reading of the clock advances it 7 seconds
    monkeypatch.setattr(loop, "clock", lambda: next(clock))
    tiny_run(tmp_path / "r", checkpoint_every="10s")
    assert written == [20, 40]  # 7 s after the first chunk (too soon), 14 s after the second


def test_ctrl_c_checkpoints_at_the_next_chunk_even_between_cadences(tmp_path, monkeypatch):
    """A stop request saves the chunk just finished, so an interrupted run loses nothing."""
    written = checkpoint_steps(monkeypatch)
    original = loop.Loop.offline_phase

    def press_ctrl_c_then_train(self):
        self.run_dir._stop_requested = True
        original(self)

    monkeypatch.setattr(loop.Loop, "offline_phase", press_ctrl_c_then_train)
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path / "r", checkpoint_every=40)
    assert written == [10]
    monkeypatch.undo()
    result = tiny_run(tmp_path / "r", checkpoint_every=40)
    assert [r["step"] for r in RunDir(result.path).metrics()] == [10, 20, 30, 40]


def test_one_chunk_size_is_compiled_when_evaluation_is_not_a_multiple(tmp_path, monkeypatch):
    sizes = set()
    original = loop.update_chunk

    def spy(agent, n, seeds, goals=None):
        sizes.add(n)
        return original(agent, n, seeds, goals)

    monkeypatch.setattr(loop, "update_chunk", spy)
    tiny_run(tmp_path / "r", eval_every=15, steps=40)
    assert sizes == {10}


def test_cli_checkpoint_every_takes_a_duration(tmp_path):
    """`valorl train ... --checkpoint-every 10min` records 600 seconds in the run's config."""
    from valorl.cli.main import main

    valorl.save_npz(synthetic_dataset(), tmp_path / "data.npz")
    argv = ["train", "bc", "--dataset", str(tmp_path / "data.npz"), "--steps", "20",
            "--log-every", "10", "--eval-episodes", "0", "--hidden-dims", "8,8",
            "--batch-size", "16", "--checkpoint-every", "10min",
            "--out", "r", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    schedule = RunDir("r").config()["schedule"]
    assert schedule["checkpoint_every"] == 600.0
    assert main([*argv[:-5], "--checkpoint-every", "soon", "--out", "r2", "--quiet"]) == 2
