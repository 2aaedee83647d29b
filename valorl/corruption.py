"""Corrupted datasets: the random and adversarial data corruptions of Yang et al. (2023).

Yang, Zhong, Xu, Zhang, Zhang, Han & Zhang, "Towards Robust Offline Reinforcement Learning
under Diverse Data Corruption" (ICLR 2024, arXiv:2310.12955; settings in its appendix) and
its reference code (github.com/YangRui2015/RIQL, `attack.py`) define four kinds of corruption,
each applied to a fraction c (`rate`) of the transitions with a scale ε (`scale`). std(x) is
the per-dimension standard deviation of that field over the whole clean dataset.

    kind      field              random (λ ~ U[−ε, ε]^d)   adversarial
    obs       observations       ŝ = s + λ·std(s)          ŝ = argmin Q(ŝ, a), |ŝ − s| ≤ ε·std(s)
    actions   actions            â = a + λ·std(a)          â = argmin Q(s, â), |â − a| ≤ ε·std(a)
    rewards   rewards            r̂ ~ U[−30ε, 30ε]          r̂ = −ε·r
    dynamics  next_observations  ŝ' = s' + λ·std(s')       ŝ' = argmin Q(ŝ', π(ŝ')),
                                                           |ŝ' − s'| ≤ ε·std(s')

Corrupted actions are clipped to the action bounds (the environment's, else those the data
imply), which the reference code does not do, so that every corrupted dataset still passes
valorl's action-bound check (an action on a bound that is pushed outwards stays as it was).
The 30 of the random reward corruption is the paper's constant for D4RL MuJoCo rewards
(`reward_bound`).

The adversarial corruptions attack a trained critic agent (the paper: a pretrained EDAC agent)
with Q the mean over its ensemble. The minimisation is projected gradient descent in the box:
a uniform random start, then `attack_steps` (100) steps of δ ← clip(δ − η·sign(∇_δ Q), box) with
η = `attack_step_size`·ε·std (0.01·ε·std). The reference code takes each of its 100 steps with
a freshly created Adam optimiser of learning rate 0.01·ε, whose first step is exactly such a
sign step (up to Adam's ε), so this is the same attack written as PGD.

Discrete actions (`Dataset.num_actions`) have no neighbourhood to perturb within, so the
actions corruption refuses them, as the observation corruptions refuse compact (uint8)
observations such as MinAtar's boolean frames; rewards corrupt as usual, and the adversarial
obs and dynamics corruptions attack a discrete critic agent's Q(s, a) at the logged (integer)
actions.

Transitions are chosen without replacement: exactly round(c·N) of them (the reference code
picks each with probability c, so its count varies). Everything is reproducible from `seed`:
the rows, the noise and the attack's random start come from separate streams of
`numpy.random.SeedSequence(seed)`.

`corrupt` returns the new `Dataset` (only the named field differs, and only in the recorded
rows) and a JSON-ready record of exactly what was done, which `save_corrupted` stores in the
Minari metadata under "valorl_corruption" and `read_corruption` reads back.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valorl.data.dataset import Dataset
from valorl.data.sources import make_env, minari_root, save_minari
from valorl.data.transforms import Normalizer, action_bounds
from valorl.errors import ValorlError
from valorl.eval.policy import load_policy
from valorl.training.run_dir import RunDir
from valorl.ui import progress_bar

KINDS = {
    "obs": "observations",
    "actions": "actions",
    "rewards": "rewards",
    "dynamics": "next_observations",
}
"""Corruption kind -> the dataset field it changes."""
MODES = ("random", "adversarial")
METADATA_KEY = "valorl_corruption"
RECORD_FORMAT = "valorl-corruption/1"
REWARD_BOUND = 30.0
"""The paper's random reward corruption draws from U[−30ε, 30ε] (D4RL MuJoCo reward scale)."""
ATTACK_STEPS = 100
ATTACK_STEP_SIZE = 0.01
ATTACK_CHUNK = 4096
"""Rows attacked per compiled call."""

DEFINITIONS = {
    ("obs", "random"): "s <- s + lambda * std(s), lambda ~ U[-scale, scale] per dimension",
    ("actions", "random"): "a <- clip(a + lambda * std(a), action bounds), "
    "lambda ~ U[-scale, scale] per dimension",
    ("rewards", "random"): "r <- U[-reward_bound * scale, reward_bound * scale]",
    ("dynamics", "random"): "s' <- s' + lambda * std(s'), lambda ~ U[-scale, scale] per dimension",
    ("obs", "adversarial"): "s <- argmin mean_i Q_i(s~, a) over |s~ - s| <= scale * std(s)",
    ("actions", "adversarial"): "a <- argmin mean_i Q_i(s, a~) over |a~ - a| <= scale * std(a) "
    "within the action bounds",
    ("rewards", "adversarial"): "r <- -scale * r",
    ("dynamics", "adversarial"): "s' <- argmin mean_i Q_i(s~', pi(s~')) "
    "over |s~' - s'| <= scale * std(s')",
}


@dataclasses.dataclass(frozen=True)
class Attack:
    """The trained critic agent an adversarial corruption minimises Q against: one seed of a
    valorl run, with the normaliser it was trained with (so it reads raw data)."""

    agent: Any
    state: Any
    normalizer: Normalizer
    run: str = ""
    seed_index: int = 0
    step: int = 0
    data_fingerprint: str | None = None

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, seed_index: int = 0) -> Attack:
        """One seed of a trained run whose agent has a Q-function (`q_values`)."""
        policy = load_policy(run_dir)
        if not policy.agent.has_critic:
            raise ValorlError(
                f"{run_dir} trained {policy.agent.name}, which has no Q-function; an "
                "adversarial corruption attacks a critic agent's Q (e.g. iql, td3_bc, riql)"
            )
        if not -len(policy.seeds) <= seed_index < len(policy.seeds):
            raise ValorlError(
                f"--attack-seed-index {seed_index} is out of range: {run_dir} has "
                f"{len(policy.seeds)} seeds"
            )
        seed_index %= len(policy.seeds)
        config = RunDir(run_dir).config()
        return cls(
            agent=policy.agent,
            state=jax.tree.map(lambda x: x[seed_index], policy.states),
            normalizer=policy.normalizer,
            run=str(run_dir),
            seed_index=seed_index,
            step=policy.step,
            data_fingerprint=config.get("data", {}).get("fingerprint"),
        )

    def q(self, obs: jax.Array, actions: jax.Array) -> jax.Array:
        """Mean over the ensemble of Q(s, a), for raw observations and environment actions."""
        return _q(self.agent, self.state, self.normalizer, obs, actions)

    def q_of_policy(self, obs: jax.Array) -> jax.Array:
        """Mean over the ensemble of Q(s, π(s)) for raw observations."""
        return _q_pi(self.agent, self.state, self.normalizer, obs)


def _q(agent, state, normalizer: Normalizer, obs, actions) -> jax.Array:
    unit = normalizer.actions_to_unit(actions)
    return agent.q_values(state, normalizer.observations(obs), unit).mean(0)


def _q_pi(agent, state, normalizer: Normalizer, obs) -> jax.Array:
    norm_obs = normalizer.observations(obs)
    actions = agent.act(state, norm_obs, jax.random.key(0), True)  # deterministic: key unused
    return agent.q_values(state, norm_obs, actions).mean(0)


@dataclasses.dataclass(frozen=True)
class Corrupted:
    """A corrupted dataset and the record of what was corrupted."""

    dataset: Dataset
    record: dict[str, Any]

    @property
    def indices(self) -> np.ndarray:
        return decode_indices(self.record)


def check_settings(
    kind: str,
    mode: str,
    rate: float,
    scale: float,
    *,
    attack_given: bool,
    reward_bound: float = REWARD_BOUND,
    attack_steps: int = ATTACK_STEPS,
    attack_step_size: float = ATTACK_STEP_SIZE,
) -> None:
    """Raise ValorlError (naming the flag) for settings that cannot work; reads no data."""
    if kind not in KINDS:
        raise ValorlError(f"unknown corruption kind {kind!r}; choose from {', '.join(KINDS)}")
    if mode not in MODES:
        raise ValorlError(f"unknown corruption mode {mode!r}; choose from {', '.join(MODES)}")
    if not 0.0 <= rate <= 1.0:
        raise ValorlError(f"--rate must be between 0 and 1, got {rate}")
    if not (0.0 < scale < math.inf):
        raise ValorlError(f"--scale must be a positive number, got {scale}")
    if not (0.0 < reward_bound < math.inf):
        raise ValorlError(f"--reward-bound must be a positive number, got {reward_bound}")
    if attack_steps < 1:
        raise ValorlError(f"--attack-steps must be at least 1, got {attack_steps}")
    if not (0.0 < attack_step_size < math.inf):
        raise ValorlError(f"--attack-step-size must be a positive number, got {attack_step_size}")
    needs_attack = mode == "adversarial" and kind != "rewards"
    if needs_attack and not attack_given:
        raise ValorlError(
            f"--mode adversarial --kind {kind} attacks a trained Q-function: name a valorl run "
            "of a critic agent with --attack-run RUN_DIR"
        )
    if attack_given and not needs_attack:
        what = "the adversarial reward corruption (r -> -scale*r)" if kind == "rewards" else mode
        raise ValorlError(f"--attack-run is not used by {what}; leave it out")


def select_indices(n: int, rate: float, seed: int | np.random.SeedSequence) -> np.ndarray:
    """Exactly round(rate·n) (halves up) distinct row indices, sorted, drawn uniformly by `seed`."""
    rng = np.random.default_rng(seed)
    count = min(n, math.floor(rate * n + 0.5))
    return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)


def random_values(
    kind: str,
    values: np.ndarray,
    std: np.ndarray | None,
    scale: float,
    rng: np.random.Generator,
    *,
    reward_bound: float = REWARD_BOUND,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> np.ndarray:
    """The random corruption of rows `values` (clean) of field KINDS[kind]; see the module
    docstring. Returns new float32 rows of the same shape."""
    if kind == "rewards":
        bound = reward_bound * scale
        return rng.uniform(-bound, bound, size=values.shape).astype(np.float32)
    noise = rng.uniform(-scale, scale, size=values.shape) * std
    new = values.astype(np.float64) + noise
    if kind == "actions":
        new = np.clip(new, low, high)
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, which Dataset refuses
        return new.astype(np.float32)


@functools.cache
def _pgd(agent: Any, kind: str, steps: int):
    """jit of (state, normalizer, x, other, lo, hi, step, key) -> x + δ: projected sign-gradient
    descent of the attacked Q over δ in the box [lo, hi] (shapes of x), from a uniform start."""

    def value(state, normalizer, x, other):
        if kind == "obs":
            return _q(agent, state, normalizer, x, other)
        if kind == "actions":
            return _q(agent, state, normalizer, other, x)
        return _q_pi(agent, state, normalizer, x)

    def run(state, normalizer, x, other, lo, hi, step, key):
        grad = jax.grad(lambda d: value(state, normalizer, x + d, other).sum())

        def body(delta, _):
            return jnp.clip(delta - step * jnp.sign(grad(delta)), lo, hi), None

        delta = jax.random.uniform(key, x.shape, minval=lo, maxval=hi)
        delta, _ = jax.lax.scan(body, delta, None, length=steps)
        return x + delta

    return jax.jit(run)


def adversarial_values(
    kind: str,
    dataset: Dataset,
    indices: np.ndarray,
    std: np.ndarray | None,
    scale: float,
    attack: Attack | None,
    key: jax.Array,
    *,
    attack_steps: int = ATTACK_STEPS,
    attack_step_size: float = ATTACK_STEP_SIZE,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    chunk: int = ATTACK_CHUNK,
    progress: bool = False,
) -> np.ndarray:
    """The adversarial corruption of rows `indices` of field KINDS[kind]; see the module
    docstring. Returns new float32 rows."""
    field = KINDS[kind]
    clean = getattr(dataset, field)[indices]
    if kind == "rewards":
        return (-scale * clean.astype(np.float64)).astype(np.float32)
    assert attack is not None and std is not None
    if kind == "actions":
        other = dataset.observations[indices]
        lo = np.maximum(-scale * std, low - clean)
        hi = np.minimum(scale * std, high - clean)
    else:
        other = dataset.actions[indices]  # unused by the dynamics attack
        lo = np.broadcast_to(-scale * std, clean.shape)
        hi = np.broadcast_to(scale * std, clean.shape)
    step = np.broadcast_to(attack_step_size * scale * std, clean.shape)
    attack_fn = _pgd(attack.agent, kind, attack_steps)
    out = np.empty_like(clean)
    size = max(1, min(chunk, len(indices)))
    with progress_bar(progress) as bar:
        task = bar.add_task(f"attack {field}", total=len(indices), rate="", note="")
        for n, start in enumerate(range(0, len(indices), size)):
            rows = slice(start, min(start + size, len(indices)))
            args = [_padded(a[rows], size) for a in (clean, other, lo, hi, step)]
            new = attack_fn(attack.state, attack.normalizer, *args, jax.random.fold_in(key, n))
            out[rows] = np.asarray(new)[: rows.stop - rows.start]
            bar.update(task, completed=rows.stop)
    if kind == "actions":
        out = np.clip(out, low, high)
    return out.astype(np.float32)


def _padded(x: np.ndarray, size: int) -> jax.Array:
    """`x` with zero rows appended up to `size` rows, so every chunk compiles once (float32;
    integers, discrete actions, keep their type)."""
    x = np.asarray(x)
    x = x if x.dtype.kind in "iu" else x.astype(np.float32)
    if len(x) < size:
        x = np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])
    return jnp.asarray(x)


def corrupt(
    dataset: Dataset,
    kind: str,
    mode: str = "random",
    rate: float = 0.3,
    scale: float = 1.0,
    seed: int = 0,
    *,
    attack: Attack | None = None,
    reward_bound: float = REWARD_BOUND,
    attack_steps: int = ATTACK_STEPS,
    attack_step_size: float = ATTACK_STEP_SIZE,
    action_space: Any = None,
    name: str | None = None,
    progress: bool = False,
) -> Corrupted:
    """Corrupt `rate` of the transitions' field KINDS[kind] as Yang et al. (2023) do (see the
    module docstring). Returns the new dataset, identical to `dataset` except in those rows of
    that field, and the record of what was done.

    Args:
        kind: obs, actions, rewards or dynamics.
        mode: random or adversarial.
        rate: fraction of transitions corrupted, in [0, 1] (the paper: c = 0.3).
        scale: ε, the size of the corruption (the paper: 1.0).
        seed: chooses the rows, the noise and the attack's random start.
        attack: the trained critic agent attacked (adversarial obs/actions/dynamics).
        reward_bound: random rewards are drawn from U[−reward_bound·ε, reward_bound·ε].
        attack_steps, attack_step_size: PGD steps, and step size as a fraction of ε·std.
        action_space: bounds corrupted actions are clipped to; default: the environment the
            dataset names, else [−1, 1] when the data fit in it, else the data's range.
        name: the new dataset's name (default: derived from the source's).
    """
    check_settings(
        kind,
        mode,
        rate,
        scale,
        attack_given=attack is not None,
        reward_bound=reward_bound,
        attack_steps=attack_steps,
        attack_step_size=attack_step_size,
    )
    field = KINDS[kind]
    clean = getattr(dataset, field)
    _check_kind_fits(kind, dataset)
    if attack is not None:
        _check_attack_fits(attack, dataset)
    index_stream, noise_stream, attack_stream = np.random.SeedSequence(seed).spawn(3)
    indices = select_indices(len(dataset), rate, index_stream)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "kind": kind,
        "field": field,
        "mode": mode,
        "rate": float(rate),
        "scale": float(scale),
        "seed": int(seed),
        "definition": DEFINITIONS[kind, mode],
        "reference": "Yang et al. 2023, arXiv:2310.12955; github.com/YangRui2015/RIQL attack.py",
        "source": {
            "name": dataset.info.name,
            "source": dataset.info.source,
            "fingerprint": dataset.fingerprint(),
            "transitions": len(dataset),
        },
        "transitions": len(dataset),
        "corrupted": len(indices),
        "indices": encode_indices(indices, len(dataset)),
        "indices_encoding": "base64(zlib(numpy.packbits(mask))): decode_indices(record)",
    }
    std = None
    if kind != "rewards":
        std = clean.astype(np.float64).std(axis=0)
        record["std"] = std.tolist()
    low = high = None
    if kind == "actions":
        low, high = _action_bounds(dataset, action_space)
        record["action_low"], record["action_high"] = low.tolist(), high.tolist()
    if mode == "random":
        if kind == "rewards":
            record["reward_bound"] = float(reward_bound)
        rng = np.random.default_rng(noise_stream)
        new_rows = random_values(
            kind, clean[indices], std, scale, rng, reward_bound=reward_bound, low=low, high=high
        )
    else:
        key = jax.random.key(int(attack_stream.generate_state(1)[0]))
        if attack is not None:
            record["attack"] = {
                "run": attack.run,
                "agent": attack.agent.name,
                "seed_index": attack.seed_index,
                "step": attack.step,
                "data_fingerprint": attack.data_fingerprint,
                "steps": int(attack_steps),
                "step_size": float(attack_step_size),
                "method": "PGD: uniform start, sign steps of step_size*scale*std, projected",
            }
        new_rows = adversarial_values(
            kind,
            dataset,
            indices,
            std,
            scale,
            attack,
            key,
            attack_steps=attack_steps,
            attack_step_size=attack_step_size,
            low=low,
            high=high,
            progress=progress,
        )
    values = clean.copy()
    values[indices] = new_rows
    info = dataclasses.replace(
        dataset.info,
        name=name or f"{dataset.info.name or 'data'} ({kind} {mode} {rate:g}x{scale:g})",
        source="",
    )
    fields = {f: getattr(dataset, f) for f in _FIELDS}
    new = Dataset(**(fields | {field: values}), info=info, num_actions=dataset.num_actions)
    return Corrupted(new, record)


_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def _check_kind_fits(kind: str, dataset: Dataset) -> None:
    """The additive corruptions need continuous values: refuse discrete actions and compact
    (uint8) observations with a one-line error."""
    name = dataset.info.name or "the dataset"
    if kind == "actions" and dataset.discrete:
        raise ValorlError(
            f"--kind actions perturbs continuous actions (a + noise within the action bounds); "
            f"{name} has discrete actions (Discrete({dataset.num_actions}))"
        )
    if kind in ("obs", "dynamics") and dataset.observations.dtype == np.uint8:
        raise ValorlError(
            f"--kind {kind} perturbs continuous observations; {name} has compact uint8 "
            "observations (image-like frames)"
        )


def _check_attack_fits(attack: Attack, dataset: Dataset) -> None:
    obs_shape = tuple(attack.normalizer.obs_mean.shape)
    action_dim = int(attack.normalizer.action_low.shape[0])
    if attack.agent.discrete != dataset.discrete:
        mine, theirs = (
            ("discrete", "continuous") if attack.agent.discrete else ("continuous", "discrete")
        )
        raise ValorlError(
            f"the attacked run {attack.run} acts with {mine} actions, but the dataset has "
            f"{theirs} ones"
        )
    if obs_shape != dataset.obs_shape or action_dim != dataset.action_dim:
        raise ValorlError(
            f"the attacked run {attack.run} was trained on observations of shape {obs_shape} and "
            f"{action_dim}-d actions, but the dataset has {dataset.obs_shape} and "
            f"{dataset.action_dim}-d actions"
        )


def _action_bounds(dataset: Dataset, action_space: Any) -> tuple[np.ndarray, np.ndarray]:
    if action_space is None and (dataset.info.env_spec_json or dataset.info.env_id):
        try:
            env = make_env(dataset.info)
        except ValorlError:
            env = None  # the environment is not installed here: bounds from the data
        if env is not None:
            action_space = env.action_space
            env.close()
    low, high = action_bounds(dataset, action_space)
    return np.asarray(low, np.float64), np.asarray(high, np.float64)


def encode_indices(indices: np.ndarray, n: int) -> str:
    """Row indices as a compact string: a bit per transition, packed, zlib-compressed, base64."""
    mask = np.zeros(n, bool)
    mask[indices] = True
    return base64.b64encode(zlib.compress(np.packbits(mask).tobytes(), 9)).decode("ascii")


def decode_indices(record: dict[str, Any]) -> np.ndarray:
    """The sorted corrupted row indices of a corruption record."""
    try:
        packed = np.frombuffer(zlib.decompress(base64.b64decode(record["indices"])), np.uint8)
        mask = np.unpackbits(packed, count=int(record["transitions"])).astype(bool)
    except (KeyError, ValueError, TypeError, zlib.error) as exc:
        raise ValorlError(f"damaged corruption record: cannot decode its indices ({exc})") from None
    return np.flatnonzero(mask).astype(np.int64)


def save_corrupted(
    corrupted: Corrupted, dataset_id: str, path: str | os.PathLike | None = None
) -> Path:
    """Write the corrupted dataset as a Minari dataset (atomically, never over an existing one),
    with its record in the metadata under "valorl_corruption"; returns its directory."""
    record = corrupted.record
    return save_minari(
        corrupted.dataset,
        dataset_id,
        path,
        algorithm_name="valorl corrupt",
        description=(
            f"{record['source']['name']} with {record['corrupted']} of {record['transitions']} "
            f"transitions' {record['field']} corrupted ({record['mode']}, scale {record['scale']})"
        ),
        extra_metadata={METADATA_KEY: record},
    )


def read_corruption(source: str | os.PathLike) -> dict[str, Any] | None:
    """The corruption record of a Minari dataset (an id or a directory), or None if it has none."""
    path = Path(source)
    if not path.is_dir():
        path = minari_root() / str(source)
    data = path / "data" if (path / "data").is_dir() else path
    try:
        metadata = json.loads((data / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValorlError(f"cannot read the metadata of dataset {str(source)!r}: {exc}") from None
    return metadata.get(METADATA_KEY)


__all__ = [
    "KINDS",
    "METADATA_KEY",
    "MODES",
    "Attack",
    "Corrupted",
    "adversarial_values",
    "check_settings",
    "corrupt",
    "decode_indices",
    "encode_indices",
    "random_values",
    "read_corruption",
    "save_corrupted",
    "select_indices",
]
