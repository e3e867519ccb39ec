"""Process rewards: per-step rewards on multi-step completions, and how to use them safely.

A completion's steps are its lines (`rewardjax.data.steps`); on tokens, step k ends at its
k-th separator token, and the tokens after the last separator (the final answer) belong to no
step. The layout is computed once per batch on the host (`step_layout`) and read by

  prm           a process reward model's step scores p_k = sigmoid(score at step k's end),
                refined by a mechanism (`refine`): "sum" (raw, exploitable), "clip", "delta",
                "clip_delta" (Gao et al., arXiv 2410.15115, §4)
  implicit_prm  OPRL's implicit step reward beta * sum_{t in step k} log pi_phi - log pi_old,
                pi_phi the PRM trained alongside the policy (arXiv 2509.19199, Eq. 4)
  consistency   R1-Reward's consistency term (arXiv 2505.02835 §3.2): verifier x (+1 if the
                final answer agrees with the last reasoning line, -1 if not)

Step terms return `composition.StepRewards`; the advantages stage places them on tokens
(`advantages.process_advantages`, `advantages.combine_step_advantages`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Shaped

from rewardjax import sharding
from rewardjax.data import steps as steps_lib
from rewardjax.data import tokenizers
from rewardjax.rewards import composition, verifiers

MECHANISMS = ("sum", "clip", "delta", "clip_delta")


def step_layout(completion_tokens: np.ndarray, completion_mask: np.ndarray,
                separator_id: int) -> dict:
  """Where each step of each completion is, from its tokens.

  Args:
    completion_tokens: [B, T] sampled ids (right-padded).
    completion_mask: [B, T] 1 on real completion tokens.
    separator_id: the id of the step separator ("\\n").

  Returns:
    {"token_step_ids" [B, T] int32: the step each token belongs to, -1 for the final-answer
     tokens after the last separator and padding; "step_end" [B, T] int32: the token index
     where step k ends (k < number of steps), 0 beyond; "step_mask" [B, T] float32: 1 on real
     steps}. K = T (a step has at least one token). A completion without a separator is one
     step ending at its last token.

  >>> out = step_layout(np.array([[5, 9, 6, 9, 7, 0], [7, 7, 0, 0, 0, 0]]),
  ...                   np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]), separator_id=9)
  >>> ids, ends, mask = out["token_step_ids"], out["step_end"], out["step_mask"]
  >>> ids.tolist(), ends[:, :2].tolist(), mask[:, :2].tolist()
  ([[0, 0, 1, 1, -1, -1], [0, 0, -1, -1, -1, -1]], [[1, 3], [1, 0]], [[1.0, 1.0], [1.0, 0.0]])
  """
  if completion_tokens.shape != completion_mask.shape:
    raise ValueError(f"completion_tokens {completion_tokens.shape} and completion_mask "
                     f"{completion_mask.shape} differ")
  t = completion_tokens.shape[1]
  real = completion_mask > 0
  is_sep = (completion_tokens == separator_id) & real
  # Step id of token j = number of separators strictly before j.
  ids = np.cumsum(is_sep, axis=1) - is_sep
  num_steps = is_sep.sum(axis=1)
  ids = np.where(real & (ids < num_steps[:, None]), ids, -1)
  no_sep = (num_steps == 0) & real.any(axis=1)
  ids[no_sep] = np.where(real[no_sep], 0, -1)
  # Separator positions first, in order (a stable sort of "is not a separator").
  step_end = np.argsort(~is_sep, axis=1, kind="stable")
  last_real = t - 1 - np.argmax(real[:, ::-1], axis=1)
  step_end[no_sep, 0] = last_real[no_sep]
  num_steps = np.where(no_sep, 1, num_steps)
  step_mask = (np.arange(t)[None, :] < num_steps[:, None]).astype(np.float32)
  step_end = np.where(step_mask > 0, step_end, 0).astype(np.int32)
  return {"token_step_ids": ids.astype(np.int32), "step_end": step_end, "step_mask": step_mask}


def separator_id(tokenizer) -> int:
  """The single token id of the step separator, or a ValueError naming the tokenizer."""
  ids = tokenizer(steps_lib.SEPARATOR, add_special_tokens=False)["input_ids"]
  if len(ids) != 1:
    raise ValueError(f"step rewards need the separator {steps_lib.SEPARATOR!r} to be one token; "
                     f"this tokenizer encodes it as {ids}")
  return int(ids[0])


# ---- Clip and Delta (Gao et al., arXiv 2410.15115, §4) ---------------------------------------
def clip_mechanism(step_scores: Float[Array, "B K"], step_mask: Shaped[Array, "B K"], *,
                   eta: float) -> Float[Array, "B K"]:
  """f_clip(p)_k = min(p_k - eta, 0): every step reward <= 0, so extra steps never add return.

  >>> p = jnp.array([[0.9, 0.2, 0.5]])
  >>> [round(float(x), 2) for x in clip_mechanism(p, jnp.ones((1, 3)), eta=0.5)[0]]
  [0.0, -0.3, 0.0]
  """
  return jnp.where(step_mask > 0, jnp.minimum(step_scores - eta, 0.0), 0.0)


def delta_mechanism(step_scores: Float[Array, "B K"],
                    step_mask: Shaped[Array, "B K"]) -> Float[Array, "B K"]:
  """f_delta(p)_k = p_k - p_{k+1} (k < K_b), f_delta(p)_{K_b} = p_{K_b}: the return from step k
  telescopes to p_k, bounded whatever the number of steps.

  >>> p = jnp.array([[0.9, 0.6, 0.8]])
  >>> [round(float(x), 2) for x in delta_mechanism(p, jnp.ones((1, 3)))[0]]
  [0.3, -0.2, 0.8]
  """
  m = step_mask.astype(jnp.float32)
  p = jnp.where(m > 0, step_scores, 0.0)
  next_p = jnp.concatenate([p[:, 1:], jnp.zeros_like(p[:, :1])], axis=1)
  next_m = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  return jnp.where(m > 0, p - next_p * next_m, 0.0)


def refine(step_scores: Float[Array, "B K"], step_mask: Shaped[Array, "B K"], *,
           mechanism: str, eta: float = 0.5) -> Float[Array, "B K"]:
  """The step rewards f(p) of `mechanism` in MECHANISMS; "clip_delta" = delta(clip(p))."""
  if mechanism not in MECHANISMS:
    raise ValueError(f"process reward mechanism {mechanism!r}; valid: {MECHANISMS}")
  if mechanism == "sum":
    return jnp.where(step_mask > 0, step_scores, 0.0)
  if mechanism == "clip":
    return clip_mechanism(step_scores, step_mask, eta=eta)
  if mechanism == "delta":
    return delta_mechanism(step_scores, step_mask)
  return delta_mechanism(clip_mechanism(step_scores, step_mask, eta=eta), step_mask)


# ---- reward terms ----------------------------------------------------------------------------
def _layout(scored: composition.Scored, term: str) -> dict:
  if "step_mask" not in scored.arrays:
    raise ValueError(f"reward term {term!r} needs the step layout of the rollouts, which needs "
                     f"the separator {steps_lib.SEPARATOR!r} to be a single token")
  return scored.arrays


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _position_scores(graphdef, params, tokens, attention_mask):
  """A scalar model's score at every position, [B, L] (a PRM: the head on each hidden state)."""
  model = nnx.merge(graphdef, params)
  hidden, _ = model.backbone.hidden_states(tokens, attention_mask=attention_mask)
  return model.head(hidden)


def _rollout_feed(arrays: dict, mesh):
  attention = np.concatenate([arrays["prompt_mask"], arrays["completion_mask"]], axis=1)
  return sharding.feed((arrays["tokens"], attention.astype(np.int32)), mesh)


def prm_term(options, *, tokenizer, mesh):
  """A PRM's refined step rewards (`refine` with `options.prm_mechanism`, `options.prm_eta`).

  The PRM is a scalar model directory (`models.hf_reward`, the head applied at every position)
  sharing the policy's tokenizer, so it reads the rollout tokens as sampled; p_k is the sigmoid
  of its score at step k's last token. Metrics: mean steps, mean p, repeated-step share.
  """
  from rewardjax import pretrained  # noqa: PLC0415
  from rewardjax.models import hf_reward  # noqa: PLC0415 (safetensors, only when used)
  from rewardjax.rewards import sources  # noqa: PLC0415 (sources registers this term)

  directory = hf_reward.resolve_reward_model_dir(options.prm or pretrained.ARITH_PRM)
  prm_tokenizer = tokenizers.load_tokenizer(directory)
  if prm_tokenizer.get_vocab() != tokenizer.get_vocab():
    raise ValueError(f"the PRM in {directory} has another tokenizer than the policy; a PRM "
                     "reads the rollout tokens as sampled, so the two must share one")
  graphdef, params = sources.place(hf_reward.load_reward_model(directory), mesh)

  def fn(scored: composition.Scored):
    a = _layout(scored, "prm")
    scores_BxL = np.asarray(sharding.gather(_position_scores(graphdef, params,
                                                             *_rollout_feed(a, mesh))))
    prompt_length = a["tokens"].shape[1] - a["completion_mask"].shape[1]
    at_end = np.take_along_axis(scores_BxL, prompt_length + a["step_end"], axis=1)
    p_BxK = 1.0 / (1.0 + np.exp(-at_end.astype(np.float64)))
    rewards = np.asarray(refine(jnp.asarray(p_BxK, jnp.float32), jnp.asarray(a["step_mask"]),
                                mechanism=options.prm_mechanism, eta=options.prm_eta))
    m = a["step_mask"]
    return composition.StepRewards(rewards, m), {
        "steps": float(m.sum(1).mean()), "score": float((p_BxK * m).sum() / max(m.sum(), 1)),
        "repeated_steps": repeated_step_share(scored.texts)}

  return fn


def implicit_prm_term(options, *, mesh):
  """OPRL's step reward r_k = beta * sum_{t in step k} (log pi_phi(y_t) - log pi_old(y_t)).

  pi_phi is `state.companion` (the implicit PRM trained in the same step), read before this
  step's update (OPRL Algorithm 1); pi_old the sampler's log-probs of the rollout.
  """
  from rewardjax.rewards import sources  # noqa: PLC0415

  def fn(scored: composition.Scored):
    a = _layout(scored, "implicit_prm")
    c = scored.state.companion
    phi_BxT, _ = sources.rollout_logps(c.graphdef, c.params, a, mesh)
    diff_BxT = (np.asarray(sharding.gather(phi_BxT)) - a["model_logprobs"]) * a[
        "completion_mask"]
    rewards = options.implicit_prm_beta * step_sums(diff_BxT, a["token_step_ids"])
    m = a["step_mask"]
    return composition.StepRewards(rewards * m, m), {
        "steps": float(m.sum(1).mean()),
        "step_reward": float((rewards * m).sum() / max(m.sum(), 1))}

  return fn


def step_sums(token_values: np.ndarray, token_step_ids: np.ndarray) -> np.ndarray:
  """[B, K=T] sums of token values over each step's tokens (ids -1 belong to no step).

  >>> step_sums(np.array([[1.0, 2.0, 4.0, 8.0]]), np.array([[0, 0, 1, -1]])).tolist()
  [[3.0, 4.0, 0.0, 0.0]]
  """
  b, t = token_values.shape
  out = np.zeros((b, t), np.float64)
  rows = np.broadcast_to(np.arange(b)[:, None], (b, t))
  keep = token_step_ids >= 0
  np.add.at(out, (rows[keep], token_step_ids[keep]), token_values[keep])
  return out.astype(np.float32)


def consistency_term(fmt: str):
  """verifier x consistency: +1 right and consistent, -1 right but the reasoning says otherwise,
  0 when wrong (R1-Reward's R = 0.5 format + acc (1 + 0.5 consistency) is the composition
  "format:0.5,verifier,consistency:0.5")."""
  if fmt != "steps":
    raise ValueError(f"the consistency reward compares the last reasoning line with the final "
                     f"answer, which needs data.fmt='steps' (got {fmt!r})")

  def fn(scored: composition.Scored):
    right = verifiers.verify_batch(scored.texts, [it["answer"] for it in scored.items], fmt)
    consistent = np.array([steps_lib.consistency(t) for t in scored.texts], np.float32)
    return right * consistent, {"consistent": float((consistent > 0).mean())}

  return fn


def repeated_step_share(texts) -> float:
  """Share of step lines that repeat an earlier line of the same completion.

  >>> repeated_step_share(["1+2=3\\n1+2=3\\n3", "1+2=3\\n3"])
  0.3333333333333333
  """
  total = repeated = 0
  for text in texts:
    lines, _ = steps_lib.split_steps(text)
    total += len(lines)
    repeated += len(lines) - len(set(lines))
  return repeated / max(total, 1)
