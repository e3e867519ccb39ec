"""The reward model's table of objectives, chosen by `loss_type` (`configs/reward_model.py`).

An objective adapts a `SequenceBatch` to `rewardjax.losses` functions: it scores the rows with
the scalar-head model (or reads the backbone's hidden states, for the objectives that need
features or several scores per row) and hands the arrays and the batch's `extra` fields to the
losses. Each names the records it trains on, a key of `reward_model_records.RECORDS` (their row
layouts are documented there).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import losses
from rewardjax.algorithms import process_reward_model as prm
from rewardjax.algorithms import vpl
from rewardjax.algorithms.base import Objective
from rewardjax.models import heads

# The `algo` block of a reward-model config: one meaning per field (TRL names where TRL has the
# field). Fields marked "built-in" shape the records the built-in task makes.
DEFAULTS = dict(
    loss_type="bt",                  # a key of OBJECTIVES
    records="",                      # a key of RECORDS to train on ("" = the objective's own)
    train_questions=0,               # built-in: label only the first N training questions
                                     # (0 = all); a small-data run
    pretrain_steps=0,                # the first N steps train on the records' unlabelled
                                     # pre-training data (POLAR: policy discrimination)
    center_rewards_coefficient=0.0,  # TRL: + c * mean((r_w + r_l)^2) (BT-based); 0 = off
    pairs_per_question=1,            # built-in pairs: pairs per training question
    num_responses=4,                 # built-in ranked lists: K responses per prompt
    label_noise=0.2,                 # built-in noisy pairs: probability of swapped labels
    ensemble_size=10,                # built-in noisy pairs: M scorers giving preference strength
    ensemble_error=0.25,             # built-in noisy pairs: probability a scorer misjudges
    noise_threshold=0.0,             # pairs with ensemble strength below it count as noisy
    label_smoothing=0.1,             # TRL DPOConfig name: alpha of soft labels on noisy pairs
    tie_fraction=0.5,                # built-in win-tie pairs: probability of a tie pair
    wrong_tie_fraction=0.0,          # built-in win-tie pairs: share of ties that are two
                                     # equally wrong answers (SoliReward ties only Passes: 0)
    contrastive_coefficient=1.0,     # beta of the SimCSE term (MOSS-RLHF II: 1)
    contrastive_temperature=0.05,    # tau of SimCSE (SimCSE default; the paper gives none)
    contrastive_dropout=0.05,        # dropout rate that makes SimCSE's two views (paper: 0.05)
    goal_coefficient=0.5,            # beta of the goal-conditioned term (reference script: 0.5)
    goal_samples=16,                 # S = U position pairs per example (reference script: 16)
    context_size=4,                  # built-in user pairs: C comparisons per context set
    style_fraction=0.5,              # built-in user pairs: share of style (disagreement) pairs
    latent_dim=16,                   # VPL: L, dims of the user latent z (paper: 512)
    latent_hidden_dim=64,            # VPL: H of its pair-encoder and decoder MLPs (paper: 512)
    kl_weight=0.01,                  # VPL: beta of the KL term (vpl_llm code default 0.01)
    kl_anneal_period=10_000,         # VPL: steps of one cyclical cosine KL cycle; 0 = off
    clamp_posterior=True,            # VPL: clamp mu and log sigma^2 to [-1, 1] (as its code)
)

def _scores(model, batch) -> jax.Array:
  """[R] reward of each row: the head on the last real token."""
  return model(batch.tokens, attention_mask=batch.attention_mask)


def _hidden(model, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Hidden states [R, S, D], last-token features [R, D] and scores [R] of one forward pass
  (the scores equal `_scores`: the head on the same last-token features)."""
  hidden_RxSxD, _ = model.backbone.hidden_states(batch.tokens,
                                                 attention_mask=batch.attention_mask)
  features_RxD = heads.last_token_pool(hidden_RxSxD, batch.attention_mask)
  return hidden_RxSxD, features_RxD, model.head(features_RxD)


def _halves(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  half = x.shape[0] // 2
  return x[:half], x[half:2 * half]


def _prefixed(prefix: str, metrics: dict) -> dict:
  return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _step_key(batch) -> jax.Array:
  # Every row holds the same key (`add_step_key`); row 0's is as good as any.
  return jax.random.wrap_key_data(batch.extra["key"][0])


def bt_objective(model, batch, *, center_rewards_coefficient: float):
  """`losses.bradley_terry_loss` on (chosen rows; rejected rows) scores."""
  chosen, rejected = _halves(_scores(model, batch))
  return losses.bradley_terry_loss(chosen, rejected,
                                   center_rewards_coefficient=center_rewards_coefficient or None)


def margin_objective(model, batch, *, center_rewards_coefficient: float):
  """Bradley-Terry with the per-pair margin of the records (Llama 2): log σ(r_c − r_r − m)."""
  chosen, rejected = _halves(_scores(model, batch))
  margin, _ = _halves(batch.extra["margin"])
  return losses.bradley_terry_loss(chosen, rejected, margin=margin,
                                   center_rewards_coefficient=center_rewards_coefficient or None)


def denoised_objective(model, batch, *, recipe: str, label_smoothing: float,
                       noise_threshold: float):
  """`losses.denoised_bradley_terry_loss` (MOSS-RLHF II `recipe`) with the records' ensemble
  preference strength."""
  chosen, rejected = _halves(_scores(model, batch))
  strength, _ = _halves(batch.extra["preference_strength"])
  return losses.denoised_bradley_terry_loss(chosen, rejected, strength, recipe=recipe,
                                            label_smoothing=label_smoothing,
                                            noise_threshold=noise_threshold)


def feature_views(features: jax.Array, key: jax.Array, rate: float):
  """Two dropout views [2, R, D] of the features (inverted dropout: kept entries / (1 − rate)).

  The backbone has no dropout, so SimCSE's two views are drawn on the last-token features that
  feed the reward head instead of inside the network (the paper: two dropout-0.05 passes).
  """
  keep_2xRxD = jax.random.bernoulli(key, 1.0 - rate, (2, *features.shape))
  return jnp.where(keep_2xRxD, features[None] / (1.0 - rate), 0.0)


def contrastive_objective(model, batch, *, center_rewards_coefficient: float,
                          contrastive_coefficient: float, contrastive_temperature: float,
                          contrastive_dropout: float):
  """Bradley-Terry + β · SimCSE over the features of every row (MOSS-RLHF II, preference-pair
  form: chosen and rejected rows are samples, the other rows of the batch their negatives)."""
  _, features_RxD, scores_R = _hidden(model, batch)
  chosen, rejected = _halves(scores_R)
  bt, metrics = losses.bradley_terry_loss(
      chosen, rejected, center_rewards_coefficient=center_rewards_coefficient or None)
  views_2xRxD = feature_views(features_RxD, _step_key(batch), contrastive_dropout)
  simcse, simcse_metrics = losses.simcse_loss(views_2xRxD[0], views_2xRxD[1],
                                              temperature=contrastive_temperature)
  return bt + contrastive_coefficient * simcse, {
      **metrics, **_prefixed("simcse", simcse_metrics), "bt_loss": bt, "simcse_loss": simcse}


def win_tie_objective(model, batch):
  """`losses.win_tie_bradley_terry_loss` (paper form): tie pairs pull scores together."""
  chosen, rejected = _halves(_scores(model, batch))
  is_tie, _ = _halves(batch.extra["is_tie"])
  return losses.win_tie_bradley_terry_loss(chosen, rejected, is_tie)


def listwise_objective(model, batch, *, loss_fn: Callable, num_responses: int):
  """A ranking loss (`k_choose_2_loss`, `plackett_luce_loss`) on the [B, K] scores of the
  "ranked" rows."""
  scores_BxK = _scores(model, batch).reshape(-1, num_responses)
  ranks_BxK = batch.extra["ranks"].reshape(-1, num_responses)
  return loss_fn(scores_BxK, ranks_BxK)


def polar_objective(model, batch):
  """`losses.polar_loss`: the positive candidate beats the negative against one reference."""
  positive, negative = _halves(_scores(model, batch))
  return losses.polar_loss(positive, negative)


def yojo_objective(model, batch):
  """`losses.yojo_loss` on the K scores read from one packed row each (YOJO).

  Score k of a row is the head on the hidden state at `end_positions[:, k]` (the last token of
  response k; the EOS for the last response). Causal attention lets response k see the earlier
  ones, which is YOJO's cross-response comparison. Also reports the pairwise accuracy over all
  strictly ranked response pairs ("pair_accuracy").
  """
  hidden_RxSxD, _ = model.backbone.hidden_states(batch.tokens,
                                                 attention_mask=batch.attention_mask)
  at_RxKxD = jnp.take_along_axis(hidden_RxSxD, batch.extra["end_positions"][:, :, None], axis=1)
  scores_RxK = model.head(at_RxKxD)
  loss, metrics = losses.yojo_loss(scores_RxK, batch.extra["best_index"])
  _, ranking = losses.k_choose_2_loss(scores_RxK, batch.extra["response_ranks"])
  return loss, {**metrics, "pair_accuracy": ranking["accuracy"]}


def goal_objective(model, batch, *, center_rewards_coefficient: float, goal_coefficient: float,
                   goal_samples: int):
  """Bradley-Terry + the goal-conditioned contrastive loss on last-layer hidden states.

  Response positions come from the loss mask (token j+1 of a row is a completion token where
  loss_mask[j] = 1, so the completion mask is loss_mask shifted right by one); the sampled
  source/goal/anchor/negative positions are drawn in the jitted step from the batch's step key.
  """
  hidden_RxSxD, _, scores_R = _hidden(model, batch)
  chosen, rejected = _halves(scores_R)
  bt, metrics = losses.bradley_terry_loss(
      chosen, rejected, center_rewards_coefficient=center_rewards_coefficient or None)
  response_RxS = jnp.concatenate(
      [jnp.zeros_like(batch.loss_mask[:, :1]), batch.loss_mask], axis=1)
  response_c, response_r = _halves(response_RxS)
  source, goal, anchor, negative, valid = losses.goal_contrastive_positions(
      _step_key(batch), response_c, response_r, num_positive=goal_samples,
      num_negative=goal_samples)
  hidden_c, hidden_r = _halves(hidden_RxSxD)
  goal_loss, goal_metrics = losses.goal_contrastive_loss(
      hidden_c, hidden_r, source, goal, anchor, negative, valid, beta=goal_coefficient)
  return bt + goal_loss, {**metrics, **_prefixed("goal", goal_metrics), "bt_loss": bt,
                          "goal_loss": goal_loss}


def pointwise_objective(model, batch):
  """`losses.pointwise_binary_loss` with the reward as the logit of "correct" and each row's
  0/1 label; "pair_accuracy" compares the two rows of each pair."""
  scores_R = _scores(model, batch)
  loss, metrics = losses.pointwise_binary_loss(scores_R, batch.extra["labels"])
  chosen, rejected = _halves(scores_R)
  return loss, {**metrics, "pair_accuracy": jnp.mean((chosen > rejected).astype(jnp.float32))}


def add_step_key(arrays, extra, items, *, setup, options, rng):
  """Host stage: the step's PRNG key as raw key data, one copy per row (extra "key" [R, 2]).

  The update step is deterministic and does not pass its rng to the loss, so objectives that
  sample (SimCSE's dropout views, the goal-conditioned positions) read this key instead.
  """
  del items, setup, options
  key_data = jax.device_get(jax.random.key_data(rng)) if jax.dtypes.issubdtype(
      rng.dtype, jax.dtypes.prng_key) else jax.device_get(rng)
  key_1xK = np.asarray(key_data, np.uint32).reshape(1, -1)
  return arrays, {**extra, "key": np.repeat(key_1xK, arrays["tokens"].shape[0], axis=0)}


_KEY = {"key": "the objective's prepare stage (add_step_key: the step's PRNG key per row)"}
_BT = ("center_rewards_coefficient",)
_DENOISED = ("label_smoothing", "noise_threshold")
_STRENGTH = {"preference_strength": "the built-in 'noisy_pairs' records (an ensemble of scorers, "
                                    "tasks.noisy_preference_pairs) or a preference_strength column"}


def _denoised(recipe: str) -> Objective:
  # The MOSS-RLHF II recipe is fixed by the table key, not read from the config.
  return Objective(functools.partial(denoised_objective, recipe=recipe), hparams=_DENOISED,
                   needs=_STRENGTH, records="noisy_pairs", uses_ref=False)


def _listwise(loss_fn: Callable) -> Objective:
  return Objective(functools.partial(listwise_objective, loss_fn=loss_fn),
                   hparams=("num_responses",),
                   needs={"ranks": "the 'ranked' records (tasks.ranked_responses scores)"},
                   records="ranked", uses_ref=False)


OBJECTIVES = {
    "bt": Objective(bt_objective, hparams=_BT, records="pairs", uses_ref=False),
    "margin": Objective(
        margin_objective, hparams=_BT, records="rated_pairs", uses_ref=False,
        needs={"margin": "the built-in 'rated_pairs' records (tasks.rated_preference_pairs: "
                         "Llama 2 rating of how wrong the rejected answer is) or a margin column"}),
    "label_flip": _denoised("flip"),
    "label_smoothing": _denoised("soft_label_margin"),
    "adaptive_margin": _denoised("margin"),
    "contrastive": Objective(
        contrastive_objective, hparams=_BT + ("contrastive_coefficient",
                                              "contrastive_temperature", "contrastive_dropout"),
        needs=_KEY, records="pairs", uses_ref=False, prepare=add_step_key),
    "win_tie": Objective(
        win_tie_objective, records="win_tie_pairs", uses_ref=False,
        needs={"is_tie": "the built-in 'win_tie_pairs' records (reward_data.tie_pairs) or an "
                         "is_tie column"}),
    "k_choose_2": _listwise(losses.k_choose_2_loss),
    "plackett_luce": _listwise(losses.plackett_luce_loss),
    "polar": Objective(polar_objective, records="polar", uses_ref=False),
    "yojo": Objective(
        yojo_objective, records="packed", uses_ref=False,
        needs={name: "the 'packed' records' arrays (YOJO rows of tasks.ranked_responses)"
               for name in ("end_positions", "best_index", "response_ranks")}),
    "goal_conditioned": Objective(
        goal_objective, hparams=_BT + ("goal_coefficient", "goal_samples"), needs=_KEY,
        records="pairs", uses_ref=False, prepare=add_step_key),
    "prm": Objective(
        prm.prm_objective, records="steps", uses_ref=False,
        needs={name: "the 'steps' records (data.steps.prm_records: step-labelled solutions of "
                     "the multi-step task) or a step_labels column" for name in (
                         "step_positions", "step_labels", "step_mask")}),
    "vpl": Objective(
        vpl.vpl_objective, hparams=("context_size", "kl_weight", "kl_anneal_period"),
        records="user_pairs", uses_ref=False, prepare=add_step_key,
        needs={**_KEY, "step": "the reward-model batch (the step, for the KL annealing)",
               "style": "the 'user_pairs' records (data.users.user_pairs)"}),
    "pointwise": Objective(
        pointwise_objective, records="labelled_pairs", uses_ref=False,
        needs={"labels": "the built-in 'labelled_pairs' records (1 = correct, 0 = wrong) or "
                         "chosen_label / rejected_label columns"}),
}
