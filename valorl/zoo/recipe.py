"""Dataset recipes: how each zoo dataset is made, read from the TOML files in `recipes/`.

One file per environment holds its reference returns, the behaviour policies (policy files in
`policies/`, with where they came from) and its datasets:

    env = "Hopper-v5"
    [reference]                 # normalised score: 0 = random, 100 = expert
    random = -18.3
    expert = 3120.5
    [training]                  # how the behaviour policies were trained
    command = "valorl train sac --env Hopper-v5 ..."
    [policies.expert]
    file = "hopper-sac-100000.npz"
    step = 100000
    return = 3120.5
    [datasets.hopper-medium-v0]
    behaviours = ["medium:noise=0.1"]  # collect specs; a policy name stands for its file
    steps = 1_000_000
    seed = 0
    sha256 = "…"                # content checksum, verified after every build
    [datasets.hopper-medium-expert-v0]
    concat = ["hopper-medium-v0", "hopper-expert-v0"]
    sha256 = "…"
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path
from typing import Any

from valorl.errors import ValorlError

RECIPES = Path(__file__).parent / "recipes"
POLICIES = Path(__file__).parent / "policies"
NAMESPACE = "valorl"
"""Minari namespace of zoo datasets: `hopper-medium-v0` lives at `valorl/hopper-medium-v0`."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One dataset: collected from behaviours, or the concatenation of other recipes' data."""

    name: str
    env_id: str
    ref_random: float
    ref_expert: float
    steps: int
    """Transitions (the sum of the parts for a concatenation)."""
    seed: int
    behaviours: tuple[str, ...]
    """`valorl collect` specs with policy names replaced by their files' paths."""
    concat: tuple[str, ...]
    sha256: str | None
    """Content checksum of a correct build (`valorl.data.checksum`); None until recorded."""
    description: str
    family: str
    """The recipe file's stem (e.g. `hopper`): its environment's group of datasets."""

    @property
    def dataset_id(self) -> str:
        return f"{NAMESPACE}/{self.name}"

    def provenance(self) -> dict[str, Any]:
        """What the built dataset records about its recipe (in its Minari metadata)."""
        return {
            "recipe": self.name,
            "recipe_file": f"valorl/zoo/recipes/{self.family}.toml",
            "behaviours": [_short(b) for b in self.behaviours],
            "concat": list(self.concat),
            "steps": self.steps,
            "seed": self.seed,
            "sha256": self.sha256,
            "policies": family_policies(self.family),
            "training": family_training(self.family),
        }


def _short(spec: str) -> str:
    """A behaviour spec with its policy file named relative to the zoo's policies folder."""
    kind, sep, options = spec.partition(":")
    path = Path(kind)
    if path.is_absolute() and path.parent == POLICIES:
        kind = f"policies/{path.name}"
    return kind + sep + options


@functools.cache
def _families() -> dict[str, dict[str, Any]]:
    families = {}
    for path in sorted(RECIPES.glob("*.toml")):
        try:
            families[path.stem] = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValorlError(f"recipe file {path} is not valid TOML: {exc}") from None
    return families


def family_policies(family: str) -> dict[str, Any]:
    return dict(_families()[family].get("policies", {}))


def family_training(family: str) -> dict[str, Any]:
    return dict(_families()[family].get("training", {}))


@functools.cache
def recipes() -> dict[str, Recipe]:
    """Every recipe by name, in file order."""
    found: dict[str, Recipe] = {}
    for family, table in _families().items():
        where = f"recipes/{family}.toml"
        try:
            env_id, reference = table["env"], table["reference"]
            policies = table.get("policies", {})
            for name, entry in table.get("datasets", {}).items():
                found[name] = _recipe(name, family, env_id, reference, policies, entry, found)
        except KeyError as exc:
            raise ValorlError(f"{where}: missing key {exc}") from None
    return found


def _recipe(
    name: str,
    family: str,
    env_id: str,
    reference: dict[str, Any],
    policies: dict[str, Any],
    entry: dict[str, Any],
    earlier: dict[str, Recipe],
) -> Recipe:
    concat = tuple(entry.get("concat", ()))
    for part in concat:
        if part not in earlier:
            raise ValorlError(f"recipe {name}: part {part!r} is not a recipe defined before it")
    behaviours = tuple(_resolve(spec, policies, name) for spec in entry.get("behaviours", ()))
    if bool(concat) == bool(behaviours):
        raise ValorlError(f"recipe {name}: give either behaviours or concat")
    return Recipe(
        name=name,
        env_id=env_id,
        ref_random=float(reference["random"]),
        ref_expert=float(reference["expert"]),
        steps=sum(earlier[p].steps for p in concat) if concat else int(entry["steps"]),
        seed=int(entry.get("seed", 0)),
        behaviours=behaviours,
        concat=concat,
        sha256=entry.get("sha256"),
        description=str(entry.get("description", "")),
        family=family,
    )


def _resolve(spec: str, policies: dict[str, Any], recipe: str) -> str:
    """A behaviour spec with a policy name (`medium:noise=0.1`) turned into its file's path."""
    kind, sep, options = spec.partition(":")
    if kind in policies:
        kind = str(POLICIES / policies[kind]["file"])
    elif not (kind == "random" or kind.endswith(".npz")):
        raise ValorlError(f"recipe {recipe}: behaviour {spec!r} names no policy of its file")
    return kind + sep + options


def find(name: str) -> Recipe | None:
    """The recipe called `name` (`hopper-medium-v0` or `valorl/hopper-medium-v0`), if any."""
    return recipes().get(name.removeprefix(f"{NAMESPACE}/"))


def get(name: str) -> Recipe:
    """The recipe called `name`; ValorlError listing the recipes if there is none."""
    recipe = find(name)
    if recipe is None:
        raise ValorlError(
            f"no dataset recipe called {name!r}; see `valorl datasets list` "
            f"(recipes: {', '.join(recipes())})"
        )
    return recipe
