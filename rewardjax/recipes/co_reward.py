"""Co-Reward / Co-rewarding: label-free RL whose pseudo-labels come from another view.

Co-Reward (arXiv 2508.00410 v1, Eq. 6-8; official code tmlr-group/Co-Reward
`coreward/verl/workers/reward_manager/co_reward.py`) and its later version Co-rewarding
(arXiv 2508.00410 v2-v3; official code tmlr-group/Co-rewarding, `Co-rewarding-I/` and
`Co-rewarding-II/`). No answer label is read: every step's prompts are question / rewrite pairs
(`PairedSource`, rewrites from `data.analogies`), the policy samples G answers for each, and a
rollout is rewarded r_i = 1[ans(y_i) = v and v != ""] (`rewards.votes`) against a pseudo-label v
chosen by `mode`:

  majority_vote  v = the majority of its own group (the self-consistency baseline, TTRL
                 arXiv 2504.16084; the collapse the paper is about: a confident wrong answer
                 rewards itself)
  co_reward      v = the majority of the partner view's group (I: x's rollouts are rewarded by
                 the vote on x' and vice versa, "cross-referring", Eq. 8)
  ema_teacher    v = the majority of G answers the EMA teacher samples for the same question
                 (II: the teacher is the synchronised reference `state.ref_params`, the GRPO
                 algo block's `sync_ref_model`; official `co_rewarding_II.py`)
  combined       v = the majority of G answers the EMA teacher samples for the partner view
                 (III, the v3 abstract's "orthogonally combined version": official
                 Co-rewarding-II with `data.use_aug=True` hands the rephrased batch to the
                 teacher's rollout, `ray_trainer_coreward.py`)
  verifier       the ordinary verifier reward on the same pairs (the with-labels comparator)

Official details kept: exact string match of extracted answers, empty answers never vote,
ties to the first-seen answer (`Counter.most_common`); the teacher samples with the policy's
rollout settings (G samples, same length), and is updated ref <- a * policy + (1 - a) * ref
every step with a cosine-annealed from 0.01 to 1e-5 (`run_corewarding-II.sh`,
`fsdp_vllm.py::update_alpha`); the same reference is the KL anchor. Difference: official III
trains the policy on the originals only (the rewrites go to the teacher alone); here both views
are trained, each rewarded by the teacher's vote on its partner, so every mode sees the same
prompts (for x's rollouts the rule is the official one).

The paired source refuses DAPO dynamic sampling (`resamples = False`): it draws prompts outside
the pairs. Logged: "reward/votes" (the training reward), "reward/votes/dropped_questions"
(training questions without a rewrite, left out), "reward/votes/empty_labels",
"reward/votes/view_agreement" (share of pairs whose two views vote alike: correlated errors show
here), and, with weight 0, "reward/verifier" (sample accuracy against the true labels) and
"reward/pseudo_label" (share of rows whose pseudo-label is the true answer).
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rewardjax import rollouts, sharding
from rewardjax.data import analogies, loaders, tokenizers
from rewardjax.recipes import Recipe, StatelessSource
from rewardjax.rewards import composition, votes

MODES = ("co_reward", "ema_teacher", "combined", "majority_vote", "verifier")
TEACHER_MODES = ("ema_teacher", "combined")
DEFAULTS = dict(mode="co_reward", style="commute", teacher_temperature=1.0)


@dataclasses.dataclass(frozen=True)
class PairedSource(StatelessSource):
  """P = `batch_size` prompts a step: P / 2 training questions, each followed by its rewrite
  (rows p and p ^ 1 are partners), reshuffled every epoch (`loaders.batch_indices`).

  `pairs` are (x, x') records from `analogies.pair_records`; each gets "pair" = its index.
  """
  pairs: Sequence[tuple[dict, dict]]
  batch_size: int
  seed: int
  dropped: int = 0
  resamples = False   # grpo refuses dynamic_sampling with this source

  def prompts(self, step: int, round_index: int = 0) -> list[dict]:
    if round_index:
      raise ValueError("co_reward: the paired source has no extra prompts to resample (DAPO "
                       "dynamic sampling would break the question / rewrite alignment)")
    indices = loaders.batch_indices(len(self.pairs), self.batch_size // 2, seed=self.seed,
                                    step=step)
    return [dict(item, pair=i) for i in indices.tolist() for item in self.pairs[i]]


def check_pairs(items: Sequence[dict], group_size: int) -> int:
  """P, after checking that prompts p and p ^ 1 (rows of G) are the two views of one pair."""
  heads = items[::group_size]
  if len(items) != len(heads) * group_size or len(heads) % 2:
    raise ValueError(f"co_reward: {len(items)} rows are not pairs of groups of {group_size}")
  for p, q in enumerate(votes.partner_index(len(heads)).tolist()):
    a, b = heads[p], heads[q]
    if "pair" not in a or a["pair"] != b["pair"] or a["view"] == b["view"]:
      raise ValueError("co_reward: rows are not aligned (question, rewrite) pairs; the batch "
                       "must come from the recipe's PairedSource, unfiltered and unshuffled")
  return len(heads)


class VoteReward:
  """The vote reward of one `mode` as a reward term: `__call__(scored) -> ([B], metrics)`.

  `pseudo_label_accuracy(scored)` (a weight-0 diagnostic term) reads the labels of the batch
  this term scored last; it must run after it on the same `Scored`.
  """

  def __init__(self, mode: str, *, fmt: str, batch_size: int, dropped: int, tokenizer,
               seed: int, teacher_temperature: float = 1.0):
    if mode not in MODES:
      raise ValueError(f"recipe_args.mode={mode!r}; valid: {MODES}")
    self.mode, self.fmt, self.batch_size, self.dropped = mode, fmt, batch_size, dropped
    self.tokenizer, self.seed, self.temperature = tokenizer, seed, teacher_temperature
    self._last = None

  def teacher_answers(self, scored: composition.Scored, order, group_size: int) -> list[str]:
    """G answers of the teacher (`state.ref_params`) to each prompt of `order` ([P] row-group
    indices), sampled like the policy's (same prompts' tokens, same length)."""
    a, state = scored.arrays, scored.state
    if state.ref_params is None:  # the term is `uses_ref`, so the state carries one
      raise ValueError(f"co_reward mode={self.mode!r} samples the teacher state.ref_params, "
                       "which this state does not carry")
    prompt_length = a["prompt_mask"].shape[1]
    heads = np.arange(0, len(scored.texts), group_size)[order]
    step = int(jax.device_get(state.step))
    rng = jax.random.fold_in(jax.random.key(self.seed + 104_729), step)
    out = rollouts.generate(
        (state.graphdef, state.reference_params()),
        *sharding.feed((np.asarray(a["tokens"])[heads, :prompt_length],
                        np.asarray(a["prompt_mask"])[heads])),
        rng, max_new_tokens=a["completion_tokens"].shape[1], num_samples=group_size,
        decoding=rollouts.Decoding(temperature=self.temperature,
                                   eos_token_id=self.tokenizer.eos_token_id,
                                   pad_token_id=tokenizers.pad_token_id(self.tokenizer)))
    texts = tokenizers.decode_completions(self.tokenizer, sharding.gather(out.completion_tokens))
    return votes.extract_answers(texts, self.fmt)

  def __call__(self, scored: composition.Scored):
    group_size = len(scored.texts) // self.batch_size
    num_prompts = check_pairs(scored.items, group_size)
    partner = votes.partner_index(num_prompts)
    answers = votes.extract_answers(scored.texts, self.fmt)
    own = votes.group_votes(answers, group_size)
    metrics = {"dropped_questions": float(self.dropped),
               "view_agreement": float(np.mean([own[p] != "" and own[p] == own[p ^ 1]
                                                for p in range(0, num_prompts, 2)]))}
    if self.mode in ("majority_vote", "verifier"):
      labels = own
    elif self.mode == "co_reward":
      labels = [own[q] for q in partner.tolist()]
    else:  # the teacher answers the same prompt (II) or its partner (III)
      order = np.arange(num_prompts) if self.mode == "ema_teacher" else partner
      labels = votes.group_votes(self.teacher_answers(scored, order, group_size), group_size)
      metrics["teacher_policy_agreement"] = float(np.mean(
          [v != "" and v == o for v, o in zip(labels, own)]))
    metrics["empty_labels"] = float(np.mean([v == "" for v in labels]))
    self._last = (scored.texts, labels, group_size)  # not the state: it is donated next
    return votes.agreement_rewards(answers, labels, group_size), metrics

  def pseudo_label_accuracy(self, scored: composition.Scored):
    """1 on the rows whose prompt's pseudo-label is the true answer (reads labels: weight 0)."""
    if self._last is None or self._last[0] is not scored.texts:
      raise ValueError("pseudo_label runs after the votes term, on the same batch")
    _, labels, group_size = self._last
    truths = [it["answer"] for it in scored.items[::group_size]]
    right = [float(v != "" and v == str(t)) for v, t in zip(labels, truths)]
    return np.repeat(np.asarray(right, np.float32), group_size)


def make_recipe(args: dict, *, stream, problems: dict, fmt: str, seed: int, rewards,
                tokenizer=None) -> Recipe:
  """Co-Reward as a `Recipe`: the paired source over the stream's questions and the vote
  reward of `args["mode"]` (the config's `rewards`, the verifier, for mode="verifier").

  Args:
    args: `config.recipe_args`: mode (MODES), style (`analogies.STYLES`), teacher_temperature.
    stream: the task's record stream; its `batch_size` (prompts per step) must be even.
    problems: unused (the stream holds the training questions).
    fmt: the answer format.
    seed: the run seed (pair order, teacher sampling).
    rewards: the config's composition, used by mode="verifier".
    tokenizer: decodes the teacher's samples (default: the char tokenizer).
  """
  del problems
  unknown = sorted(set(args) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"recipe_args {unknown} are not options of recipe=co_reward; valid: "
                     f"{sorted(DEFAULTS)}")
  args = {**DEFAULTS, **args}
  if stream.batch_size % 2:
    raise ValueError(f"co_reward: train.batch_size={stream.batch_size} prompts must be even "
                     "(each question comes with its rewrite)")
  if any("question" not in r for r in stream.records[:1]):
    raise ValueError("co_reward rewrites the built-in task's questions (records with a "
                     "'question' field); data.source must be 'arithmetic'")
  pairs, dropped = analogies.pair_records(stream.records, fmt=fmt, style=args["style"])
  if not pairs:
    raise ValueError(f"co_reward: no training question has a {args['style']!r} rewrite")
  source = PairedSource(pairs, stream.batch_size, seed, dropped)
  vote = VoteReward("majority_vote" if args["mode"] == "verifier" else args["mode"], fmt=fmt,
                    batch_size=stream.batch_size, dropped=dropped,
                    tokenizer=tokenizer or tokenizers.char_tokenizer(), seed=seed,
                    teacher_temperature=args["teacher_temperature"])
  diagnostics = (composition.Term("pseudo_label", vote.pseudo_label_accuracy, 0.0),)
  if args["mode"] == "verifier":  # the comparator: labels train; the self-vote is logged
    terms = (*rewards.terms, composition.Term("votes", vote, 0.0), *diagnostics)
  else:  # no label is read: the verifier is logged with weight 0
    # A teacher mode reads the reference: with algo.sync_ref_model it is the EMA teacher,
    # without it the frozen starting policy (an ablation).
    terms = (composition.Term("votes", vote, 1.0, uses_ref=args["mode"] in TEACHER_MODES),
             composition.Term(
        "verifier", composition.verifier(fmt).fn, 0.0), *diagnostics)
  return Recipe(source=source, rewards=composition.Composition(terms))
