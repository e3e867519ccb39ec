"""Evaluates a run: `python launch/eval.py --config=configs/spark.py --workdir=/tmp/spark`.

Restores the newest checkpoint in --workdir (same --config as the training run), or, when the
workdir holds none, evaluates `--config.model.checkpoint` as it is (e.g. an HF instruct model
before any training). Prints the held-out task accuracy and the recipe's metrics; for SPARK:
judge accuracy on held-out rollouts, reflection fix rate, test-time self-reflection (answer,
self-judge, revise up to max_round) and best-of-N by the model's own judge score. All logic is
library code (`rewardjax.train.evaluate`, `rewardjax.evaluation.self_reflection`).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/spark.py", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory to evaluate (its newest "
                               "checkpoint); empty: evaluate --config.model.checkpoint.")


def main(argv):
  del argv
  import jax  # noqa: PLC0415 (after flag parsing, so --help is fast)
  from flax import nnx  # noqa: PLC0415

  from rewardjax import checkpoint, recipes, sharding, train  # noqa: PLC0415
  from rewardjax.models import hf, transformer  # noqa: PLC0415
  from rewardjax.types import TrainState  # noqa: PLC0415

  logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  if config.algorithm != "grpo":
    raise app.UsageError(f"launch/eval.py evaluates policy-gradient runs (algorithm='grpo'); "
                         f"got {config.algorithm!r}, whose held-out metrics train.run reports")
  tokenizer = train.load_tokenizer(config)
  records = train.load_records(config, tokenizer)
  hooks = recipes.load(config.recipe, config.recipe_args.to_dict(), records=records,
                       fmt=config.data.fmt, seed=config.seed)
  mconfig = train.model_config(config, tokenizer)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  state = None
  if workdir:
    # The training run's state layout, so the checkpoint restores exactly as on resume.
    tx = train.make_optimizer(config.optim, config.train.steps * config.algo.num_iterations
                              * config.algo.num_minibatches)
    manager = checkpoint.make_manager(workdir)
    state, extra, _ = train.restore(
        manager, lambda rngs: transformer.Transformer(mconfig, rngs=rngs), tx, mesh,
        jax.random.key(config.seed), with_ref=config.algo.beta > 0)
    manager.close()
  if state is not None:
    step = int(extra["step"])
    hooks.load_state(extra.get("recipe", {}))
    print(f"evaluating {workdir} at step {step}")
  elif config.model.checkpoint:
    graphdef, params = nnx.split(hf.from_pretrained(
        config.model.checkpoint, dtype=mconfig.dtype, param_dtype=mconfig.param_dtype,
        attention_impl=mconfig.attention_impl), nnx.Param)
    state = TrainState(step=0, params=nnx.to_pure_dict(params), opt_state=None, rng=None,
                       graphdef=graphdef)
    step = 0
    print(f"evaluating {config.model.checkpoint} (no checkpoint in --workdir={workdir!r})")
  else:
    raise app.UsageError(f"no checkpoint in --workdir={workdir!r} and no "
                         "--config.model.checkpoint to evaluate")
  # The trainer's evaluation key for this step: the numbers match its eval at `step`.
  rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
  with jax.set_mesh(mesh):
    results = train.evaluate(config, state, records, tokenizer, hooks, rng, None, None)
  width = max(len(k) for k in results)
  print("\n".join(f"{k:<{width}}  {v:.4g}" for k, v in results.items()))
  if workdir:
    with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
