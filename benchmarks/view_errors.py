"""How correlated are the shipped model's errors on a question and on its analogical rewrite?

Run: `python benchmarks/view_errors.py --style=commute` (CPU; about 20 s). On the held-out
questions of a task level (default: difficulty 6, the 2-digit addition drill of
configs/co_reward.py) and their rewrites (`data.analogies`, `--style`), the shipped model
answers greedily and with G samples at temperature 1; prints accuracy on both views (carry
questions apart), P(x' wrong | x wrong), and for the majority votes of the G samples
(`rewards.votes`) how often the two views agree and how often a wrong vote on x is the same
wrong vote on x'. Co-Reward (arXiv 2508.00410) rewards each view by the other's vote, so it
protects against a confidently wrong vote only as far as these errors are independent.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from rewardjax import pretrained, rollouts  # noqa: E402
from rewardjax.data import analogies, tasks, tokenizers  # noqa: E402
from rewardjax.models import hf  # noqa: E402
from rewardjax.rewards import votes  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--style", default="commute", choices=analogies.STYLES)
  parser.add_argument("--difficulty", type=int, default=6)
  parser.add_argument("--questions", type=int, default=512)
  parser.add_argument("--samples", type=int, default=8)
  args = parser.parse_args()
  tokenizer = tokenizers.load_tokenizer(pretrained.ARITH)
  graphdef, params = nnx.split(hf.from_pretrained(pretrained.ARITH), nnx.Param)
  records = tasks.problems(args.questions, difficulty=args.difficulty, split="heldout")
  pairs, dropped = analogies.pair_records(records, style=args.style)
  truth = [x["answer"] for x, _ in pairs]

  def answers(prompts, samples, temperature):
    tokens, mask = tokenizers.encode_prompts(tokenizer, prompts, bucket=8)
    out = rollouts.generate(
        (graphdef, params), tokens, mask, jax.random.key(0), max_new_tokens=6,
        num_samples=samples,
        decoding=rollouts.Decoding(temperature=temperature, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizers.pad_token_id(tokenizer)))
    texts = tokenizers.decode_completions(tokenizer, np.asarray(out.completion_tokens))
    return votes.extract_answers(texts, "short")

  views = ([x["prompt"] for x, _ in pairs], [y["prompt"] for _, y in pairs])
  greedy_x, greedy_y = (answers(v, 1, 0.0) for v in views)
  carry = np.array([tasks.carry_slip(x["question"], int(x["answer"])) is not None
                    for x, _ in pairs])
  wrong_x = np.array([a != t for a, t in zip(greedy_x, truth)])
  wrong_y = np.array([a != t for a, t in zip(greedy_y, truth)])
  print(f"style={args.style}: {len(pairs)} pairs, {dropped} dropped, {carry.mean():.2f} carry")
  print(f"greedy accuracy x {1 - wrong_x.mean():.3f}, x' {1 - wrong_y.mean():.3f}; on x: carry "
        f"{1 - wrong_x[carry].mean():.3f}, no carry {1 - wrong_x[~carry].mean():.3f}")
  print(f"greedy P(x' wrong | x wrong) {wrong_y[wrong_x].mean():.3f}, "
        f"P(x' wrong | x right) {wrong_y[~wrong_x].mean():.3f}")
  vote_x, vote_y = (votes.group_votes(answers(v, args.samples, 1.0), args.samples)
                    for v in views)
  vw_x = np.array([v != t for v, t in zip(vote_x, truth)])
  vw_y = np.array([v != t for v, t in zip(vote_y, truth)])
  same = np.array([a == b for a, b in zip(vote_x, vote_y)])
  print(f"votes (G={args.samples}, temperature 1): accuracy x {1 - vw_x.mean():.3f}, "
        f"x' {1 - vw_y.mean():.3f}; views agree {same.mean():.3f}; "
        f"P(x' vote wrong | x vote wrong) {vw_y[vw_x].mean():.3f}; "
        f"P(same vote | x vote wrong) {same[vw_x].mean():.3f}")


if __name__ == "__main__":
  main()
