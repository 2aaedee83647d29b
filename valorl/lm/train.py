"""Language-model runs: one loop for every stage, in run directories like every valorl run.

    valorl lm pretrain  →  base model (next token over whole demonstrations, from scratch)
    valorl lm sft | rl | hpt --init-from BASE  →  a post-trained policy
    valorl lm value --init-from POLICY  →  a value model of that frozen policy (for decoding)

A run trains all its seeds at once (`vmap`), many steps per compiled call (`lax.scan`), with
the task's problems on the device; the verifier inside the step is `objectives.exact_match`.
Every `eval_every` steps each seed decodes the in-distribution test problems and the longer,
out-of-distribution ones greedily; the exact-match results go to evaluations.npz (`returns`:
test problems, 1 if solved; `normalized_scores`: the same in percent, so that `valorl report`
shows accuracy; `ood_returns`: the out-of-distribution problems). The checkpoint is valorl's
(msgpack, arrays only), so runs resume where they stopped and a finished run is left alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from valorl.data.transforms import Normalizer
from valorl.errors import ValorlError
from valorl.lm.model import DecoderLM
from valorl.lm.objectives import (
    NextToken,
    PolicyGradient,
    TaskArrays,
    ValueLearning,
    exact_match,
)
from valorl.lm.sampling import generate
from valorl.lm.tasks import Task, demonstration_tokens, get_task
from valorl.lm.tokenizer import CharTokenizer
from valorl.training import checkpoint
from valorl.training.run_dir import RunDir
from valorl.ui import progress_bar

FORMAT = "valorl-lm-run/1"
STAGES = ("pretrain", "sft", "rl", "hpt", "value")
Objective = NextToken | PolicyGradient | ValueLearning


@dataclasses.dataclass(frozen=True)
class Architecture:
    width: int = 64
    depth: int = 2
    heads: int = 4


@dataclasses.dataclass(frozen=True)
class Problems:
    """The task's problem sets: `train` training problems (prompts and demonstrations), and
    `evaluation` in-distribution test and out-of-distribution problems each, drawn by `seed`."""

    task: str = "addition"
    train: int = 20_000
    evaluation: int = 256
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class LMRun:
    """Everything a language-model run is: written to config.json, compared on resume."""

    stage: str
    objective: Objective
    problems: Problems = Problems()
    architecture: Architecture = Architecture()
    steps: int = 1000
    seeds: tuple[int, ...] = (0,)
    learning_rate: float = 1e-3
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 250
    init_from: str | None = None
    """The run this one starts from: the policy to post-train, or the frozen policy a value
    model learns about (`value`); its seeds are matched one to one."""

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValorlError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if (self.stage == "pretrain") != (self.init_from is None):
            raise ValorlError(
                "pretrain starts from scratch"
                if self.stage == "pretrain"
                else f"{self.stage} needs --init-from RUN (the policy it starts from)"
            )
        if min(self.steps, self.log_every, self.eval_every) < 1 or not self.seeds:
            raise ValorlError("steps, --log-every and --eval-every must be positive, seeds given")

    def config(self) -> dict[str, Any]:
        """config.json: in the shape `valorl report` reads (agent, data, seeds, schedule)."""
        hyperparameters = _plain(self.objective) | {
            "architecture": dataclasses.asdict(self.architecture),
            "learning_rate": self.learning_rate,
            "grad_clip": self.grad_clip,
            "starts_from": None if self.init_from is None else _stage_chain(self.init_from),
        }
        problems = dataclasses.asdict(self.problems)
        fingerprint = hashlib.sha256(json.dumps(problems, sort_keys=True).encode()).hexdigest()
        return {
            "format": FORMAT,
            "agent": {"name": f"lm-{self.stage}", "hyperparameters": hyperparameters},
            "data": {"name": self.problems.task, "fingerprint": fingerprint, **problems},
            "seeds": list(self.seeds),
            "schedule": {
                "steps": self.steps,
                "mode": self.stage,
                "log_every": self.log_every,
                "eval_every": self.eval_every,
            },
            "init_from": self.init_from,
        }


def _plain(objective: Objective) -> dict[str, Any]:
    fields = dataclasses.asdict(objective)
    return {"objective": type(objective).__name__} | fields


def _stage_chain(path: str) -> str:
    """'pretrain>sft' for a run started from an SFT run of a pre-trained base."""
    config = RunDir(path).config()
    if config.get("format") != FORMAT:
        raise ValorlError(f"{path} is not a valorl language-model run")
    chain = config["schedule"]["mode"]
    if config.get("init_from") is not None:
        chain = f"{_stage_chain(config['init_from'])}>{chain}"
    return chain


# ---- data ---------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskData:
    """The three problem sets as device arrays of one width: prompts left-padded to the
    longest prompt of any split, targets (answer, EOS, PAD) to the longest answer + 1."""

    task: Task
    train: TaskArrays
    test: TaskArrays
    ood: TaskArrays
    test_prompts: list[str]
    ood_prompts: list[str]


def widths(task: Task) -> tuple[int, int]:
    """(prompt columns, target columns) of every split of a task: the longest prompt and the
    longest answer + EOS over its in-distribution and out-of-distribution sizes."""
    sizes = [task.sizes("train"), task.sizes("ood")]
    return (
        max(task.max_prompt_length(s) for s in sizes),
        1 + max(task.max_answer_length(s) for s in sizes),
    )


def task_data(problems: Problems, tokenizer: CharTokenizer | None = None) -> TaskData:
    tokenizer = tokenizer or CharTokenizer()
    task = get_task(problems.task)
    sets = {
        "train": task.split("train", problems.train, problems.seed),
        "test": task.split("test", problems.evaluation, problems.seed),
        "ood": task.split("ood", problems.evaluation, problems.seed),
    }
    prompt_length, answer_length = widths(task)

    def arrays(problem_set) -> TaskArrays:
        tokens, _ = demonstration_tokens(tokenizer, problem_set, prompt_length, answer_length)
        tokens = jnp.asarray(tokens)
        return TaskArrays(tokens[:, :prompt_length], tokens[:, prompt_length:])

    return TaskData(
        task,
        arrays(sets["train"]),
        arrays(sets["test"]),
        arrays(sets["ood"]),
        sets["test"].prompts,
        sets["ood"].prompts,
    )


# ---- models and states --------------------------------------------------------------------


def policy_model(architecture: Architecture, problems: Problems) -> DecoderLM:
    """The policy network, its context the task's prompt and target columns (`widths`)."""
    context = sum(widths(get_task(problems.task)))
    return DecoderLM(CharTokenizer().vocab_size, context, **dataclasses.asdict(architecture))


def init_params(model: DecoderLM, key: jax.Array) -> Any:
    tokens = jnp.zeros((1, 2), jnp.int32)
    return model.init(key, tokens, tokens, tokens == 0)


def value_params_from(policy_params: Any, value_model: DecoderLM, key: jax.Array) -> Any:
    """A value model that starts as the policy (VAS starts its value model from a pre-trained
    language model, Han et al. 2024, Sec. 4.1) with a zero scalar head instead of the logits."""
    fresh = init_params(value_model, key)["params"]
    torso = {k: jax.tree.map(jnp.copy, v) for k, v in policy_params["params"].items()}
    del torso["logits"]  # copies: the frozen policy's own arrays must not be donated
    return {"params": torso | {"value": fresh["value"]}}


def _optimizer(run: LMRun) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(run.grad_clip), optax.adam(run.learning_rate))


def _train_state(run: LMRun, model: DecoderLM, params: Any) -> TrainState:
    return TrainState.create(apply_fn=model.apply, params=params, tx=_optimizer(run))


# ---- compiled work ------------------------------------------------------------------------


def compile_chunk(objective: Objective, model: DecoderLM, steps: int) -> Callable:
    """(states, keys, data, frozen) -> (states, keys, metrics averaged over the chunk), with
    `steps` steps per seed in one scan and the seeds vmapped."""

    def one_seed(state, key, data, frozen):
        def body(carry, _):
            state, key = carry
            key, step_key = jax.random.split(key)
            state, metrics = objective.step(model, state, data, frozen, step_key)
            return (state, key), metrics

        (state, key), metrics = jax.lax.scan(body, (state, key), None, length=steps)
        metrics = {k: v.mean() for k, v in metrics.items()} | {
            "train/tokens": metrics["train/tokens"].sum()
        }
        return state, key, metrics

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None, 0)), donate_argnums=(0, 1))


def greedy_correct(model: DecoderLM, params: Any, data: TaskArrays) -> jax.Array:
    """(seeds, N): 1 where each seed's greedy answer equals the target."""

    def one_seed(params):
        decoded = generate(
            model, params, data.prompts, jax.random.key(0), data.targets.shape[1], 0.0
        )
        return exact_match(decoded.tokens, data.targets)

    return jax.jit(jax.vmap(one_seed))(params)


# ---- the loop -----------------------------------------------------------------------------


def initial_states(run: LMRun, model: DecoderLM) -> tuple[TrainState, jax.Array, Any]:
    """Seed-stacked (train states, keys, frozen policy params or a placeholder) at step 0:
    fresh parameters, the source run's (post-training), or a value model started from the
    source's policy, which stays frozen beside it (value)."""
    keys = jax.vmap(jax.random.split)(jnp.stack([jax.random.key(seed) for seed in run.seeds]))
    init_keys, keys = keys[:, 0], keys[:, 1]
    frozen = jnp.zeros(len(run.seeds))  # vmapped like the states; read by value runs only
    if run.init_from is None:
        params = jax.vmap(lambda k: init_params(model, k))(init_keys)
    else:
        require_policy(run.init_from)
        params = load_params(run.init_from, run.seeds, run.architecture, run.problems)
        if run.stage == "value":
            frozen = params
            params = jax.vmap(lambda p, k: value_params_from(p, model, k))(params, init_keys)
    return jax.vmap(lambda p: _train_state(run, model, p))(params), keys, frozen


def train(run: LMRun, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) `run` into `out`; returns its path. A finished run is left alone."""
    data = task_data(run.problems)
    model = policy_model(run.architecture, run.problems)
    value_stage = run.stage == "value"
    if value_stage:
        model = model.clone(outputs=1)
    states, keys, frozen = initial_states(run, model)  # before the run exists: errors first
    run_dir = RunDir.open(out, run.config())
    if run_dir.finished:
        return run_dir.path
    step, eval_steps, eval_correct = 0, np.zeros(0, np.int64), None
    with run_dir:
        stored = run_dir.checkpoint_bytes()
        if stored is not None:
            ckpt = checkpoint.decode(stored, states, _NO_NORMALIZER, str(run_dir.path))
            step, states, keys = ckpt.step, ckpt.states, ckpt.keys
            eval_steps, eval_correct = ckpt.eval_steps, ckpt.eval_returns
            run_dir.drop_metrics_after(step)
        chunks: dict[int, Callable] = {}
        with progress_bar(progress) as bar:
            task = bar.add_task(
                f"lm {run.stage} ({len(run.seeds)} seeds)",
                total=run.steps,
                completed=step,
                rate="",
                note="",
            )
            while step < run.steps:
                n = min(_next_stop(step, run), run.steps) - step
                if n not in chunks:
                    chunks[n] = compile_chunk(run.objective, model, n)
                start = time.perf_counter()
                states, keys, metrics = chunks[n](states, keys, data.train, frozen)
                metrics = jax.device_get(metrics)
                elapsed = time.perf_counter() - start
                step += n
                tokens = float(np.sum(metrics.pop("train/tokens")))
                record = {
                    "step": step,
                    "wall_s": round(elapsed, 4),
                    "tokens_per_s": round(tokens / elapsed, 1),
                } | {k: np.asarray(v).tolist() for k, v in metrics.items()}
                run_dir.append_metrics(record)
                note = ""
                if not value_stage and (step % run.eval_every == 0 or step == run.steps):
                    correct = evaluate(model, states.params, data)
                    eval_steps = np.append(eval_steps, step)
                    eval_correct = _append(eval_correct, correct)
                    _write_evaluations(run_dir, eval_steps, eval_correct, data)
                    note = f"test {100 * correct[:, : len(data.test_prompts)].mean():.1f}%"
                bar.update(task, completed=step, rate=f"{tokens / elapsed:,.0f} tok/s", note=note)
                _save(run_dir, step, states, keys, eval_steps, eval_correct)
        run_dir.write_result(_result(run, run_dir, eval_correct, data))
    return run_dir.path


def _save(run_dir: RunDir, step: int, states, keys, eval_steps, eval_correct) -> None:
    """valorl's checkpoint: the seeds' train states and keys, and the evaluations so far as
    (seeds, rounds, test + out-of-distribution problems)."""
    if eval_correct is None:
        eval_correct = np.zeros((len(keys), 0, 0))
    ckpt = checkpoint.Checkpoint(step, states, keys, _NO_NORMALIZER, eval_steps, eval_correct)
    run_dir.write_checkpoint(checkpoint.encode(ckpt), step)


_NO_NORMALIZER = Normalizer.identity((1,), 1)
"""valorl's checkpoint stores a data normaliser; language models have none (a placeholder)."""


def _next_stop(step: int, run: LMRun) -> int:
    """The next step at which metrics are logged or the policy evaluated."""
    return min((step // every + 1) * every for every in (run.log_every, run.eval_every))


def _append(history: np.ndarray | None, correct: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct, np.float64)[:, None]
    if history is None or history.size == 0:
        return correct
    return np.concatenate([history, correct], axis=1)


def evaluate(model: DecoderLM, params: Any, data: TaskData) -> np.ndarray:
    """(seeds, test + ood problems) 0/1: greedy exact match, test problems first."""
    test = greedy_correct(model, params, data.test)
    ood = greedy_correct(model, params, data.ood)
    return np.concatenate([np.asarray(test), np.asarray(ood)], axis=1)


def _write_evaluations(run_dir: RunDir, steps, correct: np.ndarray, data: TaskData) -> None:
    split = len(data.test_prompts)
    run_dir.write_evaluations(
        steps,
        correct[..., :split],
        100.0 * correct[..., :split],
        extra={"ood_returns": correct[..., split:]},
    )


def _result(run: LMRun, run_dir: RunDir, correct: np.ndarray | None, data: TaskData) -> dict:
    result: dict[str, Any] = {"stage": run.stage, "steps": run.steps, "seeds": list(run.seeds)}
    if correct is not None:
        split = len(data.test_prompts)
        result["test_accuracy"] = correct[:, -1, :split].mean(axis=1).tolist()
        result["ood_accuracy"] = correct[:, -1, split:].mean(axis=1).tolist()
    else:
        last = run_dir.metrics()[-1]
        result |= {k: last[k] for k in last if k.startswith("value/")}
    return result


# ---- reading runs back --------------------------------------------------------------------


def finished_config(path: str | Path) -> dict[str, Any]:
    """The config of a finished language-model run; a one-line error for anything else."""
    run_dir = RunDir(path)
    config = run_dir.config()
    if config.get("format") != FORMAT:
        raise ValorlError(f"{path} is not a valorl language-model run")
    if not run_dir.finished:
        raise ValorlError(f"{path} has not finished training (resume it first)")
    return config


def require_policy(path: str | Path) -> None:
    """A one-line error unless `path` is a finished policy run (not a value run)."""
    if finished_config(path)["schedule"]["mode"] == "value":
        raise ValorlError(f"{path} is a value run; give a policy run (pretrain, sft, rl, hpt)")


def source_settings(path: str | Path) -> tuple[Problems, Architecture]:
    """The problems and architecture of a finished run, which runs started from it keep."""
    config = finished_config(path)
    problems = Problems(**{f.name: config["data"][f.name] for f in dataclasses.fields(Problems)})
    return problems, Architecture(**config["agent"]["hyperparameters"]["architecture"])


def load_params(
    path: str | Path,
    seeds: tuple[int, ...],
    architecture: Architecture | None = None,
    problems: Problems | None = None,
) -> Any:
    """The seed-stacked parameters of `seeds` from a finished run; its architecture and task
    must match (`architecture`, `problems`) when given."""
    stored_problems, stored_arch = source_settings(path)
    if architecture is not None and stored_arch != architecture:
        raise ValorlError(f"{path} has architecture {stored_arch}, this run {architecture}")
    if problems is not None and stored_problems != problems:
        raise ValorlError(f"{path} was trained on {stored_problems}, this run on {problems}")
    config = finished_config(path)
    missing = [s for s in seeds if s not in config["seeds"]]
    if missing:
        raise ValorlError(f"{path} has no seed {missing[0]} (it has {config['seeds']})")
    model = policy_model(stored_arch, stored_problems)
    if config["schedule"]["mode"] == "value":
        model = model.clone(outputs=1)
    template = jax.vmap(lambda k: init_params(model, k))(
        jax.random.split(jax.random.key(0), len(config["seeds"]))
    )
    hyper = config["agent"]["hyperparameters"]
    states = jax.vmap(lambda p: _train_state(_stub_run(hyper), model, p))(template)
    stored = RunDir(path).checkpoint_bytes()
    ckpt = checkpoint.decode(stored, states, _NO_NORMALIZER, str(path))
    rows = jnp.asarray([config["seeds"].index(s) for s in seeds])
    return jax.tree.map(lambda x: x[rows], ckpt.states.params)


def _stub_run(hyper: dict[str, Any]) -> LMRun:
    """Enough of a run to rebuild its optimiser's state structure."""
    return LMRun(
        "pretrain",
        NextToken(False),
        learning_rate=hyper["learning_rate"],
        grad_clip=hyper["grad_clip"],
    )
