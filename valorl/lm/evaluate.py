"""Accuracy of a trained policy under a decoding method, every seed at once, with its cost.

A policy run's seed s is decoded with the value run's seed s (the value model learned about
that very policy). Exact match on the run's in-distribution test problems or its
out-of-distribution ones; beside the accuracy, what the method spent per problem: tokens the
policy sampled and candidates the value model (or the verifier) scored, so that methods are
compared at stated compute.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valorl.errors import ValorlError
from valorl.lm import decoding
from valorl.lm.objectives import exact_match
from valorl.lm.sampling import generate
from valorl.lm.train import (
    finished_config,
    load_params,
    policy_model,
    require_policy,
    source_settings,
    task_data,
)

METHODS = ("greedy", "sample", "vas", "step-q", "best-of-n-value", "best-of-n-verifier")
VALUE_METHODS = ("vas", "step-q", "best-of-n-value")


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How to decode. `top_k`: VAS's candidates per token (Han et al. 2024 use 20, Transfer-Q
    10; the character vocabulary here has 16 tokens); `n`: best-of-n's answers, or step-level
    Q's continuations per step; `step_tokens`: a step's length for step-level Q."""

    method: str
    temperature: float = 1.0
    beta: float = 3.0
    top_k: int = 10
    n: int = 8
    step_tokens: int = 2

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValorlError(f"unknown decoding {self.method!r}; choose one of {METHODS}")


@dataclasses.dataclass
class DecodeResult:
    seeds: list[int]
    accuracy: np.ndarray  # (seeds,) exact-match rate
    policy_tokens: np.ndarray  # (seeds,) tokens sampled per problem
    scored: np.ndarray  # (seeds,) candidates scored per problem (value model or verifier)
    seconds: float  # the decoding itself, compiled beforehand: every seed and problem
    problems: int  # problems decoded per seed

    @property
    def tokens_per_second(self) -> float:
        """Policy tokens sampled per second, all seeds and problems together."""
        return float(self.policy_tokens.sum() * self.problems / self.seconds)


def decode_accuracy(
    policy_run: str | Path,
    method: Decoding,
    value_run: str | Path | None = None,
    split: str = "test",
    key: int = 0,
) -> DecodeResult:
    if split not in ("test", "ood"):
        raise ValorlError(f"split must be test or ood, got {split!r}")
    if (value_run is not None) != (method.method in VALUE_METHODS):
        raise ValorlError(
            f"{method.method} needs --value RUN (a value model of the policy)"
            if value_run is None
            else f"{method.method} uses no value model; leave out --value"
        )
    require_policy(policy_run)
    problems, architecture = source_settings(policy_run)
    seeds = finished_config(policy_run)["seeds"]
    values = None
    if value_run is not None:
        value_config = finished_config(value_run)
        if value_config["schedule"]["mode"] != "value":
            raise ValorlError(f"{value_run} is not a value run (`valorl lm value`)")
        if Path(value_config["init_from"]).resolve() != Path(policy_run).resolve():
            raise ValorlError(f"{value_run} learned the values of {value_config['init_from']}")
        seeds = [s for s in seeds if s in value_config["seeds"]]
        values = load_params(value_run, tuple(seeds))
    data = task_data(problems)
    arrays = data.test if split == "test" else data.ood
    model = policy_model(architecture, problems)
    params = load_params(policy_run, tuple(seeds))
    value_model = model.clone(outputs=1)
    length = arrays.targets.shape[1]
    m = method

    def one_seed(params, value_params, key):
        prompts, targets = arrays.prompts, arrays.targets
        scored = jnp.zeros(())
        if m.method in ("greedy", "sample"):
            temperature = 0.0 if m.method == "greedy" else m.temperature
            out = generate(model, params, prompts, key, length, temperature)
            sampled = out.mask.sum(1)
        elif m.method == "vas":
            out = decoding.value_guided_generate(
                model, params, value_model, value_params, prompts, key, length, m.beta,
                m.top_k, m.temperature,
            )  # fmt: skip
            sampled = out.mask.sum(1)
            scored = sampled * min(m.top_k, model.vocab_size)
        elif m.method == "step-q":
            out = decoding.step_level_q(
                model, params, value_model, value_params, prompts, key, m.n, m.step_tokens,
                length, m.temperature,
            )  # fmt: skip
            steps = jnp.ceil(out.mask.sum(1) / m.step_tokens)
            sampled = steps * m.n * m.step_tokens
            scored = steps * m.n
        else:
            candidates = decoding.sample_candidates(
                model, params, prompts, key, m.n, length, m.temperature
            )
            repeated = jnp.repeat(targets, m.n, axis=0)
            if m.method == "best-of-n-verifier":
                scores = exact_match(candidates.tokens, repeated)
            else:
                scores = decoding.final_values(
                    value_model, value_params, jnp.repeat(prompts, m.n, axis=0),
                    candidates.tokens, candidates.mask,
                )  # fmt: skip
            out = decoding.best_of_n(candidates, scores, m.n)
            sampled = candidates.mask.sum(1).reshape(-1, m.n).sum(1)
            scored = jnp.full(prompts.shape[0], m.n)
        correct = exact_match(out.tokens, targets)
        return correct.mean(), jnp.mean(sampled), jnp.mean(scored)

    keys = jax.random.split(jax.random.key(key), len(seeds))
    value_axis: Any = None if values is None else 0
    decode = jax.jit(jax.vmap(one_seed, in_axes=(0, value_axis, 0)))
    compiled = decode.lower(params, values, keys).compile()
    start = time.perf_counter()
    accuracy, sampled, scored = jax.block_until_ready(compiled(params, values, keys))
    seconds = time.perf_counter() - start
    return DecodeResult(
        list(seeds),
        np.asarray(accuracy),
        np.asarray(sampled),
        np.asarray(scored),
        seconds,
        arrays.prompts.shape[0],
    )
