"""Verifiable tasks for small language models: problems drawn by seed, answers checked exactly.

Value learning on language models needs rewards that are never wrong, so each task here has an
exact-match verifier that computes the answer from the prompt itself, and sets of problems that
are reproducible from a seed: in-distribution train and test sets that never share a prompt,
and out-of-distribution test sets with longer operands than training ever shows.

Three tasks, each over the alphabet of `valorl.lm.tokenizer`:

- "addition": "57+68=" -> "521", the sum written least-significant digit first;
- "multiplication": "99*99=" -> "1089", the product reversed the same way;
- "sorting": "s4931=" -> "1349", the digits in ascending order.

Sums and products are written reversed because the model writes its answer left to right, and
the carry into a digit comes from the digits to its right: in reversed order every carry is
already written when it is needed, and small transformers learn addition and multiplication
far more easily (Lee et al. 2023, "Teaching Arithmetic to Small Transformers").
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from valorl.errors import ValorlError
from valorl.lm.tokenizer import EOS, PAD, CharTokenizer

TEST_SHARE = 10
"""A prompt is a test prompt iff the blake2b hash of its text is 0 modulo this (about 10%)."""
_CHUNK = 1024
"""Candidate problems are drawn this many at a time; the stream for a seed does not depend on
how many problems are asked for, so a smaller set is a prefix of a larger one."""
_DISTINCT_FACTOR = 20
"""Problems in a set are distinct when the sizes allow at least this many times as many prompts
as asked for; otherwise they are drawn with replacement."""


@dataclasses.dataclass(frozen=True)
class ProblemSet:
    """Problems of one task: `prompts` (each ends with "=") and their correct `answers`."""

    task_name: str
    prompts: list[str]
    answers: list[str]

    def __post_init__(self):
        if len(self.prompts) != len(self.answers):
            raise ValorlError(
                f"a problem set has {len(self.prompts)} prompts but {len(self.answers)} answers"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def demonstrations(self) -> list[str]:
        """Prompt + answer: the correct worked answers, for supervised fine-tuning."""
        return [p + a for p, a in zip(self.prompts, self.answers, strict=True)]


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: its `operator` ("+", "*", or "s" for sorting), and the operand sizes (digits,
    inclusive ranges) of its in-distribution and out-of-distribution problems."""

    name: str
    operator: Literal["+", "*", "s"]
    in_sizes: tuple[int, int]
    ood_sizes: tuple[int, int]

    @property
    def arity(self) -> int:
        """Operands in a prompt: 2 for arithmetic, 1 for sorting."""
        return 1 if self.operator == "s" else 2

    def operands(self, prompt: str) -> tuple[str, ...]:
        """The operands of a prompt as digit strings; ValorlError if it is not of this task's
        form (arithmetic operands are numbers without leading zeros)."""
        match = _PROMPT_FORMS[self.operator].fullmatch(prompt)
        if match is None:
            raise ValorlError(f"{prompt!r} is not a prompt of the {self.name} task")
        return match.groups()

    def answer(self, prompt: str) -> str:
        """The correct answer to a prompt, computed from the prompt."""
        ops = self.operands(prompt)
        if self.operator == "s":
            return "".join(sorted(ops[0]))
        a, b = int(ops[0]), int(ops[1])
        return str(a + b if self.operator == "+" else a * b)[::-1]

    def verify(self, prompt: str, completion: str) -> float:
        """1.0 iff `completion` is exactly the answer (no extra zero, character or space), else
        0.0; ValorlError if the prompt is malformed."""
        return float(completion == self.answer(prompt))

    def max_answer_length(self, sizes: tuple[int, int]) -> int:
        """The longest answer to a problem with operands of `sizes` digits, not counting EOS."""
        _check_sizes(sizes)
        if self.operator == "s":
            return sizes[1]
        largest = 10 ** sizes[1] - 1
        return len(str(largest + largest if self.operator == "+" else largest * largest))

    def max_prompt_length(self, sizes: tuple[int, int]) -> int:
        """The longest prompt (operator and "=" included) with operands of `sizes` digits."""
        _check_sizes(sizes)
        return self.arity * sizes[1] + 2

    def space_size(self, sizes: tuple[int, int]) -> int:
        """How many distinct prompts have operands of `sizes` digits."""
        lo, hi = _check_sizes(sizes)
        if self.operator == "s":
            return sum(10**d for d in range(lo, hi + 1))
        numbers = 10**hi - (10 ** (lo - 1) if lo > 1 else 0)  # 10 of 1 digit, 9·10^(d-1) of d
        return numbers**self.arity

    def sizes(self, split: str) -> tuple[int, int]:
        """The operand sizes of a named split: `in_sizes` for "train" and "test", `ood_sizes`
        for "ood"."""
        if split in ("train", "test"):
            return self.in_sizes
        if split == "ood":
            return self.ood_sizes
        raise ValorlError(f"unknown split {split!r}: expected 'train', 'test' or 'ood'")

    def split(self, name: Literal["train", "test", "ood"], count: int, seed: int) -> ProblemSet:
        """`count` problems of a named split at the task's default sizes. "ood" problems are
        test prompts (by hash) at `ood_sizes`, so they stay out of any training set."""
        part = "train" if name == "train" else "test"
        return problems(self, self.sizes(name), count, seed, part)


_PROMPT_FORMS = {
    "+": re.compile(r"(0|[1-9][0-9]*)\+(0|[1-9][0-9]*)="),
    "*": re.compile(r"(0|[1-9][0-9]*)\*(0|[1-9][0-9]*)="),
    "s": re.compile(r"s([0-9]+)="),
}

TASKS: dict[str, Task] = {
    "addition": Task("addition", "+", in_sizes=(1, 3), ood_sizes=(4, 5)),
    "multiplication": Task("multiplication", "*", in_sizes=(1, 2), ood_sizes=(3, 3)),
    "sorting": Task("sorting", "s", in_sizes=(2, 5), ood_sizes=(6, 8)),
}


def get_task(name: str) -> Task:
    """The task registered under `name`."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValorlError(f"unknown task {name!r}: expected one of {sorted(TASKS)}") from None


def is_test_prompt(prompt: str) -> bool:
    """Whether a prompt belongs to the test part: its blake2b hash is 0 modulo `TEST_SHARE`."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % TEST_SHARE == 0


def problems(
    task: Task,
    sizes: tuple[int, int],
    count: int,
    seed: int,
    part: Literal["train", "test"],
) -> ProblemSet:
    """`count` problems whose operands have a digit count in `sizes` (inclusive), each operand's
    count drawn uniformly and independently, its digits uniformly (no leading zero in a number
    of more than one digit).

    Prompts are drawn from a stream fixed by `seed` and the task's name, and kept when their
    hash puts them in `part` (`is_test_prompt`), so train and test never share a prompt. The
    problems of a set are distinct when the sizes allow at least 20 times `count` prompts
    (`Task.space_size`); in smaller spaces (there are only 100 one-digit additions) they are
    drawn with replacement and may repeat. ValorlError if the part of the space is too small
    to give `count` problems.
    """
    lo, hi = _check_sizes(sizes)
    if count < 0:
        raise ValorlError(f"count must be non-negative, got {count}")
    if seed < 0:
        raise ValorlError(f"seed must be non-negative, got {seed}")
    if part not in ("train", "test"):
        raise ValorlError(f"unknown part {part!r}: expected 'train' or 'test'")
    want_test = part == "test"
    distinct = count * _DISTINCT_FACTOR <= task.space_size(sizes)
    budget = 100 * count + 100_000
    rng = np.random.default_rng([seed, _name_key(task.name)])
    prompts: list[str] = []
    seen: set[str] = set()
    drawn = 0
    candidates = _candidates(task, lo, hi, rng)
    while len(prompts) < count:
        if drawn >= budget:
            raise ValorlError(
                f"found only {len(prompts)} of {count} {part} prompts of {task.name} with "
                f"sizes {sizes} in {drawn} draws: ask for fewer or widen the sizes"
            )
        prompt = next(candidates)
        drawn += 1
        if is_test_prompt(prompt) != want_test or (distinct and prompt in seen):
            continue
        seen.add(prompt)
        prompts.append(prompt)
    return ProblemSet(task.name, prompts, [task.answer(p) for p in prompts])


def prompt_tokens(
    tokenizer: CharTokenizer, problem_set: ProblemSet, length: int | None = None
) -> np.ndarray:
    """(N, length) int32 prompts, left-padded with PAD (length: the longest prompt)."""
    return tokenizer.encode_batch(problem_set.prompts, length)


def demonstration_tokens(
    tokenizer: CharTokenizer, problem_set: ProblemSet, prompt_length: int, answer_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Demonstrations as tokens: (N, prompt_length + answer_length) int32, each row the prompt
    left-padded to `prompt_length`, then the answer, EOS, and PAD to the right; and a float32
    loss mask of the same shape, 1 on the answer's tokens and the EOS (the tokens to predict:
    with inputs `tokens[:, :-1]` and targets `tokens[:, 1:]`, weigh by `mask[:, 1:]`)."""
    prompts = tokenizer.encode_batch(problem_set.prompts, prompt_length)
    n = len(problem_set)
    tokens = np.full((n, prompt_length + answer_length), PAD, np.int32)
    mask = np.zeros(tokens.shape, np.float32)
    tokens[:, :prompt_length] = prompts
    for row, answer in enumerate(problem_set.answers):
        ids = [*tokenizer.encode(answer), EOS]
        if len(ids) > answer_length:
            raise ValorlError(
                f"the answer {answer!r} and EOS take {len(ids)} tokens, more than "
                f"answer_length={answer_length}"
            )
        tokens[row, prompt_length : prompt_length + len(ids)] = ids
        mask[row, prompt_length : prompt_length + len(ids)] = 1.0
    return tokens, mask


def completion_text(tokenizer: CharTokenizer, ids: Sequence[int]) -> str | None:
    """A generated completion's text: its tokens up to the first EOS (or the end, if it has
    none); None if a token before that is PAD or outside the vocabulary."""
    chars = []
    for i in map(int, ids):
        if i == EOS:
            break
        if not PAD < i < tokenizer.vocab_size:
            return None
        chars.append(tokenizer.alphabet[i - 2])
    return "".join(chars)


def rewards(
    task: Task, prompts: Sequence[str], completions: np.ndarray, tokenizer: CharTokenizer
) -> np.ndarray:
    """(N,) float32: 1.0 where the completion (N, L) token ids, read by `completion_text`, is
    exactly the answer to its prompt; 0.0 otherwise, and for a completion with PAD or an unknown
    id before its EOS. A correct answer that fills its row without EOS counts as correct."""
    completions = np.asarray(completions)
    if completions.ndim != 2 or len(completions) != len(prompts):
        raise ValorlError(
            f"completions of shape {completions.shape} do not match {len(prompts)} prompts"
        )
    out = np.zeros(len(prompts), np.float32)
    for row, (prompt, ids) in enumerate(zip(prompts, completions, strict=True)):
        text = completion_text(tokenizer, ids)
        answer = task.answer(prompt)
        out[row] = float(text == answer)
    return out


def _check_sizes(sizes: tuple[int, int]) -> tuple[int, int]:
    lo, hi = sizes
    if not 1 <= lo <= hi:
        raise ValorlError(f"operand sizes {sizes} must be digit counts with 1 <= low <= high")
    return int(lo), int(hi)


def _name_key(name: str) -> int:
    """A stable number for a task's name, mixed into its seeds so that tasks drawn with the same
    seed get unrelated operands."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")


def _candidates(task: Task, lo: int, hi: int, rng: np.random.Generator) -> Iterator[str]:
    """An endless stream of prompts, drawn `_CHUNK` at a time."""
    k = task.arity
    join = "s{}=".format if task.operator == "s" else ("{}" + task.operator + "{}=").format
    while True:
        lengths = rng.integers(lo, hi + 1, size=(_CHUNK, k))
        digits = rng.integers(0, 10, size=(_CHUNK, k, hi), dtype=np.uint8)
        if task.operator != "s":  # numbers of several digits start with 1-9
            first = rng.integers(1, 10, size=(_CHUNK, k), dtype=np.uint8)
            digits[..., 0] = np.where(lengths > 1, first, digits[..., 0])
        text = digits + np.uint8(ord("0"))
        for i in range(_CHUNK):
            yield join(*(text[i, j, : lengths[i, j]].tobytes().decode("ascii") for j in range(k)))
