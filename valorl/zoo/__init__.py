"""The dataset zoo: D4RL-style datasets rebuilt locally, bit for bit, from committed recipes.

    valorl datasets list                  every recipe: size, built or not, checksum status
    valorl datasets build hopper-medium-v0
    valorl train iql --dataset hopper-medium-v0   (builds it on first use)

`recipe.py` reads the recipes (`recipes/*.toml`), `builder.py` builds and verifies datasets, and
`policies/` holds the behaviour policies (policy files trained by valorl's SAC, with their
provenance). `reference_returns` measures an environment's reference returns. Importing the zoo
(as `import valorl` does) registers its recipe names with `load_dataset`.
"""

from valorl.data.checksum import checksum, content_checksum
from valorl.data.sources import register_dataset_resolver
from valorl.zoo.builder import build, dataset_path, resolve, status, verify
from valorl.zoo.recipe import Recipe, find, get, recipes
from valorl.zoo.references import reference_returns

register_dataset_resolver(resolve)

__all__ = [
    "Recipe",
    "build",
    "checksum",
    "content_checksum",
    "dataset_path",
    "find",
    "get",
    "recipes",
    "reference_returns",
    "resolve",
    "status",
    "verify",
]
