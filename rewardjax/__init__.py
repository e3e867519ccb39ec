"""rewardjax: reward-centric post-training of language models in JAX.

Importing the package is cheap: submodules load on first attribute access, so
`import rewardjax.losses` needs only jax and chex.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("advantages", "checkpoint", "data", "evaluation", "guards", "kernels", "losses",
               "machine", "metrics", "models", "notebook", "optim", "plots", "pretrained",
               "recipes", "rewards", "rollouts", "sharding", "train", "train_state", "types",
               "update", "validation")


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"rewardjax.{name}")
  raise AttributeError(f"module 'rewardjax' has no attribute {name!r}")
