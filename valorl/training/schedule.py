"""How long a run is and when it stops to log, evaluate and checkpoint.

A run has up to two phases: `offline_steps` gradient steps on a dataset, then `online_steps`
environment steps (each seed takes one per step). Its global step counts both, so an
offline-to-online run's step 1000 + k is its k-th environment step. Cadences count within the
phase (gradient steps offline, environment steps online).

The compiled chunk is `log_every` steps long (shorter only for a phase's last chunk), so one
chunk size is compiled whatever the other cadences are: evaluation happens at the end of the
chunk that reaches a multiple of `eval_every` (and always at the end of a phase), checkpoints
at the end of the chunk that reaches a multiple of `checkpoint_every` steps, or, when
`checkpoint_every` is a duration ("90s", "10min", "1h"), at the first chunk end after that much
wall-clock time since the last checkpoint. The last step is always checkpointed.
"""

from __future__ import annotations

import dataclasses
import re

from valorl.config import flag
from valorl.errors import ValorlError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)\s*$")
_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_checkpoint_every(value: int | str | None) -> int | float | None:
    """Steps (an int) or seconds (a float, from "90s", "10min", "1h"); None for the default.

    Returns an int for a step count and a float for a duration in seconds."""
    if value is None or isinstance(value, int):
        return value
    text = str(value)
    if text.strip().isdigit():
        return int(text)
    match = _DURATION.match(text)
    if not match:
        raise ValorlError(
            f"--checkpoint-every must be a number of steps or a duration such as 90s, 10min "
            f"or 1h; got {value!r}"
        )
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclasses.dataclass(frozen=True)
class Cadence:
    """One phase's chunking: `steps` long, chunks of `chunk` steps, evaluations every
    `eval_every` and checkpoints every `checkpoint_every` steps (None: by wall-clock only)."""

    steps: int
    chunk: int
    eval_every: int
    checkpoint_every: int | None

    def chunk_end(self, step: int) -> int:
        """Where the chunk starting at phase step `step` ends."""
        return min(step + self.chunk, self.steps)

    def evaluates(self, start: int, end: int) -> bool:
        """Whether the chunk from `start` to `end` reaches an evaluation."""
        return end == self.steps or _crosses(start, end, self.eval_every)

    def checkpoints(self, start: int, end: int) -> bool:
        """Whether the chunk from `start` to `end` reaches a step-based checkpoint."""
        return end == self.steps or (
            self.checkpoint_every is not None and _crosses(start, end, self.checkpoint_every)
        )


def _crosses(start: int, end: int, every: int) -> bool:
    return end // every > start // every


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's length and cadences (see the module docstring)."""

    offline_steps: int
    online_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int | float | None = None
    """Steps (int) or wall-clock seconds (float) between checkpoints; None: every eval."""

    @property
    def steps(self) -> int:
        return self.offline_steps + self.online_steps

    @property
    def checkpoint_seconds(self) -> float | None:
        return self.checkpoint_every if isinstance(self.checkpoint_every, float) else None

    def check(self) -> None:
        """Every cadence is at least 1 step (or a positive duration)."""
        for name in ("log_every", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValorlError(f"{flag(name)} must be at least 1, got {value}")
        if self.checkpoint_seconds is not None and self.checkpoint_seconds <= 0:
            raise ValorlError("--checkpoint-every must be a positive duration")

    def phase(self, online: bool) -> Cadence:
        """The cadence of the offline (`online=False`) or the online phase; cadences longer
        than the phase shrink to it."""
        steps = self.online_steps if online else self.offline_steps
        every = self.eval_every if self.checkpoint_every is None else self.checkpoint_every
        return Cadence(
            steps=steps,
            chunk=min(self.log_every, steps),
            eval_every=min(self.eval_every, steps),
            checkpoint_every=min(every, steps) if isinstance(every, int) else None,
        )
