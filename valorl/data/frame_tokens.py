"""Frames as tokens: a fixed patch code for MinAtar's binary frames, the tokeniser of JOWA-mini.

JOWA (Cheng et al. 2024, "Scaling Offline Model-Based RL via Jointly-Optimized World-Action
Model Pretraining", Sec. 3.1) turns each 84x84 Atari frame into 36 tokens with a VQ-VAE trained
beforehand. MinAtar's frames are 10x10 grids of C boolean channels (one per kind of object), so
a lossless code needs no training: each 2x2 patch of a frame padded to `CHANNELS` channels is a
40-bit pattern, and the data hold few distinct patterns (127 in Breakout, 208 in Asterix, 353 in
SpaceInvaders, 866 in Freeway, over the zoo's mixed datasets). `fit_patch_code` keeps the most
frequent patterns of the pre-training frames as the codebook (ties broken by the pattern, so the
same frames give the same code), leaving `reserve` slots for a game seen later
(`PatchCode.extend`); a pattern not in the codebook is coded as its nearest entry in Hamming
distance, so a frame round-trips exactly when all its patterns are known. 25 tokens per frame,
against a VQ-VAE's learned, lossy code and its own training stage.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from valorl.errors import ValorlError

CHANNELS = 10
"""Frames are padded to this many channels (Seaquest-MinAtar, the most, has 10)."""
PATCH = 2


def pad_channels(frames: np.ndarray, channels: int = CHANNELS) -> np.ndarray:
    """(..., H, W, C) frames with C ≤ `channels`, zero-padded to `channels` channels."""
    c = frames.shape[-1]
    if c > channels:
        raise ValorlError(f"frames have {c} channels, more than the {channels} tokens can hold")
    return np.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, channels - c)])


def patches(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, C) -> (..., H/2 · W/2, 4C): each 2x2 patch's bits, patches in row-major order."""
    *lead, h, w, c = frames.shape
    x = frames.reshape(*lead, h // PATCH, PATCH, w // PATCH, PATCH, c)
    x = np.moveaxis(x, -4, -3)  # (..., h/2, w/2, 2, 2, c)
    return x.reshape(*lead, (h // PATCH) * (w // PATCH), PATCH * PATCH * c)


@dataclasses.dataclass(frozen=True)
class PatchCode:
    """A codebook of 2x2 patch patterns: `codes` (vocab, 4·CHANNELS) bits, the first `used` rows
    filled (the rest reserved, all zeros, never chosen), for frames of `frame_shape`."""

    codes: np.ndarray
    used: int
    frame_shape: tuple[int, int, int]

    @property
    def vocab_size(self) -> int:
        return len(self.codes)

    @property
    def tokens_per_frame(self) -> int:
        h, w, _ = self.frame_shape
        return (h // PATCH) * (w // PATCH)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """(..., H, W, C ≤ CHANNELS) binary frames -> (..., tokens_per_frame) int32 tokens: each
        patch's code, or for a pattern without one the used code nearest in Hamming distance."""
        keys = _keys(patches(pad_channels(np.asarray(frames) > 0)))
        known = _keys(self.codes[: self.used])
        order = np.argsort(known)
        where = np.minimum(np.searchsorted(known[order], keys), self.used - 1)
        tokens = order[where]
        unknown = known[tokens] != keys
        if unknown.any():  # nearest by popcount of the XOR of the 40-bit keys
            distance = np.bitwise_count(keys[unknown][:, None] ^ known[None, :])
            tokens[unknown] = np.argmin(distance, axis=1)
        return tokens.astype(np.int32)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(..., tokens_per_frame) tokens -> (..., H, W, CHANNELS) uint8 frames."""
        h, w, _ = self.frame_shape
        bits = self.codes[np.asarray(tokens)]  # (..., P, 4C)
        *lead, _, _ = bits.shape
        x = bits.reshape(*lead, h // PATCH, w // PATCH, PATCH, PATCH, CHANNELS)
        x = np.moveaxis(x, -3, -4)  # (..., h/2, 2, w/2, 2, c)
        return x.reshape(*lead, h, w, CHANNELS).astype(np.uint8)

    def extend(self, frames: np.ndarray) -> PatchCode:
        """This code with the reserved slots filled by `frames`' most frequent unknown patterns
        (fine-tuning on a game the code was not fitted to)."""
        known = {bytes(c) for c in self.codes[: self.used]}
        new = [p for p in _patterns_by_frequency(frames) if bytes(p) not in known]
        new = new[: self.vocab_size - self.used]
        codes = self.codes.copy()
        codes[self.used : self.used + len(new)] = new
        return dataclasses.replace(self, codes=codes, used=self.used + len(new))


def fit_patch_code(
    frames: np.ndarray | list[np.ndarray], vocab_size: int = 1024, reserve: int = 256
) -> PatchCode:
    """The `vocab_size − reserve` most frequent 2x2 patterns of (N, H, W, C) binary frames, or
    of a list of such arrays (games with different C) (module docstring); the all-zero patch
    is always code 0."""
    frames = np.concatenate([pad_channels(np.asarray(f)) for f in _as_list(frames)])
    if frames.ndim != 4 or frames.shape[1] % PATCH or frames.shape[2] % PATCH:
        raise ValorlError(f"frames must be (N, H, W, C) with even H and W, got {frames.shape}")
    if not 0 <= reserve < vocab_size:
        raise ValorlError(f"reserve must be in [0, vocab_size), got {reserve} of {vocab_size}")
    width = PATCH * PATCH * CHANNELS
    empty = np.zeros(width, np.uint8)
    ranked = [p for p in _patterns_by_frequency(frames) if p.any()]
    kept = [empty, *ranked][: vocab_size - reserve]
    codes = np.zeros((vocab_size, width), np.uint8)
    codes[: len(kept)] = kept
    h, w = frames.shape[1:3]
    return PatchCode(codes=codes, used=len(kept), frame_shape=(h, w, CHANNELS))


def _keys(bits: np.ndarray) -> np.ndarray:
    """(..., 4·CHANNELS) bits -> (...,) uint64 keys, bit i of the key the pattern's i-th bit."""
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[-1], dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)


def _as_list(frames: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return list(frames) if isinstance(frames, list | tuple) else [frames]


def _patterns_by_frequency(frames: np.ndarray) -> list[np.ndarray]:
    """The frames' distinct patch patterns, most frequent first, ties in lexicographic order of
    the bits. Counted on one 64-bit key per patch (the bits packed), which is ~100x faster than
    `np.unique(axis=0)` on the bit rows (a minute for 120k frames)."""
    bits = patches(pad_channels(np.asarray(frames) > 0).astype(np.uint8))
    bits = bits.reshape(-1, bits.shape[-1])
    packed = np.zeros((len(bits), 8), np.uint8)
    packed[:, : -(-bits.shape[-1] // 8)] = np.packbits(bits, axis=-1)
    keys = packed.view(np.uint64)[:, 0]
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    unique = bits[first]
    order = np.lexsort((*unique.T[::-1], -counts))  # by count, then by pattern
    return list(unique[order])
