"""VPL (Variational Preference Learning, Poddar et al., arXiv 2408.10075) as a reward-model
objective, its records (user-labelled pairs with the user's context set) and its evaluation.

The records are the built-in task's pairs labelled by users who agree on correctness and
disagree on style (`data.users`). Two record kinds share them:

  "user_pairs"         the VPL model's rows (R = 2B(1 + C)): target chosen rows [0, B), target
                       rejected rows [B, 2B), then the B·C context pairs record-major, chosen
                       rows [2B, 2B + BC) and rejected rows [2B + BC, 2B + 2BC)
  "user_target_pairs"  plain pair rows (R = 2B) of the same targets: the Bradley-Terry baseline
                       (`user_bt`), which never reads the context

extra (one entry per row): "user" (index in `users.USERS`), "style" (1 = a style pair, where
users disagree); VPL's batch adds "key" (the step's PRNG key, for ε) and "step" (for the KL
annealing), so the update step stays a pure function of (state, batch).

Held-out evaluation (both kinds, records of the held-out questions, seed + 1): pair accuracy
overall, per user, on style pairs (the disagreement) and on correctness pairs; VPL scores a
record's target under z = μ(C) of its own user's context set.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardjax import losses, sharding
from rewardjax.data import users
from rewardjax.models import vpl as vpl_model

EVAL_CHUNK = 64  # held-out records per jitted call (fixed: one compilation per token width)


def model_fn(config, options, *, rngs: nnx.Rngs) -> vpl_model.VPLModel:
  """The VPL model of the run (`Records.model_fn`)."""
  return vpl_model.VPLModel(config, vpl_model.VPLConfig(
      latent_dim=options["latent_dim"], hidden_dim=options["latent_hidden_dim"],
      clamp=options["clamp_posterior"]), rngs=rngs)


def user_records(problems, *, fmt, seed, options) -> list[dict]:
  """The built-in user-labelled records (`users.user_pairs`)."""
  return users.user_pairs(problems, users.UserPairOptions(
      context_size=options["context_size"], style_fraction=options["style_fraction"],
      seed=seed), fmt=fmt)


def _rows(setup, prompts, completions):
  from rewardjax.algorithms import reward_model_records  # noqa: PLC0415 (it imports this)

  return reward_model_records.response_rows(setup, prompts, completions)


def _pair_fields(pairs: Sequence[dict], users_of: Sequence[int]) -> dict:
  return {"user": np.tile(np.array(users_of, np.int32), 2),
          "style": np.tile(np.array([p["style"] for p in pairs], np.float32), 2)}


def target_arrays(items: Sequence[dict], *, setup):
  """Chosen rows then rejected rows of the target pairs; extra "user", "style"."""
  arrays = _rows(setup, [it["prompt"] for it in items] * 2,
                 [it["chosen"] for it in items] + [it["rejected"] for it in items])
  return arrays, _pair_fields(items, [it["user"] for it in items])


def context_arrays(items: Sequence[dict], *, setup):
  """Target rows then context rows (module doc), one token width for all; extra per row."""
  context = [c for it in items for c in it["context"]]
  pairs = list(items) + context
  arrays = _rows(setup, [p["prompt"] for p in pairs] * 2,
                 [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
  order = np.concatenate([np.arange(len(items)), len(pairs) + np.arange(len(items)),
                          len(items) + np.arange(len(context)),
                          len(pairs) + len(items) + np.arange(len(context))])
  # Rows were built pair-major (targets then contexts, chosen then rejected): reorder to the
  # layout of the module doc.
  arrays = {k: v[order] for k, v in arrays.items()}
  users_of = [it["user"] for it in items] + [it["user"] for it in items for _ in it["context"]]
  fields = _pair_fields(pairs, users_of)
  return arrays, {k: v[order] for k, v in fields.items()}


def target_rows(batch_size, options):
  del options
  return 2 * batch_size


def context_rows(batch_size, options):
  return 2 * batch_size * (1 + options["context_size"])


def posterior(model, tokens, attention_mask, *, context_size: int):
  """Target features [2B, D] (chosen then rejected) and q(z | C) = (μ, log σ²) [B, L] of
  "user_pairs" rows. Context pairs are embedded under stop_gradient (VPL embeds the context
  with a frozen LLM; here the current backbone, frozen for this path)."""
  pairs = tokens.shape[0] // (2 * (1 + context_size))
  features_2BxD = model.embed(tokens[:2 * pairs], attention_mask[:2 * pairs])
  context_2BCxD = jax.lax.stop_gradient(model.embed(tokens[2 * pairs:],
                                                    attention_mask[2 * pairs:]))
  chosen_BxCxD = context_2BCxD[:pairs * context_size].reshape(pairs, context_size, -1)
  rejected_BxCxD = context_2BCxD[pairs * context_size:].reshape(pairs, context_size, -1)
  mean_BxL, log_var_BxL = model.encoder(chosen_BxCxD, rejected_BxCxD)
  return features_2BxD, mean_BxL, log_var_BxL


def vpl_objective(model, batch, *, context_size: int, kl_weight: float, kl_anneal_period: int):
  """`losses.vpl_loss` of the decoder's rewards under z ~ q(z | C) (reparameterised,
  renormalised to radius √L), β = kl_weight · `losses.kl_annealing`(step); metrics add
  "style_accuracy" (target pairs where users disagree)."""
  features_2BxD, mean_BxL, log_var_BxL = posterior(model, batch.tokens, batch.attention_mask,
                                                   context_size=context_size)
  pairs = mean_BxL.shape[0]
  key = jax.random.wrap_key_data(batch.extra["key"][0])  # every row holds the step's key
  z_BxL = losses.reparameterize(mean_BxL, log_var_BxL, key)
  scores_2B = model.reward(features_2BxD, jnp.concatenate([z_BxL, z_BxL], axis=0))
  chosen_B, rejected_B = scores_2B[:pairs], scores_2B[pairs:]
  beta = kl_weight * losses.kl_annealing(batch.extra["step"][0], period=kl_anneal_period)
  loss, metrics = losses.vpl_loss(chosen_B, rejected_B, mean_BxL, log_var_BxL, kl_weight=beta)
  style_B = batch.extra["style"][:pairs]
  correct_B = (chosen_B > rejected_B).astype(jnp.float32)
  metrics["style_accuracy"] = (correct_B * style_B).sum() / jnp.maximum(style_B.sum(), 1.0)
  return loss, metrics


def user_metrics(chosen: np.ndarray, rejected: np.ndarray, items: Sequence[dict]) -> dict:
  """Held-out pair accuracy overall, per user, on style (disagreement) and correctness pairs,
  per user on style pairs, and the mean margin."""
  right = np.asarray(chosen) > np.asarray(rejected)
  user = np.array([it["user"] for it in items])
  style = np.array([it["style"] for it in items]) > 0
  out = {"pair_accuracy": float(right.mean()),
         "reward_margin": float(np.mean(np.asarray(chosen) - np.asarray(rejected)))}
  groups = {"style": style, "correctness": ~style}
  for u, name in enumerate(users.USERS):
    groups[name] = user == u
    groups[f"{name}_style"] = (user == u) & style
  for name, where in groups.items():
    out[f"{name}_accuracy"] = float(right[where].mean()) if where.any() else float("nan")
  return out


@functools.partial(jax.jit, static_argnums=0, static_argnames="context_size")
def _vpl_scores(graphdef, params, tokens, attention_mask, *, context_size: int):
  model = nnx.merge(graphdef, params)
  features_2BxD, mean_BxL, _ = posterior(model, tokens, attention_mask,
                                         context_size=context_size)
  scores_2B = model.reward(features_2BxD, jnp.concatenate([mean_BxL, mean_BxL], axis=0))
  return scores_2B, jnp.linalg.norm(mean_BxL, axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _scalar_scores(graphdef, params, tokens, attention_mask):
  return nnx.merge(graphdef, params)(tokens, attention_mask=attention_mask)


def _chunks(items: list, size: int):
  """Chunks of exactly `size` items (the last padded with copies of its last item) and the
  number of real items in each."""
  for start in range(0, len(items), size):
    chunk = items[start:start + size]
    yield chunk + [chunk[-1]] * (size - len(chunk)), len(chunk)


def evaluate(setup, problems, state, rng, *, options, with_context: bool) -> dict:
  """`user_metrics` on the held-out records; with `with_context` (VPL) z = μ of each record's
  context set and "latent_mean_norm" = mean ‖μ‖ (near 0: z collapsed to the prior)."""
  del rng
  if not problems:
    return {}
  items = user_records(problems, fmt=setup.data.fmt, seed=setup.seed + 1, options=options)
  chosen, rejected, norms = [], [], []
  for chunk, n in _chunks(items, EVAL_CHUNK):
    if with_context:
      arrays, _ = context_arrays(chunk, setup=setup)
      scores, norm = sharding.gather(_vpl_scores(
          state.graphdef, state.params, *sharding.feed((arrays["tokens"],
                                                        arrays["attention_mask"])),
          context_size=options["context_size"]))
      norms.append(norm[:n])
    else:
      arrays, _ = target_arrays(chunk, setup=setup)
      scores = sharding.gather(_scalar_scores(
          state.graphdef, state.params, *sharding.feed((arrays["tokens"],
                                                        arrays["attention_mask"]))))
    chosen.append(scores[:n])
    rejected.append(scores[len(chunk):len(chunk) + n])
  out = user_metrics(np.concatenate(chosen), np.concatenate(rejected), items)
  if with_context:
    out["latent_mean_norm"] = float(np.concatenate(norms).mean())
  return out
