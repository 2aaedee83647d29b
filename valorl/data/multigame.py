"""Several MinAtar games as one dataset of tokenised observations, for multi-game pretraining.

JOWA pretrains one model on many games (Cheng et al. 2024, Sec. 4.1): frames become tokens of a
shared code, actions are indices of the full action set (Atari's 18; MinAtar's 6) with each
game's valid subset masked, and a task embedding tells the games apart. Here each row's
observation is the flat vector `JOWA` reads (`valorl.agents.jowa.split_observation`): the
frame's patch tokens (`valorl.data.frame_tokens`), the game's index, and its valid actions as
0/1; its action is the game's minimal action mapped into the full set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.frame_tokens import PatchCode, fit_patch_code
from valorl.errors import ValorlError

FULL_ACTIONS = 6
"""MinAtar's full action set: no-op, left, up, right, down, fire."""
MINIMAL_ACTIONS = {
    "Breakout-MinAtar": (0, 1, 3),
    "Asterix-MinAtar": (0, 1, 2, 3, 4),
    "Freeway-MinAtar": (0, 2, 4),
    "SpaceInvaders-MinAtar": (0, 1, 3, 5),
}
"""Each game's actions as indices of the full set (gymnax's `minimal_action_set`)."""


def token_observations(frames: np.ndarray, code: PatchCode, game: int, env_id: str) -> np.ndarray:
    """(N, 10, 10, C) frames of game `env_id` -> (N, tokens + 1 + FULL_ACTIONS) float32."""
    valid = np.zeros(FULL_ACTIONS, np.float32)
    valid[list(_minimal(env_id))] = 1.0
    tokens = np.asarray(code.encode(frames), np.float32)
    extra = np.broadcast_to(np.concatenate([[game], valid]), (len(frames), 1 + FULL_ACTIONS))
    return np.concatenate([tokens, extra.astype(np.float32)], axis=1)


def fit_games_code(datasets: list[Dataset], vocab_size: int, reserve: int) -> PatchCode:
    """The patch code of the games' frames together (`fit_patch_code`)."""
    return fit_patch_code([d.observations for d in datasets], vocab_size, reserve)


def multigame_dataset(
    datasets: list[Dataset], code: PatchCode, info: DatasetInfo | None = None, first_game: int = 0
) -> Dataset:
    """The games' datasets as one (module docstring), game `first_game + i` the i-th dataset;
    episodes kept whole and in order. `info` names it (default: the names joined by "+")."""
    parts = []
    for game, data in enumerate(datasets, start=first_game):
        env_id = data.info.env_id or ""
        minimal = np.asarray(_minimal(env_id))
        if data.num_actions != len(minimal):
            raise ValorlError(
                f"{data.info.name!r} has {data.num_actions} actions; {env_id}'s minimal set has "
                f"{len(minimal)}"
            )
        parts.append(
            dataclasses.replace(
                data,
                observations=token_observations(data.observations, code, game, env_id),
                next_observations=token_observations(data.next_observations, code, game, env_id),
                actions=minimal[data.actions].astype(data.actions.dtype),
                timeouts=data.timeouts | (np.arange(len(data)) == len(data) - 1),  # no crossing
                num_actions=FULL_ACTIONS,
                info=DatasetInfo(name=data.info.name),
            )
        )
    fields = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
    info = info or DatasetInfo(name="+".join(d.info.name for d in datasets))
    return Dataset(**joined, info=info, num_actions=FULL_ACTIONS)


def _minimal(env_id: str) -> tuple[int, ...]:
    try:
        return MINIMAL_ACTIONS[env_id]
    except KeyError:
        raise ValorlError(
            f"{env_id or 'this dataset'} is not a MinAtar game ({', '.join(MINIMAL_ACTIONS)})"
        ) from None
