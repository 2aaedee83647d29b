"""Several MinAtar games behind one Gymnasium environment that observes tokens, for evaluating
a multi-game policy trained on `valorl.data.multigame` data.

`valorl/MinAtarTokens-v0` with `datasets=[...]` plays game i (the i-th dataset's environment,
made with the sticky actions its data were collected with) after `reset(options={"game": i})`;
its observations are the token vectors of `valorl.data.multigame` (frame tokens under the
patch code fitted to the same datasets, the game's index, its valid actions) and its actions
are indices of MinAtar's full action set (an action the game lacks is a no-op). Episode e of
every seed plays game e mod G (`game_options`), so with episodes a multiple of G every seed
plays every game equally often, as OGBench's tasks in `goal_tasks.py`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import gymnasium as gym
import numpy as np

from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.frame_tokens import PatchCode
from valorl.data.multigame import (
    FULL_ACTIONS,
    MINIMAL_ACTIONS,
    fit_games_code,
    multigame_dataset,
    token_observations,
)
from valorl.data.sources import load_dataset
from valorl.envs.host import register_gymnasium_ids
from valorl.errors import ValorlError

ENV_ID = "valorl/MinAtarTokens-v0"


class TokenGames(gym.Env):
    """The games of `datasets` as one environment (module docstring)."""

    def __init__(
        self,
        datasets: list[str],
        vocab_size: int,
        reserve: int,
        base: list[str] | None = None,
        episodes: int | None = None,
    ):
        self.code, self.env_ids, self.first_game = games_code(
            tuple(datasets), vocab_size, reserve, tuple(base or ()), episodes
        )
        register_gymnasium_ids(tuple(self.env_ids))
        self.envs = [gym.make(env_id) for env_id in self.env_ids]
        dim = self.code.tokens_per_frame + 1 + FULL_ACTIONS
        self.observation_space = gym.spaces.Box(0, np.inf, (dim,), np.float32)
        self.action_space = gym.spaces.Discrete(FULL_ACTIONS)
        self.game = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.game = int((options or {}).get("game", 0))
        if not 0 <= self.game < len(self.envs):
            raise ValorlError(f"game {self.game} is not one of the {len(self.envs)} games")
        obs, info = self.envs[self.game].reset(seed=seed)
        return self._observe(obs), info

    def step(self, action):
        minimal = MINIMAL_ACTIONS[self.env_ids[self.game]]
        index = minimal.index(int(action)) if int(action) in minimal else 0
        obs, reward, terminated, truncated, info = self.envs[self.game].step(index)
        return self._observe(obs), reward, terminated, truncated, info

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _observe(self, frame: np.ndarray) -> np.ndarray:
        env_id, index = self.env_ids[self.game], self.first_game + self.game
        return token_observations(frame[None], self.code, index, env_id)[0]


@functools.lru_cache(maxsize=4)
def games_data(datasets: tuple[str, ...], episodes: int | None) -> list[Dataset]:
    """The datasets (their first `episodes` episodes), loaded once per process for the token
    dataset and the code alike."""
    data = [load_dataset(d) for d in datasets]
    return data if episodes is None else [d.first_episodes(episodes) for d in data]


@functools.lru_cache(maxsize=4)
def games_code(
    datasets: tuple[str, ...],
    vocab_size: int,
    reserve: int,
    base: tuple[str, ...] = (),
    episodes: int | None = None,
) -> tuple[PatchCode, list[str], int]:
    """The patch code of the datasets (as `load_multigame` builds it), their environments and
    the game index of the first: fitted to the datasets' frames, or with `base` (the datasets
    of a pre-training run) fitted to those and extended with the new games' patterns (of
    their first `episodes` episodes) in its reserved slots, the new games numbered after the
    base ones. Computed once per process."""
    data = games_data(datasets, episodes)
    env_ids = [d.info.env_id or "" for d in data]
    if not base:
        return fit_games_code(data, vocab_size, reserve), env_ids, 0
    code = fit_games_code(games_data(base, None), vocab_size, reserve)
    for d in data:
        code = code.extend(d.observations)
    return code, env_ids, len(base)


def per_game(env_spec_json: str, returns: np.ndarray) -> list[tuple[str, np.ndarray, Any]]:
    """A multi-game evaluation's (seeds, episodes) returns split by game (episode e played game
    e mod G): per game, its dataset, each seed's mean return, and each seed's score normalised
    by that dataset's reference returns (None without them)."""
    datasets = json.loads(env_spec_json)["kwargs"]["datasets"]
    rows = []
    for game, dataset in enumerate(datasets):
        per_seed = returns[:, game :: len(datasets)].mean(axis=1)
        rows.append((dataset, per_seed, load_dataset(dataset).info.normalized_score(per_seed)))
    return rows


def load_multigame(
    datasets: list[str],
    vocab_size: int = 1024,
    reserve: int = 256,
    base: list[str] | None = None,
    episodes: int | None = None,
) -> Dataset:
    """The datasets (ids or paths of MinAtar games) as one token dataset
    (`valorl.data.multigame`) whose environment is this module's, playing the same games.
    `base`: the datasets of a pre-training run, whose code and game numbering the new games
    extend (fine-tuning; `games_code`); `episodes`: only the first that many episodes of each."""
    if len(set(datasets)) != len(datasets):
        raise ValorlError(f"--datasets names a dataset twice: {', '.join(datasets)}")
    if episodes is not None and episodes < 1:
        raise ValorlError(f"--episodes-per-game must be at least 1, got {episodes}")
    data = games_data(tuple(datasets), episodes)
    code, _, first_game = games_code(
        tuple(datasets), vocab_size, reserve, tuple(base or ()), episodes
    )
    kwargs: dict[str, Any] = {"datasets": list(datasets), "vocab_size": vocab_size}
    kwargs |= {"reserve": reserve, "base": list(base or []), "episodes": episodes}
    spec = gym.envs.registration.EnvSpec(
        ENV_ID,
        entry_point="valorl.envs.token_games:TokenGames",
        kwargs=kwargs,
        disable_env_checker=True,
    )
    info = DatasetInfo(
        name="+".join(data_.info.name for data_ in data),
        source=",".join(datasets),
        env_id=ENV_ID,
        env_spec_json=spec.to_json(),
    )
    return multigame_dataset(data, code, info, first_game)


def games_in(env_spec_json: str | None) -> int | None:
    """How many games a token environment's spec plays; None for any other environment."""
    if env_spec_json is None:
        return None
    spec = json.loads(env_spec_json)
    if spec.get("id") != ENV_ID:
        return None
    return len(spec["kwargs"]["datasets"])


def check_episodes(env_spec_json: str | None, env: str | None, episodes: int, flag: str) -> None:
    """A multi-game run (its data's `env_spec_json`, evaluated in its own environment: `env`
    None) has every seed play every game equally often only if `episodes` is a multiple of
    its games; other runs pass."""
    games = games_in(env_spec_json) if env is None else None
    if games and episodes % games:
        raise ValorlError(
            f"a multi-game evaluation plays its {games} games in turn, so {flag} must be a "
            f"multiple of {games} (got {episodes})"
        )


def game_options(games: int):
    """Reset options of evaluation episode e: game e mod `games`."""
    return lambda episode: {"game": episode % games}
