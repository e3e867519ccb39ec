"""Tests for rewardjax.losses.reward_model (the contrastive objectives: tests/contrastive_test.py).

Every loss is checked against an independent numpy reference written from the formula (loops,
not vectorised JAX), with random masked inputs including fully masked lists; gradients with
`check_grads`; finiteness of value and gradient under jit, vmap and grad when everything is
masked (masked slots hold NaN / -inf); one trace per shape; hand-computed numbers; bad inputs.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_properties import (
  B,
  Case,
  K,
  all_finite,
  harness,
  jit,
  jit_grad,
  list_mask,
  mean_or_zero,
  nls,
  pair_mask,
  scores,
)

from rewardjax.losses import reward_model as rm

LOG2 = float(np.log(2.0))


# ---------------------------------------------------------------- numpy references


def ref_bt(c, r, w, margin=None, eta=None):
  m = np.zeros_like(c) if margin is None else np.broadcast_to(margin, c.shape)
  idx = [i for i in range(len(c)) if w[i]]
  loss = mean_or_zero([nls(c[i] - r[i] - m[i]) for i in idx])
  if eta is not None:
    loss += eta * mean_or_zero([(c[i] + r[i]) ** 2 for i in idx])
  return loss


def ref_k_choose_2(r, ranks, w):
  per_prompt = []
  for b in range(r.shape[0]):
    terms = [nls(r[b, i] - r[b, k]) for i in range(r.shape[1]) for k in range(r.shape[1])
             if w[b, i] and w[b, k] and ranks[b, i] < ranks[b, k]]
    if terms:
      per_prompt.append(np.mean(terms))
  return mean_or_zero(per_prompt)


def ref_plackett_luce(r, ranks, w):
  per_prompt = []
  for b in range(r.shape[0]):
    items = [i for i in range(r.shape[1]) if w[b, i]]
    if len(items) < 2:
      continue
    nll = 0.0
    for i in items:
      risk = [r[b, k] for k in items if ranks[b, k] >= ranks[b, i]]
      nll -= r[b, i] - np.logaddexp.reduce(np.float64(risk))
    per_prompt.append(nll)
  return mean_or_zero(per_prompt)


def ref_win_tie(c, r, tie, w, form, margin, eps, bt_coeff=1.0, tie_coeff=1.0):
  terms = []
  for i in range(len(c)):
    if not w[i]:
      continue
    d = c[i] - r[i]
    if tie[i] and form == "paper":
      terms.append(tie_coeff * (0.5 * nls(d) + 0.5 * nls(-d)))
    elif tie[i]:
      terms.append(tie_coeff * (nls(d - margin) + nls(-d - margin)))
    elif form == "paper":  # μ = 1 − ε, margin on the win term only
      terms.append(bt_coeff * ((1 - eps) * nls(d - margin) + eps * nls(-d)))
    else:
      terms.append(bt_coeff * ((1 - eps) * nls(d - margin) + eps * nls(-d - margin)))
  return mean_or_zero(terms)


def ref_denoised(c, r, mu, w, recipe, alpha, threshold):
  terms = []
  for i in range(len(c)):
    if not w[i]:
      continue
    noisy = mu[i] < threshold
    d, m, a = c[i] - r[i], 0.0, 0.0
    if recipe in ("flip", "flip_margin") and noisy:
      d = -d
    if recipe in ("margin", "soft_label_margin"):
      m = mu[i]
    if recipe == "flip_margin":  # the margin is flipped with the label
      m = -mu[i] if noisy else mu[i]
    if recipe == "soft_label_margin" and noisy:
      a = alpha
    terms.append((1 - a) * nls(d - m) + a * nls(-(d - m)))
  return mean_or_zero(terms)


def ref_pointwise(yes, y, w, no, loss_type, eps):
  terms = []
  for i in range(len(yes)):
    if not w[i]:
      continue
    t = y[i] * (1 - eps) + 0.5 * eps
    if loss_type == "sigmoid":
      z = yes[i] - (0.0 if no is None else no[i])
      terms.append(t * nls(z) + (1 - t) * nls(-z))
    else:
      terms.append(-t * yes[i] - (1 - t) * no[i])
  return mean_or_zero(terms)


def ref_yojo(s, labels, w):
  terms = []
  for b in range(s.shape[0]):
    lab = labels[b]
    if not (0 <= lab < s.shape[1] and w[b, lab]):
      continue
    valid = [s[b, n] for n in range(s.shape[1]) if w[b, n]]
    terms.append(np.logaddexp.reduce(np.float64(valid)) - s[b, lab])
  return mean_or_zero(terms)


# ---------------------------------------------------------------- cases


def make_pairs(rng, degenerate):
  w = pair_mask(rng, degenerate)
  return (scores(rng, B, w, degenerate), scores(rng, B, w, degenerate)), (w,)


def make_lists(rng, degenerate):
  w = list_mask(rng, degenerate)
  ranks = rng.integers(0, 3, size=(B, K)).astype(np.int32)  # ties included
  return (scores(rng, (B, K), w, degenerate),), (ranks, w)


def make_win_tie(rng, degenerate):
  (c, r), (w,) = make_pairs(rng, degenerate)
  return (c, r), ((rng.random(B) < 0.5).astype(np.float32), w)


def make_denoised(rng, degenerate):
  (c, r), (w,) = make_pairs(rng, degenerate)
  return (c, r), (rng.normal(size=B).astype(np.float32), w)


def make_pointwise(rng, degenerate):
  w = pair_mask(rng, degenerate)
  yes = -np.abs(scores(rng, B, w, degenerate)) - 0.1  # log-probs are negative
  no = -np.abs(scores(rng, B, w, degenerate)) - 0.1
  return (yes, no), (rng.random(B).astype(np.float32), w)


def make_yojo(rng, degenerate):
  w = list_mask(rng, degenerate)
  labels = rng.integers(0, K, size=B).astype(np.int32)
  if not degenerate:
    labels[2] = -1  # no valid best response: row dropped
    w[3, labels[3]] = 0.0  # label column masked: row dropped
  return (scores(rng, (B, K), w, degenerate, fill=-np.inf),), (labels, w)


def make_ensemble(rng, degenerate):
  if degenerate:  # every member agrees: zero variance, the sqrt must not see 0
    return (np.ones((3, B), np.float32),), ()
  return (rng.normal(size=(3, B)).astype(np.float32),), ()


CASES = {
  "bradley_terry": Case(
    make_pairs,
    lambda d, x: rm.bradley_terry_loss(*d, margin=0.3 * jnp.abs(d[0]),
                                       center_rewards_coefficient=0.01, mask=x[0]),
    lambda d, x: ref_bt(*d, x[0], margin=0.3 * np.abs(np.nan_to_num(d[0])), eta=0.01)),
  "k_choose_2": Case(make_lists, lambda d, x: rm.k_choose_2_loss(d[0], *x),
                     lambda d, x: ref_k_choose_2(d[0], *x)),
  "plackett_luce": Case(make_lists, lambda d, x: rm.plackett_luce_loss(d[0], *x),
                        lambda d, x: ref_plackett_luce(d[0], *x)),
  "win_tie_paper": Case(
    make_win_tie,
    lambda d, x: rm.win_tie_bradley_terry_loss(*d, *x, margin=0.5, label_smoothing=0.1,
                                               tie_coeff=0.7),
    lambda d, x: ref_win_tie(*d, *x, "paper", 0.5, 0.1, tie_coeff=0.7)),
  "win_tie_code": Case(
    make_win_tie,
    lambda d, x: rm.win_tie_bradley_terry_loss(*d, *x, form="code", margin=3.0,
                                               label_smoothing=0.1, bt_coeff=2.0),
    lambda d, x: ref_win_tie(*d, *x, "code", 3.0, 0.1, bt_coeff=2.0)),
  **{f"denoised_{r}": Case(
    make_denoised,
    lambda d, x, r=r: rm.denoised_bradley_terry_loss(*d, *x, recipe=r, label_smoothing=0.2,
                                                     noise_threshold=0.1),
    lambda d, x, r=r: ref_denoised(*d, *x, r, 0.2, 0.1))
    for r in ("flip", "margin", "flip_margin", "soft_label_margin")},
  "polar": Case(make_pairs, lambda d, x: rm.polar_loss(*d, *x), lambda d, x: ref_bt(*d, x[0])),
  "pointwise_logit": Case(
    make_pointwise,
    lambda d, x: rm.pointwise_binary_loss(d[0], *x, label_smoothing=0.1),
    lambda d, x: ref_pointwise(d[0], *x, None, "sigmoid", 0.1)),
  "pointwise_yes_no": Case(
    make_pointwise, lambda d, x: rm.pointwise_binary_loss(d[0], *x, no_scores=d[1]),
    lambda d, x: ref_pointwise(d[0], *x, d[1], "sigmoid", 0.0)),
  "pointwise_token_ce": Case(
    make_pointwise,
    lambda d, x: rm.pointwise_binary_loss(d[0], *x, no_scores=d[1], loss_type="token_ce",
                                          label_smoothing=0.2),
    lambda d, x: ref_pointwise(d[0], *x, d[1], "token_ce", 0.2)),
  "yojo": Case(make_yojo, lambda d, x: rm.yojo_loss(d[0], *x), lambda d, x: ref_yojo(d[0], *x)),
  "ensemble_strength": Case(
    make_ensemble,
    lambda d, x: (lambda mu, sd: (jnp.sum(mu) + jnp.sum(sd), {}))(
      *rm.ensemble_preference_strength(d[0])),
    lambda d, x: float(np.sum(d[0].mean(0)) + np.sum(d[0].std(0)))),
}


case, test_reference_and_fully_masked_finite_under_jit_vmap_grad_one_trace, test_check_grads = (
    harness(CASES))


# ---------------------------------------------------------------- hand-computed numbers


def test_bt_equal_rewards_is_log2_and_tie_counts_as_wrong():
  loss, m = jit(rm.bradley_terry_loss)(jnp.zeros(3), jnp.zeros(3))
  assert abs(float(loss) - LOG2) < 1e-6 and float(m["accuracy"]) == 0.0


def test_bt_margin_centering_shift_invariance_and_masking():
  bt = jit(rm.bradley_terry_loss, center_rewards_coefficient=0.01)
  c, r, no_margin = jnp.array([1.0, -0.5]), jnp.array([0.0, 0.5]), jnp.zeros(2)
  loss, m = bt(c, r, margin=jnp.ones(2))
  assert abs(float(loss) - (LOG2 + nls(-2.0)) / 2 - 0.005) < 1e-6  # Δ − m = 0, −2; center 0.5
  assert abs(float(m["margin"])) < 1e-6 and float(m["accuracy"]) == 0.5
  assert abs(float(m["center_penalty"]) - 0.5) < 1e-6  # (r_c + r_r)² = 1, 0
  loss, m = bt(c, r, margin=no_margin)
  assert abs(float(loss) - (nls(1.0) + nls(-1.0)) / 2 - 0.005) < 1e-6
  assert float(bt(c, -c, margin=no_margin)[1]["center_penalty"]) == 0.0  # zero when r_c = −r_r
  plain = jit(rm.bradley_terry_loss)
  np.testing.assert_allclose(float(plain(c + 7.0, r + 7.0)[0]), float(plain(c, r)[0]), rtol=1e-6)
  masked, _ = plain(jnp.array([1.0, 9.0]), jnp.array([0.0, -3.0]), mask=jnp.array([True, False]))
  np.testing.assert_allclose(float(masked), nls(1.0), rtol=1e-6)  # masked equals dropped


def test_two_response_lists_reduce_to_bradley_terry():
  c, r = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.1, 0.5, -2.0])
  ranks = jnp.array([[0, 1], [1, 0], [0, 1]])
  first = ranks[:, 0] == 0
  bt, _ = jit(rm.bradley_terry_loss)(jnp.where(first, c, r), jnp.where(first, r, c))
  best = jnp.argmin(ranks, axis=1)  # YOJO's label: index of the best response
  for fn, target in ((rm.k_choose_2_loss, ranks), (rm.plackett_luce_loss, ranks),
                     (rm.yojo_loss, best)):
    listwise, _ = jit(fn)(jnp.stack([c, r], axis=1), target)
    np.testing.assert_allclose(float(listwise), float(bt), rtol=1e-6)


def test_list_padding_equals_shorter_list():
  r = jnp.array([[1.0, 0.2, -0.5, 9.0], [0.0, 0.3, 0.1, -2.0]])
  ranks = jnp.array([[0, 1, 2, 0], [2, 0, 1, 3]])
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 0]])
  for fn in (rm.k_choose_2_loss, rm.plackett_luce_loss):
    padded, _ = jit(fn)(r, ranks, mask)
    np.testing.assert_allclose(float(padded), float(jit(fn)(r[:, :3], ranks[:, :3])[0]), rtol=1e-6)


def test_plackett_luce_is_permutation_invariant_and_pulls_ties_together():
  pl = jit(rm.plackett_luce_loss)
  r, ranks, perm = jnp.array([[1.0, 0.2, -0.5, 0.3]]), jnp.array([[0, 2, 3, 1]]), [3, 1, 0, 2]
  np.testing.assert_allclose(float(pl(r, ranks)[0]), float(pl(r[:, perm], ranks[:, perm])[0]),
                             rtol=1e-6)
  grad = jit_grad(rm.plackett_luce_loss)(jnp.zeros((1, 2)), jnp.array([[0, 0]]))
  np.testing.assert_allclose(grad, 0.0, atol=1e-7)  # Breslow tie term is stationary at Δ = 0


def test_win_tie_forms():
  d, zeros, ones = jnp.linspace(-2.0, 2.0, 5), jnp.zeros(5), jnp.ones(5)
  paper = jax.jit(jax.vmap(lambda x: rm.win_tie_bradley_terry_loss(x[None], x[None] * 0,
                                                                   jnp.ones(1))[0]))
  code = jax.jit(jax.vmap(lambda x: rm.win_tie_bradley_terry_loss(x[None], x[None] * 0,
                                                                  jnp.ones(1), form="code")[0]))
  np.testing.assert_allclose(2 * paper(d), code(d), rtol=1e-6)  # code tie term = 2 × paper's
  grad = jit_grad(rm.win_tie_bradley_terry_loss, form="code", margin=3.0)(
    jnp.zeros(1), jnp.zeros(1), jnp.ones(1))
  np.testing.assert_allclose(grad, 0.0, atol=1e-7)  # tie optimum at Δ = 0 even with a margin
  win, m = jit(rm.win_tie_bradley_terry_loss, margin=0.5)(d, zeros, zeros)
  bt, _ = jit(rm.bradley_terry_loss)(d, zeros, margin=0.5 * ones)
  np.testing.assert_allclose(float(win), float(bt), rtol=1e-6)  # no ties: BT with margin
  assert float(m["tie_fraction"]) == 0.0


def test_denoised_recipes_by_hand():
  c, r, mu = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.5])
  loss, m = jit(rm.denoised_bradley_terry_loss)(c, r, mu)
  # pair 0 is noisy: flipped Δ = 1, margin |μ̂| = 1 -> log 2; pair 1: Δ = 2, margin 0.5.
  np.testing.assert_allclose(float(loss), (LOG2 + nls(1.5)) / 2, rtol=1e-6)
  assert float(m["noisy_fraction"]) == 0.5 and float(m["accuracy"]) == 0.5
  flip, _ = jit(rm.denoised_bradley_terry_loss, recipe="flip")(c, r, jnp.ones(2))
  np.testing.assert_allclose(float(flip), (nls(-1.0) + nls(2.0)) / 2, rtol=1e-6)  # = BT


def test_ensemble_strength_uses_population_std_and_zero_variance_is_safe():
  d = jnp.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
  mu, sd = jit(rm.ensemble_preference_strength)(d)
  np.testing.assert_allclose(mu, [3.0, 2.0])
  np.testing.assert_allclose(sd, [np.sqrt(8.0 / 3.0), 0.0], rtol=1e-6)


def test_unmasked_degenerate_inputs_are_finite():
  big = jnp.array([1e4, -1e4])
  assert all_finite((jit(rm.bradley_terry_loss)(big, -big),
                      jit_grad(rm.bradley_terry_loss)(big, -big)))


def test_pointwise_yes_no_renormalises_over_the_two_tokens():
  yes, no = jnp.log(jnp.array([0.6])), jnp.log(jnp.array([0.2]))
  loss, m = jit(rm.pointwise_binary_loss)(yes, jnp.ones(1), no_scores=no)
  np.testing.assert_allclose(float(loss), -np.log(0.75), rtol=1e-6)  # 0.6 / (0.6 + 0.2)
  np.testing.assert_allclose(float(m["p_yes"]), 0.75, rtol=1e-6)
  loss, _ = jit(rm.pointwise_binary_loss, loss_type="token_ce")(yes, jnp.zeros(1), no_scores=no)
  np.testing.assert_allclose(float(loss), -np.log(0.2), rtol=1e-6)


def test_yojo_ignores_minus_inf_padding():
  s = jnp.array([[0.3, -1.0, -jnp.inf]])
  loss, m = jit(rm.yojo_loss)(s, jnp.array([0]), jnp.array([[1, 1, 0]]))
  np.testing.assert_allclose(float(loss), nls(1.3), rtol=1e-6)
  assert float(m["accuracy"]) == 1.0 and float(m["rejected_rewards"]) == -1.0


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn, kwargs, args", [
  (rm.win_tie_bradley_terry_loss, {"form": "pape"}, (jnp.zeros(2),) * 3),
  (rm.denoised_bradley_terry_loss, {"recipe": "flip+margin"}, (jnp.zeros(2),) * 3),
  (rm.pointwise_binary_loss, {"loss_type": "bce"}, (jnp.zeros(2),) * 2),
])
def test_unknown_option_lists_valid_names(fn, kwargs, args):
  with pytest.raises(ValueError, match="valid names: \\["):
    fn(*args, **kwargs)


def test_token_ce_needs_no_scores():
  with pytest.raises(ValueError, match="no_scores"):
    rm.pointwise_binary_loss(jnp.zeros(2), jnp.ones(2), loss_type="token_ce")


@pytest.mark.parametrize("fn, args, shapes", [
  (rm.bradley_terry_loss, (jnp.zeros(3), jnp.zeros(4)), ("(3,)", "(4,)")),
  (rm.polar_loss, (jnp.zeros(3), jnp.zeros(3), jnp.ones(2)), ("(3,)", "(2,)")),
  (rm.k_choose_2_loss, (jnp.zeros((2, 3)), jnp.zeros((2, 4), jnp.int32)), ("(2, 3)", "(2, 4)")),
  (rm.yojo_loss, (jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32)), ("(3,)", "(2,)")),
])
def test_mismatched_shapes_name_the_shapes(fn, args, shapes):
  # The runtime jaxtyping hook (tests/conftest.py) rejects these first; without it (library
  # users) our own check raises a ValueError that names both shapes.
  with pytest.raises((TypeError, ValueError)):
    fn(*args)
  with pytest.raises(ValueError) as err:
    inspect.unwrap(fn)(*args)
  assert all(s in str(err.value) for s in shapes), str(err.value)
