"""A character tokeniser for the verifiable tasks: one token per character of a fixed alphabet.

Two special tokens come first: PAD (0) fills prompts on the left and completions after their
end, EOS (1) ends an answer. Batches of prompts are left-padded so that every prompt ends at the
same column and generation continues from there for every row at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from valorl.errors import ValorlError

PAD = 0
EOS = 1
ALPHABET = "0123456789+*s="
"""Digits, the operators of the tasks (`s` asks for the digits sorted) and `=`, which ends
every prompt."""


class CharTokenizer:
    """str <-> token ids over `ALPHABET`, with PAD and EOS."""

    def __init__(self, alphabet: str = ALPHABET):
        if len(set(alphabet)) != len(alphabet):
            raise ValorlError(f"the alphabet {alphabet!r} repeats a character")
        self.alphabet = alphabet
        self._ids = {c: i + 2 for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 2

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as exc:
            raise ValorlError(
                f"{text!r} has a character outside the alphabet {self.alphabet!r}: {exc}"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """The text up to the first EOS; PAD is skipped."""
        chars = []
        for i in map(int, ids):
            if i == EOS:
                break
            if i != PAD:
                chars.append(self.alphabet[i - 2])
        return "".join(chars)

    def encode_batch(self, texts: Sequence[str], length: int | None = None) -> np.ndarray:
        """(len(texts), length) int32, each row left-padded with PAD (length: the longest)."""
        encoded = [self.encode(t) for t in texts]
        width = max(map(len, encoded)) if length is None else length
        if any(len(e) > width for e in encoded):
            raise ValorlError(f"a text is longer than {width} tokens")
        out = np.full((len(texts), width), PAD, np.int32)
        for row, ids in enumerate(encoded):
            if ids:
                out[row, width - len(ids) :] = ids
        return out

    def decode_batch(self, ids: np.ndarray) -> list[str]:
        return [self.decode(row) for row in np.asarray(ids)]
