"""The plan of a run: agent, data, schedule and seeds, as `config.json` records them.

`RunPlan.config()` is what a run directory stores, and `RunPlan.from_config` rebuilds the plan
from that file alone, so everything that loads a run later (resume, `load_policy`, diagnostics,
`valorl eval`) builds the agent, its `Spec` and the shapes of its state in one way. The data
record names the data with a content fingerprint, so a run never resumes on changed data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from valorl._version import __version__
from valorl.agents import Agent, Spec, agent_class
from valorl.config import from_dict, to_dict
from valorl.data import replay
from valorl.data.dataset import Dataset, DatasetInfo
from valorl.data.goals import GoalSampling
from valorl.data.transforms import Normalizer
from valorl.envs.gridworlds import GridWorld
from valorl.envs.gymnax_envs import GymnaxEnv, default_sticky_actions, is_jax_env, make_jax_env
from valorl.errors import ValorlError
from valorl.training.compiled import initial_carry
from valorl.training.fused import init_seeds, seed_keys
from valorl.training.schedule import Schedule


@dataclasses.dataclass(frozen=True)
class Interaction:
    """The environment phase of an online, hybrid or offline-to-online run (see online.py)."""

    mode: str
    utd: float
    """Gradient steps (batches) per environment step (whole numbers stay ints in configs)."""
    start_steps: int
    env_steps_per_call: int
    buffer_size: int
    offline_ratio: float | str | None
    offline_ratio_schedule: str
    num_envs: int = 1
    """Parallel environments per seed (JAX environments in the compiled loop)."""
    host_loop: bool = False
    """Step a JAX environment from Python between compiled calls, as a Gymnasium one is
    (for comparing the two loops), instead of inside the compiled loop."""


INTERACTION_DEFAULTS = {"num_envs": 1, "host_loop": False}
"""Interaction settings config.json records only when they differ from these, so the configs
(and default run paths) of runs that predate them stay as they were."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    agent: Agent
    schedule: Schedule
    seeds: tuple[int, ...]
    data: dict[str, Any]
    """The data record: name, source, fingerprint, size, environment, reference returns."""
    obs_shape: tuple[int, ...]
    action_dim: int
    """Numbers per continuous action; 0 for discrete actions."""
    eval_episodes: int
    interaction: Interaction | None = None
    """None for an offline run."""
    num_actions: int | None = None
    """Size of a discrete action space; None for continuous actions."""
    goal_dim: int = 0
    """Goal features at the end of each observation (goal-conditioned runs); 0 without."""

    @property
    def mode(self) -> str:
        return "offline" if self.interaction is None else self.interaction.mode

    @property
    def updates(self) -> int:
        """Agent updates over the whole run (for learning-rate schedules)."""
        bpu = self.agent.batches_per_update
        if self.interaction is None:
            return self.schedule.offline_steps // bpu
        learning = self.schedule.online_steps - self.interaction.start_steps
        online = round(learning * self.interaction.utd)
        return max(1, (self.schedule.offline_steps + online) // bpu)

    @property
    def goals(self) -> GoalSampling | None:
        """How a goal-conditioned run relabels goals (`valorl.data.goals`); None otherwise."""
        goals = self.data.get("goals")
        return None if goals is None else GoalSampling(**goals)

    @property
    def jax_env(self) -> GymnaxEnv | GridWorld | None:
        """The run's JAX environment (with its recorded sticky actions), if it names one."""
        env_id = self.data.get("env_id")
        if not is_jax_env(env_id):
            return None
        return make_jax_env(env_id, self.data.get("sticky_actions"))

    @property
    def compiled(self) -> bool:
        """The environment phase runs inside the compiled loop (a JAX environment)."""
        i = self.interaction
        return i is not None and not i.host_loop and self.jax_env is not None

    @property
    def updates_per_iteration(self) -> int:
        """Agent updates after each K = env_steps_per_call steps of the num_envs environments
        of a seed: K·num_envs·utd gradient steps (batches)."""
        i = self.interaction
        batches = round(i.env_steps_per_call * i.num_envs * i.utd)
        return batches // self.agent.batches_per_update

    @property
    def spec(self) -> Spec:
        return Spec(
            obs_shape=self.obs_shape,
            action_dim=self.action_dim,
            total_updates=self.updates,
            num_actions=self.num_actions,
            goal_dim=self.goal_dim,
        )

    @property
    def info(self) -> DatasetInfo:
        """What the run recorded about its data: name, environment and reference returns."""
        d = self.data
        return DatasetInfo(
            name=d["name"],
            source=d["source"],
            env_id=d["env_id"],
            env_spec_json=d.get("env_spec_json"),
            ref_min_score=d["ref_min_score"],
            ref_max_score=d["ref_max_score"],
        )

    # ---- to and from config.json ----------------------------------------------------------

    def config(self) -> dict[str, Any]:
        s = self.schedule
        checkpoints = {} if s.checkpoint_every is None else {"checkpoint_every": s.checkpoint_every}
        if self.interaction is None:
            schedule = {"steps": s.offline_steps, "log_every": s.log_every}
            schedule |= {"eval_every": s.eval_every, **checkpoints}
        else:
            schedule = {
                "mode": self.interaction.mode,
                "offline_steps": s.offline_steps,
                "online_steps": s.online_steps,
                **{
                    k: v
                    for k, v in dataclasses.asdict(self.interaction).items()
                    if k != "mode"
                    and not (k in INTERACTION_DEFAULTS and v == INTERACTION_DEFAULTS[k])
                },
                "log_every": s.log_every,
                "eval_every": s.eval_every,
                **checkpoints,
                "steps": s.steps,
                "updates": self.updates,
            }
        return {
            "valorl_version": __version__,
            "agent": {"name": self.agent.name, "hyperparameters": to_dict(self.agent)},
            "data": self.data,
            "spec": {
                "obs_shape": list(self.obs_shape),
                "action_dim": self.action_dim,
                # only when discrete, so continuous runs' configs (and run paths) stay as they were
                **({} if self.num_actions is None else {"num_actions": self.num_actions}),
                **({"goal_dim": self.goal_dim} if self.goal_dim else {}),
            },
            "schedule": schedule | {"eval_episodes": self.eval_episodes},
            "seeds": list(self.seeds),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RunPlan:
        s = dict(config["schedule"])
        agent = from_dict(agent_class(config["agent"]["name"]), config["agent"]["hyperparameters"])
        interaction = None
        if "online_steps" in s:
            fields = [f.name for f in dataclasses.fields(Interaction)]
            interaction = Interaction(**{k: s[k] for k in fields if k in s})
        return cls(
            agent=agent,
            schedule=Schedule(
                offline_steps=s["offline_steps"] if interaction else s["steps"],
                online_steps=s["online_steps"] if interaction else 0,
                log_every=s["log_every"],
                eval_every=s["eval_every"],
                checkpoint_every=s.get("checkpoint_every"),
            ),
            seeds=tuple(config["seeds"]),
            data=config["data"],
            obs_shape=tuple(config["spec"]["obs_shape"]),
            action_dim=config["spec"]["action_dim"],
            eval_episodes=s.get("eval_episodes", 0),
            interaction=interaction,
            num_actions=config["spec"].get("num_actions"),
            goal_dim=config["spec"].get("goal_dim", 0),
        )

    # ---- the shapes of what a run holds ---------------------------------------------------

    def templates(self) -> tuple[Any, Normalizer]:
        """Shapes of the seed-stacked agent state and of the normalizer, for restoring."""
        return state_templates(self.agent, self.spec, list(self.seeds))

    def empty_buffers(self) -> Any:
        """The seed-stacked empty replay buffers of the environment phase (call under
        `jax.jit`, or `jax.eval_shape` for their shapes without allocating them)."""
        env = self.jax_env
        rows = replay.init(
            self.interaction.buffer_size,
            self.obs_shape,
            self.action_dim,
            returns_to_go=self.agent.needs_returns_to_go,
            discrete=self.num_actions is not None,
            obs_dtype=jnp.float32 if env is None else env.obs_dtype,
        )
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(self.seeds), *x.shape)), rows)

    def empty_model_buffers(self) -> Any:
        """The seed-stacked empty model buffers of a model-based agent (call under `jax.jit`,
        or `jax.eval_shape`); None for other agents."""
        if not self.agent.model_based:
            return None
        rows = replay.init(self.agent.rollouts.capacity, self.obs_shape, self.action_dim)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(self.seeds), *x.shape)), rows)

    def initial_env_carry(self) -> Any:
        """The compiled loop's seed-stacked environments, freshly reset (call under `jax.jit`,
        or `jax.eval_shape` for their shapes); None for other runs."""
        if not self.compiled:
            return None
        return initial_carry(self.jax_env, self.seeds, self.interaction.num_envs)


def with_current_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the agent's hyperparameters rebuilt by this version of valorl:
    hyperparameters added since it was written appear at their defaults, so a run that predates
    them resumes (configs that cannot be rebuilt are returned as they are)."""
    agent = config.get("agent", {})
    try:
        cls = agent_class(agent["name"])
        hyperparameters = to_dict(from_dict(cls, agent["hyperparameters"]))
    except (KeyError, TypeError, ValorlError):
        return config
    return config | {"agent": agent | {"hyperparameters": hyperparameters}}


def state_templates(agent: Agent, spec: Spec, seeds: list[int]) -> tuple[Any, Normalizer]:
    """Shapes of the seed-stacked state of `agent` and of a normalizer (nothing computed)."""
    init_keys, _, _ = seed_keys(seeds)
    states = jax.eval_shape(init_seeds(agent, spec), init_keys)
    return states, Normalizer.identity(spec.obs_shape, spec.action_dim)


def data_record(
    dataset: Dataset,
    env_id: str | None,
    holdout: float = 0.0,
    goals: GoalSampling | None = None,
    init_from: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The data record of a run on `dataset` (all of it, before `holdout` episodes are set
    aside), with relabelled `goals` in a goal-conditioned run and the run it starts from
    (`init_from`) when fine-tuning."""
    info = dataset.info
    record = {
        "name": info.name,
        "source": info.source,
        "fingerprint": dataset.fingerprint(),
        "transitions": len(dataset),
        "env_id": env_id,
        "env_spec_json": info.env_spec_json if env_id == info.env_id else None,
        "ref_min_score": info.ref_min_score,
        "ref_max_score": info.ref_max_score,
    }
    if holdout:  # only when used, so configs of runs without a split stay as they were
        record["holdout"] = holdout
    if goals is not None:
        record["goals"] = dataclasses.asdict(goals)
    if init_from is not None:
        record["init_from"] = str(init_from)
    if is_jax_env(env_id):  # evaluate with the sticky actions the data was collected with
        kwargs = json.loads(record["env_spec_json"] or "{}").get("kwargs", {})
        record["sticky_actions"] = kwargs.get("sticky_actions", default_sticky_actions(env_id))
    return record


def environment_record(env_id: str | None) -> dict[str, Any]:
    """The data record of a run without a dataset: it names the environment only."""
    return {
        "name": env_id or "",
        "source": "",
        "fingerprint": None,
        "transitions": 0,
        "env_id": env_id,
        "env_spec_json": None,
        "ref_min_score": None,
        "ref_max_score": None,
    }


def default_run_path(config: dict[str, Any], root: str | Path = "runs") -> Path:
    """`runs/<agent>-<data>-<hash>`: the same command maps to the same directory (so re-running
    it resumes), and any change of hyperparameters, data or schedule to a new one."""
    identity = {k: config[k] for k in ("agent", "data", "schedule", "seeds")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    name = config["data"]["name"].replace("/", "_") or "data"
    return Path(root) / f"{config['agent']['name']}-{name}-{digest}"
