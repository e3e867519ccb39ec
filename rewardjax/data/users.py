"""Annotator users who disagree: the built-in task's preference pairs labelled by typed users.

VPL (Poddar et al., arXiv 2408.10075 §3) models preferences that depend on a hidden user type.
Here two users label comparisons of responses to the same arithmetic question (format "short",
prompt "47-8="):

    bare     "39"                 the answer alone
    worked   "47-8=39\\n39"        the working line, then the answer

Both users put a correct response above a wrong one (they agree on correctness); among two
responses of equal correctness, "concise" prefers the bare one and "working" the worked one
(they disagree on style). A *style pair* compares the two correct responses, so its label
depends on the user; a *correctness pair* compares a correct and a wrong response, each in a
random style, and every user labels it the same way.

A record is a target comparison of one user plus that user's context set ("survey", VPL §4.1)
of C = `context_size` labelled comparisons on other questions of the same split:

    {"prompt", "chosen", "rejected", "user", "style", "answer",
     "context": [{"prompt", "chosen", "rejected", "style"}] * C}

"user" indexes USERS; "style" is 1 for a style pair, 0 for a correctness pair.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from rewardjax.data import tasks

USERS = ("concise", "working")


@dataclasses.dataclass(frozen=True)
class UserPairOptions:
  """How the user-labelled records are drawn."""
  context_size: int = 8          # C, labelled comparisons per context set (VPL's survey: 8)
  style_fraction: float = 0.5    # probability that a comparison is a style pair
  seed: int = 0


def worked(question: str, value: int | str) -> str:
  """The response that shows its working: "47-8=39\\n39"."""
  return f"{question}={value}\n{value}"


def prefers(user: str, a: tuple[bool, bool], b: tuple[bool, bool]) -> bool:
  """Whether `user` prefers response a over b, each given as (correct, worked).

  Correctness first (both users), then style: "working" prefers worked, "concise" bare.

  >>> bare, worked_out = (True, False), (True, True)
  >>> prefers("concise", bare, worked_out), prefers("working", bare, worked_out)
  (True, False)
  >>> prefers("concise", (True, True), (False, False))   # correct beats wrong for every user
  True
  """
  if a[0] != b[0]:
    return a[0]
  return a[1] != b[1] and a[1] == (user == "working")


def comparison(item: dict, user: str, rng: np.random.Generator, *, style: bool) -> dict:
  """One comparison on `item` labelled by `user`: {"prompt", "chosen", "rejected", "style"}.

  A style pair compares the bare and the worked correct response; a correctness pair compares
  the correct answer with a plausible wrong one (`tasks.wrong_answers`), each written bare or
  worked with probability 1/2.
  """
  question, value = item["question"], int(item["answer"])
  if style:
    a, b = (True, False), (True, True)
    values = (value, value)
  else:
    a, b = (True, bool(rng.random() < 0.5)), (False, bool(rng.random() < 0.5))
    values = (value, tasks.wrong_answers(value, 1, rng)[0])
  texts = [worked(question, v) if w else str(v) for v, (_, w) in zip(values, (a, b))]
  chosen, rejected = texts if prefers(user, a, b) else texts[::-1]
  return dict(prompt=tasks.FORMATS["short"]["prompt"].format(question=question), chosen=chosen,
              rejected=rejected, style=int(style))


def user_pairs(items: Sequence[dict], options: UserPairOptions, *,
               fmt: str = "short") -> list[dict]:
  """One record per item (module doc): users alternate (record i is USERS[i % 2]), and the
  context set is drawn from the other items (rng default_rng([seed, i, 17]))."""
  if fmt != "short":
    raise ValueError(f"user-labelled pairs write bare and worked answers in format 'short' "
                     f"(got fmt={fmt!r}); set data.fmt='short'")
  if options.context_size < 1:
    raise ValueError(f"context_size must be >= 1, got {options.context_size}")
  records = []
  for i, item in enumerate(items):
    rng = np.random.default_rng([options.seed, i, 17])
    user = USERS[i % len(USERS)]
    target = comparison(item, user, rng, style=bool(rng.random() < options.style_fraction))
    # Other items only (index j >= i shifts up by one); a single item is its own context.
    others = max(len(items) - 1, 1)
    picks = rng.choice(others, options.context_size, replace=others < options.context_size)
    picks = [int(j) + int(len(items) > 1 and j >= i) for j in picks]
    context = [comparison(items[j], user, rng, style=bool(rng.random() < options.style_fraction))
               for j in picks]
    records.append(dict(target, user=USERS.index(user), answer=item["answer"], context=context))
  return records
