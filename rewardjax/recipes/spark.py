"""SPARK: one model as policy and generative judge, trained on its own recycled rollouts.

Synergistic Policy And Reward Co-Evolving, arXiv 2509.22624 (official code InternLM/Spark
`new_data_gen.py`, `ppo_trainer.py`, `evaluation_tts.py`). Ordinary GRPO with a verifiable
reward runs on task prompts ("infer" period). Its scored rollouts are then recycled (`recycle`,
as the official `new_data_gen.py`) into new prompts whose labels are known from the verifier:

  pointwise  "is this answer correct?"          label Yes/No (or A/B: correct/incorrect)
  pairwise   "which of (A) and (B) is correct?" label the slot of the correct answer
  reflection "here is a (wrong) solution: fix it" label the ground truth

They wait in a FIFO cache; a step whose cache holds a full batch of P items is a "reward"
period that trains on P popped items with the *same* GRPO objective and verifier, and
whose rollouts are not recycled again. There is no separate judge loss: the mix is set by the
counts and probabilities below. `judge_weight` != 1 (an ablation, not in the paper) puts a
"weight" on judge items, which the RL batch (`algorithms.grpo`) multiplies into their
advantages; for the GRPO objective this is exactly a per-row loss weight on the policy term
(the clipped surrogate -min(rho A, clip(rho) A) is positively homogeneous in A; the KL term
keeps weight 1).

Formats. "boxed" (HF models): paper-style instructions, prompts wrapped with the tokenizer's
chat template; a judge reasons, then boxes its verdict, and the last box is read (`\\box{}` and
`\\boxed{}` both verify). "short" (the char-level tiny model): the same parts in a few
dozen characters. A judge writes its working (its own answer) on one line, then a
one-character verdict on the last line, the line that is read (the counterpart of the last
box); the recipe's `reward_fn` scores judge items by it. A char model verifies by re-solving
and comparing, so judge prompts make the comparison positional and written out: the judged
answer, with 3 digits ("041"), is the prompt's last line, right where the judge writes its own
3-digit working, then a check line ("=" where a digit agrees, "x" where not), then the verdict
("ok? Y/N\\nY\\n47-8=\\n041\\n" -> "039\\n=xx\\nN"; pairwise, checked against slot A,
"which?\\n47-8=\\n041\\nA\\n039\\nB\\n" -> "039\\nxxx\\nB"). Every digit compared sits a fixed
number of tokens back: the 0.6M-parameter model learns this; it did not learn to match a
free-width answer shown before the question (teacher-forced verdicts stayed at chance).

Every random choice is drawn from `np.random.default_rng([seed, step])`, and the cache is the
recipe's checkpointed state, so a resumed run recycles and pops exactly as an uninterrupted one.
"""

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

from rewardjax.data import tasks
from rewardjax.recipes import Recipe
from rewardjax.rewards import composition, verifiers

JUDGE_KINDS = ("pointwise", "pairwise")
REFLECTION_KINDS = ("cot_reflection", "answer_reflection")


@dataclasses.dataclass(frozen=True)
class TemplateSet:
  """Instruction tables and prompt bodies of one answer format (structure of the official code
  InternLM/Spark `prompt_templates.py`)."""
  pointwise: tuple[tuple[str, str, str], ...]    # 24 x (instruction, yes label, no label)
  pairwise: tuple[str, ...]                      # 20 instructions; labels are the slots A, B
  cot_reflection: tuple[tuple[str, str], ...]    # 30 x (instruction, content tag): 20 + 10
  answer_reflection: tuple[tuple[str, str], ...]
  pointwise_body: str                            # .format(question=, answer=, yes=)
  pairwise_body: str                             # .format(question=, answer_a=, answer_b=)
  reflection_body: str                           # .format(question=, tag=, content=)


def _short_templates() -> TemplateSet:
  # Reflection prompts end with the task prompt "47-8=", so the model re-solves where it
  # solves tasks. Judge prompts end with the question, then the judged answer(s) as 3-digit
  # lines (the pointwise yes label first, so the verdict's label set is known): the judge's
  # 3-digit working then lines up with them at a fixed offset (a positional comparison a
  # 0.6M-parameter char model learns; with free-width answers before the question it did not).
  # Every prompt of the built-in task fits 32 tokens.
  verbs = ("ok", "right", "true", "valid", "exact", "sound")
  neutral = [f"{a}&{b}" for a in ("check", "see", "judge", "test", "vet")
             for b in ("fix", "redo", "solve", "mend")]
  explicit = [f"{a}! {b}" for a in ("wrong", "bad", "error", "false", "no")
              for b in ("redo", "solve")]
  return TemplateSet(
      pointwise=tuple((f"{v}? {m}", "Y", "N") for v in verbs for m in ("Y/N", "y/n"))
      + tuple((f"{v}? {m}", "A", "B") for v in verbs for m in ("A=y,B=n", "A+ B-")),
      pairwise=tuple(f"{v}{m}" for v in ("which", "pick", "best", "right", "true")
                     for m in ("?", ":", "!", ".")),
      cot_reflection=tuple((i, "CoT") for i in neutral) + tuple((i, "BadCoT") for i in explicit),
      answer_reflection=tuple((i, "Ans") for i in neutral)
      + tuple((i, "BadAns") for i in explicit),
      pointwise_body="\n{yes}\n{question}=\n{answer}\n",
      pairwise_body="\n{question}=\n{answer_a}\nA\n{answer_b}\nB\n",
      reflection_body="\n{tag}:{content}\n{question}=")


def _boxed_templates() -> TemplateSet:
  leads = ("Please judge whether the answer to the question below is correct.",
           "Verify the following answer to the question.",
           "You are a careful grader. Decide whether the given answer is correct.",
           "Check the answer below against the question.")
  yes_no = ("Reason step by step, then answer Yes or No and put it in \\box{}.",
            "Think it through, then give your verdict (Yes or No) within \\boxed{}.",
            "Explain briefly and finish with \\boxed{Yes} if it is correct, else \\boxed{No}.")
  a_b = ("Reason step by step, then answer A (correct) or B (incorrect) in \\box{}.",
         "Think it through, then choose A: correct or B: incorrect within \\boxed{}.",
         "Explain briefly and finish with \\boxed{A} if it is correct, else \\boxed{B}.")
  pair_leads = ("Compare the two answers (A) and (B) to the question below.",
                "Exactly one of the answers (A) and (B) is correct.",
                "You are a careful grader. Two candidate answers are given.",
                "Read the question and the two answers (A) and (B).",
                "Decide which answer to the question is correct.")
  pair_ends = ("Reason step by step, then put the letter of the correct one in \\box{}.",
               "Think it through, then give A or B within \\boxed{}.",
               "Which one is correct? Finish with \\boxed{A} or \\boxed{B}.",
               "Explain briefly and box the letter (A or B) of the correct answer.")
  checks = ("Judge whether the solution below is correct.",
            "Review the provided solution to the question step by step.",
            "Verify the following solution carefully.",
            "Check the reasoning and the final answer below.",
            "Examine this attempt at the question.")
  fixes = ("If it is correct, confirm it; otherwise fix it.",
           "If it is right, restate its answer; if not, correct the mistakes.",
           "Keep it if it is correct, otherwise solve the question again.",
           "Confirm a correct answer or give the corrected one.")
  warnings = ("The following solution is incorrect.", "This attempt contains an error.",
              "The answer below is wrong.", "Do not trust the solution below: it is incorrect.",
              "The provided answer is not correct.")
  redo = ("Ignore it and solve the question from scratch.",
          "Do not follow it; solve the question again.")
  neutral = [f"{c} {f}" for c in checks for f in fixes]
  explicit = [f"{w} {r}" for w in warnings for r in redo]
  return TemplateSet(
      pointwise=tuple((f"{lead} {end}", "Yes", "No") for lead in leads for end in yes_no)
      + tuple((f"{lead} {end}", "A", "B") for lead in leads for end in a_b),
      pairwise=tuple(f"{lead} {end}" for lead in pair_leads for end in pair_ends),
      cot_reflection=tuple((s, ("Provided CoT:", "CoT:")[i % 2]) for i, s in enumerate(neutral))
      + tuple((s, "Incorrect CoT:") for s in explicit),
      answer_reflection=tuple((s, "Answer:") for s in neutral)
      + tuple((s, "Incorrect Answer:") for s in explicit),
      pointwise_body="\n\n<Questions>:\n{question}\n\n<Answers>:\n{answer}\n\n<Judgements>:",
      pairwise_body=("\n\n<Questions>:\n{question}\n\n(A) {answer_a}\n(B) {answer_b}"
                     "\n\n<Judgement>:"),
      reflection_body="\n\nQuestion:\n{question}\n\n{tag}\n{content}\n\n"
      + tasks.BOXED_INSTRUCTION)


TEMPLATES = {"short": _short_templates(), "boxed": _boxed_templates()}
SHORT_WIDTH = 3   # digits of a judged answer and of a judge's working, "short" format
# The test-time loop (official code InternLM/Spark `evaluation_tts.py`) judges with pointwise
# template #1 (a Yes/No one) and revises with the first explicit "this answer is incorrect, solve
# again" template.
TEST_TIME_JUDGE, TEST_TIME_REVISE = 0, 20


def _identity(text: str) -> str:
  return text


@dataclasses.dataclass(frozen=True)
class Formatter:
  """Renders SPARK prompts for one answer format; `wrap` applies a chat template."""
  fmt: str
  wrap: Callable[[str], str] = _identity     # user message -> model prompt
  unwrap: Callable[[str], str] = _identity   # model prompt -> user message

  def __post_init__(self):
    if self.fmt not in TEMPLATES:
      raise ValueError(f"unknown answer format {self.fmt!r}; valid formats: {tuple(TEMPLATES)}")

  @property
  def templates(self) -> TemplateSet:
    return TEMPLATES[self.fmt]

  def question(self, item: dict) -> str:
    """The question text of a task item, without the answer instruction (as `new_data_gen.py`)."""
    if self.fmt == "short":
      return item["question"]
    text = self.unwrap(item["prompt"])
    return text.replace(tasks.BOXED_INSTRUCTION, "").strip()

  def target(self, label: str) -> str:
    """The verdict part of a judge completion stating `label`: "Y", or "\\boxed{Yes}"."""
    return label if self.fmt == "short" else f"\\boxed{{{label}}}"

  def split_verdict(self, text: str) -> tuple[str, str]:
    """(reasoning, verdict) of a judge completion: the verdict is the last line ("short") or
    starts at the last box ("boxed"), as the answer of a boxed completion is its last box.

    >>> Formatter("short").split_verdict("39\\nN"), Formatter("short").split_verdict("Y")
    (('39\\n', 'N'), ('', 'Y'))
    """
    if self.fmt == "short":
      cut = text.rstrip().rfind("\n") + 1
    else:
      cut = text.rfind("\\box")  # "\\box{" and "\\boxed{" (verifiers.extract_boxed)
      cut = len(text) if cut < 0 else cut
    return text[:cut], text[cut:]

  def shown(self, answer: str) -> str:
    """An answer as a judge prompt shows it and a judge works it out: "short" integers with
    `SHORT_WIDTH` digits ("41" -> "041"), anything else as is.

    >>> [Formatter("short").shown(a) for a in ("41", "-5", "--83", "4a")]
    ['041', '-05', '--83', '4a']
    """
    if self.fmt == "short" and re.fullmatch(r"-?[0-9]+", answer):
      return f"{int(answer):0{SHORT_WIDTH}d}"
    return answer

  def check_line(self, working: str, compared: str) -> str:
    """The "short" judge's digit-by-digit check of its working against a judged answer: "="
    where the characters agree, "x" where they differ (or one is missing).

    >>> Formatter("short").check_line("039", "041")
    '=xx'
    """
    width = max(len(working), len(compared))
    return "".join("=" if a == b else "x" for a, b in zip(working.ljust(width, " "),
                                                          compared.ljust(width, " ")))

  def judge_completion(self, answer: str, label: str, compared: str) -> str:
    """A judge completion that works the answer out, then states `label` (warm start).

    "short": the working (3 digits), its `check_line` against `compared` (the pointwise
    answer, or the pairwise answer in slot A), then the verdict: "039\\n=xx\\nN".
    """
    if self.fmt == "short":
      working = self.shown(answer)
      return f"{working}\n{self.check_line(working, self.shown(compared))}\n{label}"
    return f"The answer is {answer}. {self.target(label)}"

  def judge_reward(self, text: str, label: str) -> float:
    """1.0 if the verdict of judge completion `text` is `label` (case-insensitive), else 0.

    >>> Formatter("short").judge_reward("39\\ny", "Y"), Formatter("short").judge_reward("Y\\n", "N")
    (1.0, 0.0)
    """
    return verifiers.math_verify(self.split_verdict(text)[1], label, self.fmt)

  def pointwise(self, question: str, answer: str, index: int) -> tuple[str, str, str]:
    """(prompt, yes label, no label) of pointwise template `index`.

    >>> Formatter("short").pointwise("47-8", "41", 0)
    ('ok? Y/N\\nY\\n47-8=\\n041\\n', 'Y', 'N')
    >>> Formatter("short").pointwise("47-8", "39", 12)[1:]
    ('A', 'B')
    """
    instruction, yes, no = self.templates.pointwise[index]
    body = self.templates.pointwise_body.format(question=question, answer=self.shown(answer),
                                                yes=yes)
    return self.wrap(instruction + body), yes, no

  def pairwise(self, question: str, answer_a: str, answer_b: str, index: int) -> str:
    body = self.templates.pairwise_body.format(question=question, answer_a=self.shown(answer_a),
                                               answer_b=self.shown(answer_b))
    return self.wrap(self.templates.pairwise[index] + body)

  def reflection(self, kind: str, question: str, content: str, index: int) -> str:
    instruction, tag = getattr(self.templates, kind)[index]
    body = self.templates.reflection_body.format(question=question, tag=tag, content=content)
    return self.wrap(instruction + body)


def _item(prompt: str, answer: str, question: str, kind: str, weight: float) -> dict:
  item = {"prompt": prompt, "answer": answer, "question": question, "kind": kind}
  if weight != 1.0 and kind in JUDGE_KINDS:
    item["weight"] = weight  # honoured by the RL batch as an advantage scale
  return item


def recycle(records: Sequence[dict], *, group_size: int, formatter: Formatter,
            rng: np.random.Generator, pointwise_prob: float = 0.3,
            judge_weight: float = 1.0, balance_labels: bool = False) -> list[dict]:
  """Judge items then reflection items from one infer step's scored rollouts (SPARK recycling).

  Per prompt with G rollouts (correctness re-verified against the item's answer, so reward
  shaping cannot blur it; answer = `verifiers.extract_answer`, None if absent):
    judge: all correct -> pointwise on rollout 0 (positive); all wrong -> pointwise on a uniform
      wrong rollout with an answer (negative); mixed -> with prob. `pointwise_prob` pointwise on
      a uniform rollout of a class drawn 50/50, else pairwise on a uniform correct and a uniform
      wrong answer, the correct one in slot A w.p. 1/2. Template uniform over 24 (pointwise) or
      20 (pairwise); a wrong class without any extracted answer yields no judge item.
    reflection (>= 1 wrong rollout): prompts in the first half of the batch (p < P // 2) get CoT
      reflection on a uniform wrong rollout's full text, the second half answer reflection on a
      uniform wrong rollout with an answer; template uniform over 30; label the ground truth.
  Each list is capped at P // 2 by a uniform subsample (order kept). `balance_labels` (not in
  the paper; an option for a model that solves most prompts, whose judge items are then mostly
  "correct" and teach a judge to say "correct" to everything) first drops a uniform subset of
  the majority verdict's pointwise items so "correct" and "incorrect" are equally many
  (pairwise items are balanced by their 50/50 slot already).

  Args:
    records: P * G dicts {"item", "text", "reward"}, the G rollouts of a prompt contiguous.
    group_size: G.
    formatter: renders the prompts.
    rng: the step's generator (`default_rng([seed, step])`); the draws are in prompt order.
    pointwise_prob: probability of a pointwise item for a mixed group (paper 0.3).
    judge_weight: loss weight of judge items (1 = the paper: no weight field).
    balance_labels: equal numbers of "correct" and "incorrect" pointwise items (see above).

  Returns:
    Items {"prompt", "answer", "question", "kind"[, "weight"]}: judge items, then reflection.

  References:
    SPARK, arXiv 2509.22624; official code InternLM/Spark `new_data_gen.py`.

  >>> item = {"prompt": "3+4=", "answer": "7", "question": "3+4"}
  >>> rollouts = [{"item": item, "text": t, "reward": 0.0} for t in ("7", "8")]
  >>> out = recycle(rollouts * 2, group_size=2, formatter=Formatter("short"),
  ...               rng=np.random.default_rng(0))
  >>> [(it["kind"], it["answer"]) for it in out]  # capped at P // 2 = 1 judge + 1 reflection
  [('pointwise', 'B'), ('answer_reflection', '7')]
  """
  if len(records) % group_size:
    raise ValueError(f"{len(records)} records do not split into groups of {group_size}")
  num_prompts = len(records) // group_size
  t = formatter.templates
  judge, reflection = [], []
  for p in range(num_prompts):
    rows = records[p * group_size:(p + 1) * group_size]
    item = rows[0]["item"]
    question, truth = formatter.question(item), item["answer"]
    answers = [verifiers.extract_answer(r["text"], formatter.fmt) for r in rows]
    correct = [verifiers.math_verify(r["text"], truth, formatter.fmt) > 0.5 for r in rows]
    right = [i for i in range(group_size) if correct[i]]
    wrong = [i for i in range(group_size) if not correct[i]]
    wrong_answered = [i for i in wrong if answers[i] is not None]

    def pointwise(i, answers=answers, correct=correct, question=question):
      prompt, yes, no = formatter.pointwise(question, answers[i], int(rng.integers(len(
          t.pointwise))))
      return _item(prompt, yes if correct[i] else no, question, "pointwise", judge_weight)

    if not wrong:
      judge.append(pointwise(0))
    elif not right:
      if wrong_answered:
        judge.append(pointwise(wrong_answered[int(rng.integers(len(wrong_answered)))]))
    elif rng.random() < pointwise_prob:
      pool = right if rng.random() < 0.5 else wrong_answered
      if pool:
        judge.append(pointwise(pool[int(rng.integers(len(pool)))]))
    elif wrong_answered:
      good = answers[right[int(rng.integers(len(right)))]]
      bad = answers[wrong_answered[int(rng.integers(len(wrong_answered)))]]
      first = rng.random() < 0.5  # the correct answer goes to slot A
      prompt = formatter.pairwise(question, *((good, bad) if first else (bad, good)),
                                  int(rng.integers(len(t.pairwise))))
      judge.append(_item(prompt, "A" if first else "B", question, "pairwise", judge_weight))

    cot = p < num_prompts // 2
    pool = wrong if cot else wrong_answered
    if pool:
      i = pool[int(rng.integers(len(pool)))]
      kind = REFLECTION_KINDS[0] if cot else REFLECTION_KINDS[1]
      prompt = formatter.reflection(kind, question, rows[i]["text"] if cot else answers[i],
                                    int(rng.integers(len(t.cot_reflection))))
      reflection.append(_item(prompt, truth, question, kind, judge_weight))
  if balance_labels:
    judge = _balanced(judge, formatter, rng)
  cap = num_prompts // 2
  return _subsample(judge, cap, rng) + _subsample(reflection, cap, rng)


def _balanced(judge: list[dict], formatter: Formatter, rng: np.random.Generator) -> list[dict]:
  """`judge` without a uniform subset of the majority verdict's pointwise items, so both
  verdicts are equally many; pairwise items are kept (order kept)."""
  yes_labels = {yes for _, yes, _ in formatter.templates.pointwise}
  pointwise = [i for i, it in enumerate(judge) if it["kind"] == "pointwise"]
  yes = [i for i in pointwise if judge[i]["answer"] in yes_labels]
  no = [i for i in pointwise if judge[i]["answer"] not in yes_labels]
  keep = set(range(len(judge))) - set(pointwise)
  n = min(len(yes), len(no))
  for group in (yes, no):
    keep |= {group[j] for j in rng.choice(len(group), size=n, replace=False).tolist()}
  return [judge[i] for i in sorted(keep)]


def _subsample(items: list, cap: int, rng: np.random.Generator) -> list:
  if len(items) <= cap:
    return items
  return [items[i] for i in sorted(rng.choice(len(items), size=cap, replace=False).tolist())]


WARMSTART_LABELS = ("random", "true")


def format_warmstart(problems: Sequence[dict], n: int, *, formatter: Formatter, seed: int,
                     labels: str = "random", slip_rate: float = 0.0) -> list[dict]:
  """`n` supervised examples in the judge and reflection formats, for the warm start.

  SPARK starts from an instruction model that already answers "is this correct? Yes/No" and
  "fix this solution" prompts; a from-scratch char model has never seen them, so its judge
  rollouts would never state a verdict and earn no signal. Kinds cycle pointwise, pairwise,
  pointwise, pairwise, CoT reflection, answer reflection (judging is the format that is new to
  the model; reflecting is solving). A shown answer is correct or (50/50) wrong, never a
  rollout of the model: for a question with a carry or borrow, its `tasks.carry_slip` w.p. 1/2
  (the slip the task demonstrator makes), else one of the four nearest plausible slips of
  `tasks.wrong_answers`. Reflection targets and the judge's working are the ground truth.
  Judge verdicts: labels="random" draws the verdict uniformly, independent of correctness
  (format only); labels="true" states the verdict of the demonstrator's own check: its working
  against the shown answer (the verification an instruction-tuned model brings, learnt here on
  synthetic slips only). With `slip_rate` > 0 the demonstrator's working (and so its check and
  verdict) and its reflection answers make the task demonstrator's carry slip at that rate on
  questions with a carry: a judge exactly as fallible as the solver, which RL can improve.

  Args:
    problems: train-split task records with integer answers ("question", "answer").
    n: number of examples.
    formatter: renders the prompts.
    seed: fixes every draw.
    labels: "random" or "true" (`WARMSTART_LABELS`).
    slip_rate: the demonstrator's carry-slip rate when it works a question out.

  Returns:
    n dicts {"prompt", "completion", "answer"} for the trainer's warm start.
  """
  if labels not in WARMSTART_LABELS:
    raise ValueError(f"labels={labels!r}; valid: {WARMSTART_LABELS}")
  rng = np.random.default_rng([seed, 0x5A4B])
  t, out = formatter.templates, []
  for k in range(n):
    item = problems[int(rng.integers(len(problems)))]
    value = int(item["answer"])
    wrong_answer = tasks.wrong_answers(value, 4, rng)[int(rng.integers(4))]
    slip = tasks.carry_slip(item["question"], value)
    if slip is not None and rng.random() < 0.5:
      wrong_answer = slip
    shown = [str(value), str(wrong_answer)]  # shown[1] is the wrong one
    question = formatter.question(item)
    kind = (JUDGE_KINDS * 2 + REFLECTION_KINDS)[k % 6]
    working = value  # the demonstrator's own answer: its slip too, w.p. slip_rate
    if slip_rate and slip is not None and rng.random() < slip_rate:
      working = slip
    truthful = labels == "true"
    compared = None
    if kind == "pointwise":
      wrong = int(rng.integers(2))
      prompt, yes, no = formatter.pointwise(question, shown[wrong],
                                            int(rng.integers(len(t.pointwise))))
      compared = shown[wrong]
      agrees = int(compared) == working
      label = (yes, no)[(not agrees) if truthful else int(rng.integers(2))]
    elif kind == "pairwise":
      wrong_first = int(rng.integers(2))
      prompt = formatter.pairwise(question, shown[wrong_first], shown[1 - wrong_first],
                                  int(rng.integers(len(t.pairwise))))
      compared = shown[wrong_first]  # slot A
      # The slot whose answer agrees with the working (the correct one when it is right).
      label = "AB"[(int(compared) != working) if truthful else int(rng.integers(2))]
    else:
      prompt = formatter.reflection(kind, question, shown[int(rng.integers(2))],
                                    int(rng.integers(len(t.cot_reflection))))
      label = None
    completion = (tasks.sft_examples([dict(item, answer=str(working))],
                                     fmt=formatter.fmt)[0]["completion"]
                  if label is None else formatter.judge_completion(str(working), label,
                                                                   compared))
    out.append({"prompt": prompt, "completion": completion, "answer": label or item["answer"]})
  return out


class Recycler:
  """SPARK's prompt source: each step trains the stream's task prompts ("infer" period), then,
  when the FIFO cache holds a full batch, P popped judge / reflection items ("reward" period,
  the `followup` named "judge"), as the official training loop (arXiv 2509.22624, InternLM/Spark
  `ppo_trainer.py`): the task step's scored rollouts are recycled (`observe`) before the reward
  step, and reward periods are not recycled again. The cache, the current period and the counts
  are the recipe's checkpointed state.
  """

  def __init__(self, stream, *, formatter: Formatter, group_size: int, seed: int,
               recycle: bool, pointwise_prob: float, judge_weight: float,
               balance_labels: bool = False):
    self.stream, self.formatter, self.group_size, self.seed = stream, formatter, group_size, seed
    self.enabled, self.pointwise_prob, self.judge_weight = recycle, pointwise_prob, judge_weight
    self.balance_labels = balance_labels
    self.load_state({})

  def prompts(self, step: int, round_index: int = 0) -> list[dict]:
    if self.period == [step, "reward"]:
      size = self.stream.batch_size
      popped, self.cache = self.cache[:size], self.cache[size:]
      return popped
    if round_index == 0:
      self.period = [step, "infer"]
      self.counts["infer_steps"] += 1
    return [dict(it, kind="task") for it in self.stream.prompts(step, round_index)]

  def observe(self, rollouts: Sequence[dict], step: int) -> None:
    """Recycles an infer period's rollouts into the cache; reward periods are not recycled."""
    if not self.enabled or self.period != [step, "infer"]:
      return
    new = recycle(rollouts, group_size=self.group_size, formatter=self.formatter,
                  rng=np.random.default_rng([self.seed, step]),
                  pointwise_prob=self.pointwise_prob, judge_weight=self.judge_weight,
                  balance_labels=self.balance_labels)
    for it in new:
      self.counts[it["kind"]] += 1
    self.cache.extend(new)

  def followup(self, step: int) -> str:
    """"judge" after an infer period when the cache holds a full batch, else ""."""
    if (not self.enabled or self.period != [step, "infer"]
        or len(self.cache) < self.stream.batch_size):
      return ""
    self.period = [step, "reward"]
    self.counts["reward_steps"] += 1
    return "judge"

  def state_dict(self) -> dict:
    return {"cache": list(self.cache), "period": list(self.period), "counts": dict(self.counts)}

  def load_state(self, state: dict) -> None:
    self.cache = [dict(it) for it in state.get("cache", [])]
    self.period = list(state.get("period", [-1, ""]))
    self.counts = {k: 0 for k in ("infer_steps", "reward_steps", *JUDGE_KINDS,
                                  *REFLECTION_KINDS)}
    self.counts.update(state.get("counts", {}))


def _chat_formatter(fmt: str, tokenizer_path: str) -> Formatter:
  """A Formatter whose prompts go through the tokenizer's chat template (as the task's do)."""
  from rewardjax.data import loaders, tokenizers  # noqa: PLC0415 (HF presets only)

  tokenizer = tokenizers.load_tokenizer(tokenizer_path)
  sentinel = "\x00SPARK\x00"
  prefix, suffix = loaders.format_prompts(tokenizer, [sentinel])[0].split(sentinel)

  def unwrap(prompt: str) -> str:
    if not (prompt.startswith(prefix) and prompt.endswith(suffix)):
      return prompt
    return prompt[len(prefix):len(prompt) - len(suffix)]

  return Formatter(fmt, wrap=lambda text: prefix + text + suffix, unwrap=unwrap)


def judge_aware_rewards(formatter: Formatter) -> composition.Composition:
  """The verifier, except that a judge item earns 1 when its verdict (after its working) is the
  item's label (one verifiable reward for task, judge and reflection prompts, as the official
  code InternLM/Spark `math_verify_2.py`)."""
  def verifier(scored: composition.Scored) -> np.ndarray:
    out = verifiers.verify_batch(scored.texts, [it["answer"] for it in scored.items],
                                 formatter.fmt).astype(np.float32)
    for i, (it, text) in enumerate(zip(scored.items, scored.texts)):
      if it.get("kind") in JUDGE_KINDS:
        out[i] = formatter.judge_reward(text, it["answer"])
    return out
  return composition.Composition((composition.Term("verifier", verifier),))


def make_recipe(args: dict, *, stream, problems: dict, fmt: str, seed: int,
                rewards=None, tokenizer=None) -> Recipe:
  """SPARK as a `Recipe`: the `Recycler` source, the judge-aware verifier, the warm-start
  formats and `self_reflection.self_judging_eval`.

  Args:
    args: `config.recipe_args` as a dict: recycle (False = the matched GRPO-only baseline),
      pointwise_prob, judge_weight, group_size, format_warmstart (examples added to the warm
      start; 0 = off), format_warmstart_labels, chat_template, tokenizer and checkpoint (HF
      presets), and the sizes read by `self_judging_eval` (eval_problems, eval_samples,
      max_round, max_new_tokens, batch_size, bucket, max_prompt_length).
    stream: the task's prompt source (`recipes.RecordStream`).
    problems: {"train", "heldout"} task records; the warm-start examples are drawn from
      "train", the self-judging evaluation from "heldout".
    fmt: the task's answer format, "short" or "boxed".
    seed: the run seed.
    rewards: the config's `rewards` composition; unused, SPARK's reward is its own
      judge-aware verifier (`judge_aware_rewards`).
    tokenizer: unused (the HF presets load theirs from `args`).
  """
  del rewards, tokenizer
  formatter = (_chat_formatter(fmt, args["tokenizer"] or args["checkpoint"])
               if args["chat_template"] else Formatter(fmt))
  warm = ()
  if args["format_warmstart"]:
    # The warm-start half of the built-in task when there is one (as the SFT stage's).
    warm = tuple(format_warmstart(problems.get("warmstart") or problems["train"],
                                  args["format_warmstart"],
                                  formatter=formatter, seed=seed,
                                  labels=args["format_warmstart_labels"],
                                  slip_rate=args["format_warmstart_slip_rate"]))
  recycler = Recycler(stream, formatter=formatter, group_size=args["group_size"], seed=seed,
                      recycle=args["recycle"], pointwise_prob=args["pointwise_prob"],
                      judge_weight=args["judge_weight"],
                      balance_labels=args["balance_labels"])
  heldout = list(problems.get("heldout", []))[:args["eval_problems"]]

  def evaluate(state, tokenizer):
    if not heldout:
      return {}
    from rewardjax.evaluation import accuracy, self_reflection  # noqa: PLC0415 (pulls in jax)

    out = self_reflection.self_judging_eval(
        state.graphdef, state.params, tokenizer, heldout, formatter=formatter, seed=seed,
        protocol=self_reflection.SelfJudging(
            num_samples=args["eval_samples"], max_round=args["max_round"],
            judge_index=TEST_TIME_JUDGE, revise_index=TEST_TIME_REVISE),
        sizes=accuracy.EvalSizes(
            max_new_tokens=args["max_new_tokens"], batch_size=args["batch_size"],
            bucket=args["bucket"], max_prompt_length=args["max_prompt_length"]))
    return {**out, **{f"spark_{k}": float(v) for k, v in recycler.counts.items()}}

  return Recipe(source=recycler, rewards=judge_aware_rewards(formatter), warmstart_examples=warm,
                evaluate=evaluate)
