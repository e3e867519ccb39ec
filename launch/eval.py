"""Evaluates a run: `python launch/eval.py --config=configs/spark.py --workdir=/tmp/spark`.

Restores the newest checkpoint in --workdir (same --config as the training run), or, when the
workdir holds none, evaluates `--config.model.checkpoint` as it is (e.g. an HF instruct model
before any training). Prints the held-out task accuracy and the recipe's metrics; for SPARK:
judge accuracy on held-out rollouts, reflection fix rate, test-time self-reflection (answer,
self-judge, revise up to max_round), best-of-N by the model's own judge score and the master-key
probe (content-free answers the judge accepts; `reward_eval.master_keys`); for reward
models, DPO runs (their implicit reward) and configs/reward_model.py:variant=endogenous: the
RewardBench-style benchmark table with its best-of-4 column and best-of-N. All logic is
library code: the algorithm program's held-out evaluation and the recipe's (`train.make_job`,
`rewardjax.evaluation.self_reflection`), the ones `train.run` reports.
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

  from rewardjax import checkpoint, sharding, train, train_state  # noqa: PLC0415
  from rewardjax.evaluation import master_keys, reward_eval  # noqa: PLC0415
  from rewardjax.types import TrainState  # noqa: PLC0415

  logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  with jax.set_mesh(mesh):  # as in train.run: the models' activation sharding constraints
    # The run's tokenizer, data, recipe and algorithm program, resolved as the trainer does.
    job = train.make_job(config, mesh)
    program = job.program
    state = None
    if workdir:
      manager = checkpoint.make_manager(workdir)
      saved = checkpoint.latest_extra(manager)
      manager.close()
      if saved is not None:  # a run of another algorithm would fail deep in the restore
        try:
          reward_eval.check_workdir_algorithm(json.loads(saved.get("config", "{}")),
                                              config.algorithm, workdir)
        except ValueError as e:
          raise app.UsageError(str(e)) from None
      # The training run's state layout, so the checkpoint restores exactly as on resume.
      tx = train.make_optimizer(config.optim, config.train.steps * program.num_iterations
                                * program.num_minibatches)
      manager = checkpoint.make_manager(workdir)
      state, extra, _ = train_state.restore(manager, program.model_fn, tx, mesh,
                                            jax.random.key(config.seed), with_ref=program.with_ref)
      manager.close()
    if state is not None:
      step = int(extra["step"])
      job.recipe.source.load_state(extra.get("recipe", {}))
      print(f"evaluating {workdir} at step {step}")
    elif config.model.checkpoint:
      # The trainer's initial params (the program's model from the pretrained LM), without
      # an optimizer state.
      graphdef = nnx.split(nnx.eval_shape(lambda: program.model_fn(nnx.Rngs(0))), nnx.Param)[0]
      params = program.init_params(train.pretrained_params(config, job.setup.model),
                                   config.seed)
      state = TrainState(step=0, params=params, opt_state=None, rng=None,
                         ref_params=params if program.with_ref else None, graphdef=graphdef)
      step = 0
      print(f"evaluating {config.model.checkpoint} (no checkpoint in --workdir={workdir!r})")
    else:
      raise app.UsageError(f"no checkpoint in --workdir={workdir!r} and no "
                           "--config.model.checkpoint to evaluate")
    # The trainer's evaluation key for this step: the numbers match its eval at `step`.
    rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
    results = {**program.evaluate(state, rng), **job.recipe.evaluate(state, job.tokenizer)}
    if config.reward_eval.master_keys:  # the policy as a judge, fooled by content-free answers
      results.update(master_keys.evaluate(state, job.setup, options=master_keys.ProbeOptions(
          num_questions=config.reward_eval.master_keys)))
  width = max(len(k) for k in results)
  print("\n".join(f"{k:<{width}}  {v:.4g}" for k, v in results.items()))
  if "rb1/score" in results:  # reward models, DPO implicit rewards, the endogenous reward
    print("\n" + reward_eval.format_table(results))
  if workdir:
    with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
