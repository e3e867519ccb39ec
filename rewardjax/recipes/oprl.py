"""OPRL: an implicit process reward model trained online alongside the policy (arXiv 2509.19199).

The PRM pi_phi is a second language model (a `base.Companion` with the policy's architecture,
initialised from the same starting model, OPRL Algorithm 1 line 1). Each step:

  1. the policy samples G rollouts per prompt; the outcome reward is the verifier's;
  2. step rewards r_k = beta * sum_{t in step k} log pi_phi(y_t) / pi_old(y_t) from the PRM
     *before* this step's update (Eq. 4, "the latest PRM from the previous training step"; the
     `implicit_prm` reward term, `rewards.process.implicit_prm_term`), pi_old the sampler;
  3. token advantages A = A^E + alpha * A^S: the group-normalised outcome advantage plus the step
     reward normalised over all steps of the group (§3.3, `advantages.combine_step_advantages`;
     the GRPO advantage "oprl");
  4. in the same jitted step, the policy takes its clipped-surrogate step and the PRM one step
     of trajectory-level DPO against pi_old (Eq. 3):
       J_PRM = -log sigma(beta [log pi_phi(tau+)/pi_old(tau+) - log pi_phi(tau-)/pi_old(tau-)])
     over pairs from the same group ordered by outcome reward (`pairs`).

Deviations: the paper's agents act in multi-turn environments (WebShop, Sokoban, SOTOPIA);
here an "action" is a step line of the multi-step arithmetic task. OPRL's beta is not stated
in the text we read (it lies in [0, 1]); the default is 0.05.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import losses, update
from rewardjax.data import tokenizers
from rewardjax.recipes import Recipe


def pairs(groups: Sequence[dict]) -> list[tuple[int, int, float]]:
  """(positive row, negative row, valid) per group, rows indexing the concatenated groups.

  The positive is the first rollout with the group's highest outcome reward, the negative the
  first with its lowest; a group whose rewards are all equal gives no pair (valid 0, rows 0, 0
  of the group).

  >>> pairs([dict(rewards=np.array([0.0, 1.0, 0.0])), dict(rewards=np.array([1.0, 1.0]))])
  [(1, 0, 1.0), (3, 3, 0.0)]
  """
  out, offset = [], 0
  for g in groups:
    r = np.asarray(g["rewards"])
    if np.ptp(r) > 0:
      out.append((offset + int(np.argmax(r)), offset + int(np.argmin(r)), 1.0))
    else:
      out.append((offset, offset, 0.0))
    offset += len(r)
  return out


def trajectory_dpo_objective(model, batch: dict, *, beta: float):
  """OPRL's PRM loss on the companion rows: rows [0, P) positives, [P, 2P) negatives.

  s = beta * (log pi_phi(tau) - log pi_old(tau)) summed over completion tokens, then
  `losses.bradley_terry_loss(s+, s-, mask=valid)` = -log sigma(s+ - s-) averaged over valid
  pairs: exactly the trajectory DPO of Eq. 3 with pi_old as the reference.
  """
  completion_length = batch["completion_mask"].shape[1]
  prompt_length = batch["tokens"].shape[1] - completion_length
  logps_RxT, _ = update.token_logprobs(model, batch["tokens"], batch["attention_mask"],
                                       prompt_length, completion_length)
  m = batch["completion_mask"].astype(jnp.float32)
  s_R = beta * ((logps_RxT - batch["old_logprobs"]) * m).sum(axis=1)
  half = s_R.shape[0] // 2
  loss, metrics = losses.bradley_terry_loss(s_R[:half], s_R[half:],
                                            mask=batch["valid"][:half])
  return loss, {**metrics, "valid_pairs": batch["valid"][:half].sum()}


def make_companion(args: dict, *, tokenizer):
  """The implicit PRM as a `base.Companion` with the policy's architecture (model_fn None: the
  algorithm fills in the policy's) and a copy of the starting params."""
  from rewardjax.algorithms import base, grpo  # noqa: PLC0415 (algorithms import recipes)

  pad_id = tokenizers.pad_token_id(tokenizer)
  beta = float(args["beta"])

  def make_batch(groups, step):
    del step
    host = grpo.assemble(groups, pad_id, groups[0]["completion_mask"].shape[1])
    rows = pairs(groups)
    index = np.array([r[0] for r in rows] + [r[1] for r in rows])
    valid = np.array([r[2] for r in rows] * 2, np.float32)
    return {"tokens": host["tokens"][index], "attention_mask": host["attention_mask"][index],
            "completion_mask": host["completion_mask"][index],
            "old_logprobs": host["sampler_logprobs"][index], "valid": valid}

  def loss(model, batch):
    return trajectory_dpo_objective(model, batch, beta=beta)

  return base.Companion(
      name="prm", model_fn=None,
      init_params=lambda lm_params, rng: jax.tree.map(jnp.copy, lm_params),
      loss=loss, learning_rate=float(args["learning_rate"]), make_batch=make_batch)


def make_recipe(args: dict, *, stream, problems: dict, fmt: str, seed: int, rewards,
                tokenizer=None) -> Recipe:
  """OPRL as a `Recipe`: the task stream, the config's composition (verifier + implicit_prm)
  and the implicit PRM trained in the same step."""
  del problems, fmt, seed
  tokenizer = tokenizer or tokenizers.char_tokenizer()
  if "implicit_prm" not in {t.name for t in rewards.terms}:
    raise ValueError("recipe 'oprl' trains the implicit PRM whose step rewards the 'implicit_prm' "
                     "reward term reads; add it, e.g. --config.rewards.terms=verifier,implicit_prm")
  return Recipe(source=stream, rewards=rewards, companion=make_companion(args,
                                                                         tokenizer=tokenizer))
