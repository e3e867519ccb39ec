"""The DPO family's table of objectives, chosen by `loss_type` (`configs/dpo.py:variant=`).

Each entry adapts a `PreferenceBatch` to a `rewardjax.losses` function: it runs the policy on
the stacked rows (chosen rows [0, B), rejected rows [B, 2B), then any extra rows the
objective's `prepare` stage appended) and hands the summed or per-token log-probs to the loss.

  loss_type       loss                      source (arXiv id)
  TRL loss types  dpo_loss                  TRL `DPOTrainer` (sigmoid, ipo, hinge, ...)
  simpo           simpo_loss                SimPO 2405.14734, reference-free, mean log-probs
  orpo            orpo_loss                 ORPO 2403.07691, reference-free, + chosen NLL
  kto             kto_loss                  KTO 2402.01306, pairs as unpaired examples + KL rows
  cream           cream_loss                CREAM 2410.12735, rank consistency C as the soft label
  treg            treg_loss                 T-REG 2412.02685, + token-reward regulariser
  dno             dno_loss                  DNO 2404.03715, DNO-Prct; optional win-rate soft labels
  sspo            dpo_loss + spo_ssl_loss   SPO 2409.17791, + preference-degree classification

Rows after [0, 2B), appended on the host by `prepare` before sharding (`rows_per_record` rows
per pair); the reference scorer covers every row. The `extra` fields these stages add are per
row ([R, ...], as `types.PreferenceBatch` says), so they shard with the rows:

  kto   [2B, 4B)  each example's completion under another pair's prompt (the KL rows)
  treg  [2B, 4B)  chosen, rejected under the "better" prompt; [4B, 6B) under the "worse" one
  sspo  [2B, 4B)  chosen, rejected with k digits of the answer removed (class k)

The built-in-task data these stages read are in `rewardjax/data/preference_data.py`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import losses, update
from rewardjax.algorithms.base import Objective
from rewardjax.data import preference_data, tokenizers

# The `algo` block of a DPO-family config (TRL names where TRL has the field).
DEFAULTS = dict(
    loss_type="sigmoid",     # a key of OBJECTIVES
    beta=0.1,                # inverse temperature (DNO's eta); ORPO: weight lambda (TRL's name)
    label_smoothing=0.0,     # cDPO / robust / exo_pair / SimPO eps
    pairs_per_question=1,    # built-in task: pairs per training question (distinct wrong answers)
    simpo_gamma=0.5,         # SimPO target reward margin gamma (TRL CPOConfig)
    desirable_weight=1.0,    # KTO lambda_D (TRL KTOConfig)
    undesirable_weight=1.0,  # KTO lambda_U (TRL KTOConfig)
    responses_per_question=5,    # built-in task: N responses CREAM ranks and DNO plays (CREAM: 5)
    dno_win_rates=False,     # DNO, built-in task: soft labels from win rates (Alg. 1), else hard
    treg_alpha=0.25,         # T-REG regulariser weight alpha (paper grid 0.1, 0.25, 0.5)
    treg_token_reduction="sum",  # T-REG: L_REG summed over tokens (as written) or "mean"
    treg_better_prompt="Answer correctly. {prompt}",    # T-REG contrastive prompt x_better
    treg_worse_prompt="Answer incorrectly. {prompt}",   # T-REG contrastive prompt x_worse
    sspo_weight=1.0,         # SPO lambda on L_SSL (unverified against arXiv 2409.17791)
    sspo_max_removed=2,      # SPO K: a degraded response loses k in 0..K answer digits
)


def _split(x):
  half = x.shape[0] // 2
  return x[:half], x[half:2 * half]


def _pair_logps(model, batch, rows: int, chunk_size: int):
  """Summed completion log-probs and lengths of the first `rows` rows."""
  paired = batch.paired_prompt if rows == batch.tokens.shape[0] else 0
  return update.sequence_logps(model, batch.tokens[:rows], batch.attention_mask[:rows],
                               batch.loss_mask[:rows], chunk_size=chunk_size,
                               paired_prompt=paired)


def dpo_objective(model, batch, *, loss_type: str, beta: float, label_smoothing: float,
                  chunk_size: int = 1024):
  """`losses.dpo_loss` (a TRL loss type) of the summed completion log-probs of each pair;
  completion lengths are always passed (IPO and `sigmoid_norm` divide by them)."""
  logps_R, lengths_R = update.sequence_logps(model, batch.tokens, batch.attention_mask,
                                             batch.loss_mask, chunk_size=chunk_size,
                                             paired_prompt=batch.paired_prompt)
  (logps_w, logps_l), (ref_w, ref_l) = _split(logps_R), _split(batch.ref_logps)
  len_w, len_l = _split(lengths_R)
  return losses.dpo_loss(logps_w, logps_l, ref_w, ref_l, beta=beta, loss_type=loss_type,
                         label_smoothing=label_smoothing, chosen_lengths=len_w,
                         rejected_lengths=len_l)


def _dpo(name: str) -> Objective:
  # The TRL loss type is fixed by the table key, not read from the config: one meaning per name.
  return Objective(functools.partial(dpo_objective, loss_type=name),
                   hparams=("beta", "label_smoothing"), records="pairs")


# Reference-free (no reference model: the batch's ref_logps are zeros and never read).
def _mean_logps(model, batch, chunk_size):
  logps_R, lengths_R = update.sequence_logps(model, batch.tokens, batch.attention_mask,
                                             batch.loss_mask, chunk_size=chunk_size,
                                             paired_prompt=batch.paired_prompt)
  return logps_R / jnp.maximum(lengths_R, 1), logps_R, lengths_R


def simpo_objective(model, batch, *, beta: float, simpo_gamma: float, label_smoothing: float,
                    chunk_size: int = 1024):
  """`losses.simpo_loss` of the mean completion log-probs (sum / max(|y|, 1)) of each pair."""
  avg_R, _, _ = _mean_logps(model, batch, chunk_size)
  avg_w, avg_l = _split(avg_R)
  return losses.simpo_loss(avg_w, avg_l, beta=beta, simpo_gamma=simpo_gamma,
                           label_smoothing=label_smoothing)


def orpo_objective(model, batch, *, beta: float, chunk_size: int = 1024):
  """`losses.orpo_loss`; the NLL is the token mean over the batch's chosen completion tokens.

  TRL's NLL also counts the prompt's tokens; here the prompt is the question, which the policy
  is not asked to produce, so only completion tokens count (normaliser max(sum |y_w|, 1)).
  """
  avg_R, logps_R, lengths_R = _mean_logps(model, batch, chunk_size)
  (avg_w, avg_l), (logps_w, _), (len_w, _) = _split(avg_R), _split(logps_R), _split(lengths_R)
  nll = -jnp.sum(logps_w) / jnp.maximum(jnp.sum(len_w), 1)
  return losses.orpo_loss(avg_w, avg_l, nll, beta=beta)


# Host stages (`Objective.prepare`): numpy in, numpy out, before the batch goes to the mesh.
def _rows(setup, prompts, first, second) -> dict:
  """`preference.pair_arrays` as the dict a batch is built from."""
  from rewardjax.algorithms.preference import pair_arrays  # noqa: PLC0415 (it imports us)
  tokens, attention_mask, loss_mask = pair_arrays(setup.tokenizer, prompts, first, second,
                                                  data=setup.data)
  return dict(tokens=tokens, attention_mask=attention_mask, loss_mask=loss_mask)


def _append_rows(arrays: dict, new: dict, *, pad_id: int) -> dict:
  """The rows of `new` after those of `arrays`, both right-padded to one length.

  A right-padded tail is masked (attention and loss), so it changes no log-prob.
  """
  length = max(arrays["tokens"].shape[1], new["tokens"].shape[1])

  def padded(rows):
    tail = [(0, 0), (0, length - rows["tokens"].shape[1])]
    return {k: np.pad(v, tail, constant_values=pad_id if k == "tokens" else 0)
            for k, v in rows.items()}

  a, b = padded(arrays), padded(new)
  return {k: np.concatenate([a[k], b[k]]) for k in a}


def _texts(items, key):
  return [it[key] for it in items]


def _per_row(x, rows: int):
  """A per-pair field [B] tiled to its pair's two rows [2B] (already per row: unchanged)."""
  x = np.asarray(x, np.float32)
  return x if x.shape[0] == rows else np.tile(x, rows // x.shape[0])


def _host_rng(rng) -> np.random.Generator:
  """A numpy generator seeded by a jax key (typed or raw uint32)."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return np.random.default_rng(np.asarray(jax.device_get(rng)).ravel().tolist())


def kto_rows(arrays, extra, items, *, setup, options, rng):
  """KTO's KL rows [2B, 4B): example j's completion under pair (j + 1) mod B's prompt."""
  del options, rng
  if len(items) < 2:
    raise ValueError("loss_type='kto' needs >= 2 pairs per batch: its KL rows put each "
                     "completion under another pair's prompt")
  kl = _rows(setup, preference_data.mismatched_prompts(_texts(items, "prompt")),
             _texts(items, "chosen"), _texts(items, "rejected"))
  return _append_rows(arrays, kl, pad_id=tokenizers.pad_token_id(setup.tokenizer)), extra


def kto_objective(model, batch, *, beta: float, desirable_weight: float,
                  undesirable_weight: float, chunk_size: int = 1024):
  """`losses.kto_loss` with the pairs as unpaired data: chosen rows desirable, rejected rows
  undesirable, rows [2B, 4B) their mismatched KL rows (reference log-probs of every row come
  from the one reference pass)."""
  logps_R, _ = update.sequence_logps(model, batch.tokens, batch.attention_mask,
                                     batch.loss_mask, chunk_size=chunk_size)
  n = logps_R.shape[0] // 2   # 2B examples, then their 2B KL rows
  desirable_N = jnp.arange(n) < n // 2
  return losses.kto_loss(logps_R[:n], batch.ref_logps[:n], desirable_N, logps_R[n:],
                         batch.ref_logps[n:], beta=beta, loss_type="kto",
                         desirable_weight=desirable_weight,
                         undesirable_weight=undesirable_weight)


def cream_consistency_stage(arrays, extra, items, *, setup, options, rng):
  """CREAM's per-prompt consistency C in [0, 1] (`consistency_dyn`), unless the records carry it.

  CREAM ranks N sampled responses of a prompt twice, by the current and by the previous model's
  implicit reward, and C = (Kendall tau + 1) / 2. A one-round run has one model iterate, and this
  host stage has no params (the faithful stage needs the reference params here), so on the
  built-in task the same structure is kept with two scorers that exist on the host: the N
  responses of the pair's question (`preference_data.question_values`) are ranked by the graded
  verifier (closeness to the answer; the scorer whose arg max is the chosen response, as CREAM's
  current model) and by a cruder judge (digit edit distance to the answer, standing in for the
  previous model), and C = `losses.cream_consistency` of the two (`cream_scores`). The pair
  labels are correct here, so C < 1 softens true labels: the stage exercises the regulariser, it
  does not filter label noise. Records with a `consistency` field (CREAM's offline stage run
  with the models) keep theirs. `extra["consistency"]` is per row [2B]: the pair's C twice.
  """
  del rng
  rows = arrays["tokens"].shape[0]
  if "consistency" in extra:
    return arrays, dict(extra, consistency=_per_row(extra["consistency"], rows))
  current, previous = preference_data.cream_scores(items, options.responses_per_question,
                                                   fmt=setup.data.fmt)
  c = losses.cream_consistency(jax.device_put(current), jax.device_put(previous))
  return arrays, dict(extra, consistency=_per_row(jax.device_get(c), rows))


def cream_objective(model, batch, *, beta: float, chunk_size: int = 1024):
  """`losses.cream_loss` with each pair's consistency (`extra["consistency"]`, per row)."""
  logps_R, _ = _pair_logps(model, batch, batch.tokens.shape[0], chunk_size)
  (logps_w, logps_l), (ref_w, ref_l) = _split(logps_R), _split(batch.ref_logps)
  consistency_B, _ = _split(batch.extra["consistency"])
  return losses.cream_loss(logps_w, logps_l, ref_w, ref_l, consistency_B, beta=beta)


def treg_rows(arrays, extra, items, *, setup, options, rng):
  """T-REG's contrastive rows: chosen and rejected under x_better [2B, 4B), x_worse [4B, 6B).

  All 6B rows are encoded together, so every row has one prompt width and a response token
  sits in the same column under x, x_better and x_worse (the pair rows get more left padding,
  which changes no log-prob). Prompts longer than `max_prompt_length` lose their beginning.
  """
  del arrays, rng
  prompts = _texts(items, "prompt")
  wrapped = (prompts + [options.treg_better_prompt.format(prompt=p) for p in prompts]
             + [options.treg_worse_prompt.format(prompt=p) for p in prompts])
  rows = _rows(setup, wrapped, _texts(items, "chosen") * 3, _texts(items, "rejected") * 3)
  # pair_arrays gives (x|c, xb|c, xw|c, x|r, xb|r, xw|r); T-REG's layout pairs them per prompt.
  b = len(items)
  order = np.concatenate([np.arange(b) + b * k for k in (0, 3, 1, 4, 2, 5)])
  return {k: v[order] for k, v in rows.items()}, extra


def treg_objective(model, batch, *, beta: float, treg_alpha: float, treg_token_reduction: str,
                   chunk_size: int = 1024):
  """`losses.treg_loss` (base "dpo") with token rewards from the frozen reference.

  T-REG's evaluator is the frozen reference: r_t = sig(log pi_ref(y_t | x_better) -
  log pi_ref(y_t | x_worse)) - 1/2 (`losses.treg_token_rewards`), read from the per-token
  reference log-probs `extra["ref_token_logps"]` [R, L-1] of the contrastive rows, whose
  response columns match the pair rows' (`treg_rows`). The policy runs on the 2B pair rows only.
  """
  n = batch.tokens.shape[0] // 3   # 2B pair rows, then 2B "better" and 2B "worse" rows
  b = n // 2
  mask_NxL = batch.loss_mask[:n].astype(jnp.float32)   # treg_* take float or bool masks
  logps_NxL = update.all_token_logprobs(model, batch.tokens[:n], batch.attention_mask[:n],
                                        chunk_size=chunk_size)
  ref_RxL = batch.extra["ref_token_logps"]
  rewards_NxL = losses.treg_token_rewards(ref_RxL[n:2 * n], ref_RxL[2 * n:3 * n], mask_NxL)
  return losses.treg_loss(
      logps_NxL[:b], logps_NxL[b:], ref_RxL[:b], ref_RxL[b:n], rewards_NxL[:b], rewards_NxL[b:],
      mask_NxL[:b], mask_NxL[b:], beta=beta, alpha=treg_alpha, base="dpo",
      token_reduction=treg_token_reduction)


DNO_REWARDS = ("chosen_reward", "rejected_reward")   # record fields of a DNO annotation stage


def dno_rewards_stage(arrays, extra, items, *, setup, options, rng):
  """DNO's optional rewards r_t of each row's response, `extra["reward"]` [2B].

  Records with `chosen_reward` and `rejected_reward` (a DNO annotation stage) keep theirs.
  With `dno_win_rates` on the built-in task, r_t is each response's win rate among the N
  responses of its question (`losses.win_rate_rewards` of `preference_data.dno_preferences`,
  the graded verifier as the preference oracle). Otherwise no rewards: hard labels (DNO-Prct).
  """
  del rng
  if items and all(n in it for it in items for n in DNO_REWARDS):
    reward = [float(it["chosen_reward"]) for it in items] + [float(it["rejected_reward"])
                                                             for it in items]
    return arrays, dict(extra, reward=np.asarray(reward, np.float32))
  if not options.dno_win_rates:
    return arrays, extra
  prefs = preference_data.dno_preferences(items, options.responses_per_question,
                                          fmt=setup.data.fmt)
  rates_BxN = np.asarray(jax.device_get(losses.win_rate_rewards(jax.device_put(prefs))))
  # Chosen responses sit at index 0 of each question's set, rejected ones at index 1.
  return arrays, dict(extra, reward=np.concatenate([rates_BxN[:, 0], rates_BxN[:, 1]]))


def dno_objective(model, batch, *, beta: float, chunk_size: int = 1024):
  """`losses.dno_loss` (eta = beta) against the reference, which in a one-round run is the
  previous iterate pi_t; soft labels sig(r_w - r_l) when the batch has `extra["reward"]`."""
  logps_R, _ = _pair_logps(model, batch, batch.tokens.shape[0], chunk_size)
  (logps_w, logps_l), (ref_w, ref_l) = _split(logps_R), _split(batch.ref_logps)
  reward_w, reward_l = _split(batch.extra["reward"]) if "reward" in batch.extra else (None, None)
  return losses.dno_loss(logps_w, logps_l, ref_w, ref_l, beta=beta, chosen_rewards=reward_w,
                         rejected_rewards=reward_l)


def sspo_rows(arrays, extra, items, *, setup, options, rng):
  """SPO's degraded rows [2B, 4B): chosen, rejected with k answer digits removed; label k.

  On the arithmetic task the key content of a response is the digits of its answer. Per row
  [4B]: `sspo_labels` (k of each degraded row; 0 on the pair rows, which the loss never reads)
  and `sspo_class_ids` [4B, K+1], the token ids of the K+1 class labels
  (`preference_data.CLASS_LABELS`: characters the task never writes).
  """
  k_max = options.sspo_max_removed
  chosen, rejected, labels = preference_data.degrade_pairs(items, k_max, _host_rng(rng))
  rows = _append_rows(arrays, _rows(setup, _texts(items, "prompt"), chosen, rejected),
                      pad_id=tokenizers.pad_token_id(setup.tokenizer))
  class_ids = preference_data.class_token_ids(setup.tokenizer, k_max)
  extra = dict(extra, sspo_labels=np.concatenate([np.zeros_like(labels), labels]),
               sspo_class_ids=np.tile(class_ids[None], (rows["tokens"].shape[0], 1)))
  return rows, extra


def degree_logits(model, tokens, attention_mask, class_ids):
  """SPO's preference-degree logits [R, K+1], read from the language-model head.

  The logits of the next token after each row's last real token (its EOS), at the K+1 class
  labels (`class_ids`: characters the task never writes): the degree classifier W of the
  paper is those rows of the LM head, with no new parameters, in a slot the LM never generates
  from (after EOS). (Digits as labels would share W with the answers' digits: with lambda 1
  that cost 11.6 points of held-out accuracy against DPO in `configs/sspo.py`.)
  """
  hidden_RxLxD, _ = model.hidden_states(tokens, attention_mask=attention_mask)
  rows = tokens.shape[0]
  # Rows are [left pad | prompt | completion | right pad]: the last 1 of the mask is the EOS.
  last_R = tokens.shape[1] - 1 - jnp.argmax(attention_mask[:, ::-1], axis=1)
  hidden_RxD = hidden_RxLxD[jnp.arange(rows), last_R]
  logits_RxV = model.logits(hidden_RxD[:, None, :])[:, 0]   # float32
  return jnp.take_along_axis(logits_RxV, class_ids, axis=1)


def sspo_objective(model, batch, *, beta: float, sspo_weight: float, chunk_size: int = 1024):
  """DPO sigmoid loss + sspo_weight * `losses.spo_ssl_loss` on the degraded rows.

    L = L_DPO + lambda L_SSL,  L_SSL = -mean_r log softmax(degree_logits_r)[k_r]
  """
  n = batch.tokens.shape[0] // 2   # 2B pair rows, then 2B degraded rows
  logps_N, _ = _pair_logps(model, batch, n, chunk_size)
  (logps_w, logps_l), (ref_w, ref_l) = _split(logps_N), _split(batch.ref_logps[:n])
  pair_loss, metrics = losses.dpo_loss(logps_w, logps_l, ref_w, ref_l, beta=beta,
                                       loss_type="sigmoid")
  class_logits = degree_logits(model, batch.tokens[n:], batch.attention_mask[n:],
                               batch.extra["sspo_class_ids"][n:])
  ssl_loss, ssl_metrics = losses.spo_ssl_loss(class_logits, batch.extra["sspo_labels"][n:])
  return pair_loss + sspo_weight * ssl_loss, {**metrics, **ssl_metrics}


OBJECTIVES = {name: _dpo(name) for name in losses.DPO_LOSS_TYPES}
OBJECTIVES.update(
    simpo=Objective(simpo_objective, hparams=("beta", "simpo_gamma", "label_smoothing"),
                    records="pairs", uses_ref=False),
    orpo=Objective(orpo_objective, hparams=("beta",), records="pairs", uses_ref=False),
    kto=Objective(kto_objective, hparams=("beta", "desirable_weight", "undesirable_weight"),
                  records="pairs", prepare=kto_rows, rows_per_record=4),
    cream=Objective(
        cream_objective, hparams=("beta",), records="pairs", prepare=cream_consistency_stage,
        needs={"consistency": "the records' 'consistency' field (CREAM's ranking stage) or, on "
                              "the built-in task, cream_consistency_stage"}),
    treg=Objective(
        treg_objective, hparams=("beta", "treg_alpha", "treg_token_reduction"),
        records="pairs", prepare=treg_rows, rows_per_record=6,
        needs={"ref_token_logps": "the reference scorer's per-token pass over every row "
                                  "(preference.py)"}),
    dno=Objective(dno_objective, hparams=("beta",), records="pairs", prepare=dno_rewards_stage),
    sspo=Objective(sspo_objective, hparams=("beta", "sspo_weight"), records="pairs",
                   prepare=sspo_rows, rows_per_record=4,
                   needs={"sspo_labels": "sspo_rows", "sspo_class_ids": "sspo_rows"}),
)
