"""A sweep spec (a TOML file) and its expansion into groups of runs.

    agents = ["iql", "td3_bc"]                 # registered agent names
    datasets = ["valorl/pendulum-mixed-v0"]    # Minari ids or paths (every mode but online)
    envs = ["Pendulum-v1"]                     # Gymnasium ids (mode online)
    modes = ["offline"]                        # offline | online | hybrid | offline-to-online
    seeds = 5                                  # seeds per group, trained together
    seed = 0                                   # the first seed

    [settings]            # fixed `valorl train` flags, for every agent that has the flag
    steps = 20000
    hidden_dims = [64, 64]
    discount = 0.95

    [grid]                # every combination of these values, for every agent with the flag
    batch_size = [256, 512]

    [agent.iql]           # flags for one agent only: fixed values, and a grid of its own
    temperature = 3.0
    grid = { expectile = [0.7, 0.9] }

Keys are the flags of `valorl train AGENT` with underscores (`hidden_dims` is
`--hidden-dims`); see `valorl train AGENT --help`. A key that no agent of the sweep takes is an
error, as is a value its flag would refuse, so a typo fails before anything trains.

Each agent x dataset-or-env x mode x grid point is one *group*: a single `valorl train`
command line whose seeds train together in one vmapped process. Its run directory is named
after what varies (`iql-pendulum-mixed-v0-expectile=0.9`), so re-running the sweep finds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any

from valorl.agents import agent_class
from valorl.errors import ValorlError
from valorl.launch.args import parse_overrides
from valorl.launch.train import train_parser

MODES = ("offline", "online", "hybrid", "offline-to-online")
TOP_LEVEL = ("agents", "datasets", "envs", "modes", "seeds", "seed", "settings", "grid", "agent")
SET_BY_SWEEP = {
    "dataset": "list datasets in `datasets`",
    "mode": "list modes in `modes`",
    "seeds": "set `seeds` at the top level",
    "seed": "set `seed` at the top level",
    "out": "the sweep names each run directory (see --out of `valorl sweep`)",
    "quiet": "the sweep shows one progress display",
}
MAX_NAME = 120


@dataclasses.dataclass(frozen=True)
class Group:
    """One `valorl train` command line of a sweep: an agent on one dataset or environment, in
    one mode, at one grid point, with all its seeds."""

    name: str
    """Run directory name, unique within the sweep."""
    agent: str
    source: str
    """The dataset (or, online, the environment)."""
    mode: str
    point: dict[str, Any]
    """The grid values of this group (the flags that vary across the sweep)."""
    seeds: list[int]
    argv: tuple[str, ...]
    """`valorl train AGENT` arguments, without --out."""
    total_steps: int
    """Steps per seed the run will log (gradient steps offline, environment steps online,
    both for offline-to-online), for progress."""
    offline_steps: int
    """Gradient steps before the first environment step (offline-to-online), else 0."""

    def train_argv(self, run_dir: Path) -> list[str]:
        """The arguments of `valorl train AGENT` for this group, writing to `run_dir`."""
        return [*self.argv, "--out", str(run_dir), "--quiet"]

    def command(self, run_dir: Path) -> list[str]:
        """The `valorl train` command line of this group (without the `valorl`)."""
        return ["train", self.agent, *self.train_argv(run_dir)]


def load_spec(path: str | Path) -> dict[str, Any]:
    """The spec in the TOML file `path`."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValorlError(f"sweep spec {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValorlError(f"{path} is not valid TOML: {exc}") from None


def expand(spec: dict[str, Any]) -> list[Group]:
    """Every group of the spec, checked: each group's command line parses and its
    hyperparameters convert, or this raises a ValorlError naming the problem."""
    unknown = sorted(set(spec) - set(TOP_LEVEL))
    if unknown:
        raise ValorlError(
            f"unknown sweep key {unknown[0]!r}; the top level takes {', '.join(TOP_LEVEL)} "
            "(hyperparameters go in [settings] or [grid])"
        )
    agents = _names(spec, "agents", required=True)
    for name in agents:
        agent_class(name)  # an unknown name fails here, listing the registered ones
    modes = _names(spec, "modes", default=["offline"])
    for mode in modes:
        if mode not in MODES:
            raise ValorlError(f"unknown mode {mode!r} in `modes`; choose from {', '.join(MODES)}")
    datasets = _names(spec, "datasets", required=any(m != "online" for m in modes))
    envs = _names(spec, "envs", required="online" in modes)
    seeds, first = _integer(spec, "seeds", 1, minimum=1), _integer(spec, "seed", 0, minimum=0)
    settings, grid = _table(spec, "settings"), _table(spec, "grid")
    per_agent = _table(spec, "agent")
    for name in per_agent:
        if name not in agents:
            listed = ", ".join(agents)
            raise ValorlError(f"[agent.{name}] names an agent not in `agents` ({listed})")
    for key, values in grid.items():
        _check_grid_values(f"[grid] {key}", values)
    parsers = {name: train_parser(name) for name in agents}
    flags = {name: _flags(parser) for name, parser in parsers.items()}
    for key in [*settings, *grid]:
        _check_key(key, "")
        if not any(key in flags[name] for name in agents):
            raise ValorlError(
                f"{key!r} is not a flag of `valorl train` for any of {', '.join(agents)} "
                "(see `valorl train AGENT --help`)"
            )

    groups = []
    for name in agents:
        own = dict(_table(per_agent, name))
        own_grid = _table(own, "grid")
        own.pop("grid", None)
        for key in [*own, *own_grid]:
            _check_key(key, f"[agent.{name}] ")
            if key not in flags[name]:
                raise ValorlError(f"[agent.{name}] {key!r} is not a flag of `valorl train {name}`")
        for key, values in own_grid.items():
            _check_grid_values(f"[agent.{name}.grid] {key}", values)
        fixed = {k: v for k, v in settings.items() if k in flags[name]} | own
        axes = {k: v for k, v in grid.items() if k in flags[name]} | own_grid
        both = sorted(set(fixed) & set(axes))
        if both:
            raise ValorlError(f"{both[0]!r} is both a fixed setting and a grid axis for {name}")
        for mode in modes:
            for source in envs if mode == "online" else datasets:
                for values in itertools.product(*axes.values()):
                    point = dict(zip(axes, values, strict=True))
                    group = _group(parsers[name], source, mode, fixed | point, point, seeds, first)
                    groups.append(group)
    return _unique_names(groups)


def _group(parser, source, mode, flags, point, seeds, first) -> Group:
    """The group of `valorl train AGENT` (`parser`) with these flags, its values checked."""
    agent = parser.get_default("agent")
    where = "--env" if mode == "online" else "--dataset"
    # a dataset path is made absolute: a Ray worker need not share this working directory
    data = str(Path(source).resolve()) if mode != "online" and Path(source).exists() else source
    argv = [where, data, "--mode", mode, "--seeds", str(seeds), "--seed", str(first)]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", _flag_value(value)]
    try:
        args = parser.parse_args(argv)
        parse_overrides(args, args.agent_cls)  # converts (and so checks) every value
    except ValorlError as exc:
        raise ValorlError(f"{agent} on {source} ({mode}): {exc}") from None
    offline_steps = (args.offline_steps or 0) if mode == "offline-to-online" else 0
    name = "-".join(
        [agent, _short(source), *([] if mode == "offline" else [mode])]
        + [f"{k}={_flag_value(v)}" for k, v in point.items()]
    )
    return Group(
        name=_safe(name),
        agent=agent,
        source=source,
        mode=mode,
        point=point,
        seeds=list(range(first, first + seeds)),
        argv=tuple(argv),
        total_steps=_online_steps(args) + offline_steps,
        offline_steps=offline_steps,
    )


def _online_steps(args) -> int:
    """Gradient steps of an offline run, environment steps of the other modes (as train)."""
    if args.mode == "offline":
        return 1_000_000 if args.steps is None else args.steps
    online = args.online_steps if args.online_steps is not None else args.steps
    return 1_000_000 if online is None else online


def _unique_names(groups: list[Group]) -> list[Group]:
    """Two sources with the same short name (a/x and b/x) keep their full names; a name too
    long for a directory ends in a hash of itself instead of the grid values."""
    counts: dict[str, int] = {}
    for g in groups:
        counts[g.name] = counts.get(g.name, 0) + 1
    renamed = []
    for g in groups:
        name = g.name
        if counts[name] > 1:
            name = _safe(name.replace(_short(g.source), g.source, 1))
        if len(name) > MAX_NAME:
            digest = hashlib.sha256(name.encode()).hexdigest()[:10]
            name = f"{name[: MAX_NAME - 11]}-{digest}"
        renamed.append(dataclasses.replace(g, name=name))
    seen: set[str] = set()
    for g in renamed:
        if g.name in seen:
            raise ValorlError(f"two groups of the sweep would share the run directory {g.name}")
        seen.add(g.name)
    return renamed


def _names(spec, key, required=False, default=None) -> list[str]:
    value = spec.get(key, default)
    if value is None:
        if required:
            raise ValorlError(f"the sweep spec needs `{key}` (a list)")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValorlError(f"`{key}` must be a non-empty list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise ValorlError(f"`{key}` lists a value twice: {value}")
    return value


def _integer(spec, key, default, minimum) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValorlError(f"`{key}` must be an integer of at least {minimum}, got {value!r}")
    return value


def _table(spec, key) -> dict[str, Any]:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ValorlError(f"`{key}` must be a table ([{key}]), got {value!r}")
    return value


def _check_key(key: str, where: str) -> None:
    if key in SET_BY_SWEEP:
        raise ValorlError(f"{where}{key!r} cannot be set per run: {SET_BY_SWEEP[key]}")


def _check_grid_values(where: str, values: Any) -> None:
    if not isinstance(values, list) or not values:
        raise ValorlError(f"{where} must be a non-empty list of values, got {values!r}")


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags a `valorl train AGENT` parser takes, with underscores (`hidden_dims`)."""
    return {
        option[2:].replace("-", "_")
        for option in parser._option_string_actions
        if option.startswith("--")
    }


def _flag_value(value: Any) -> str:
    """A TOML value as the command line spells it: true/false, 64,64."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_flag_value(v) for v in value)
    if isinstance(value, dict):
        raise ValorlError(f"a flag value cannot be a table, got {value!r}")
    return str(value)


def _short(source: str) -> str:
    return source.rstrip("/").split("/")[-1]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
