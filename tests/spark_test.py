"""SPARK recipe: recycling rules and probabilities, caps, templates, periods, resume, smoke run."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import spark as spark_config
from rewardjax.data import tasks
from rewardjax.recipes import spark
from rewardjax.rewards import verifiers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = spark.Formatter("short")
G = 8


def _group(question: str, answer: str, outcomes: str) -> list[dict]:
  """G rollout records of one prompt; outcomes[j]: "c" correct, "w" wrong, "x" no answer."""
  item = {"prompt": question + "=", "answer": answer, "question": question}
  text = {"c": answer, "w": str(int(answer) + 1), "x": "\n"}
  return [{"item": item, "text": text[o] + ("" if o != "w" else f"\n{j}"), "reward": 0.0}
          for j, o in enumerate(outcomes)]


def _batch(kinds: list[str]) -> list[dict]:
  return [r for p, k in enumerate(kinds) for r in _group(f"{p}+{p}", str(2 * p), k)]


MIXED = "cccwwwww"


def _recycle(records, seed, **kwargs):
  return spark.recycle(records, group_size=G, formatter=SHORT,
                       rng=np.random.default_rng([seed, 0]), **kwargs)


def _within(p_hat: float, p: float, n: int, sigmas: float = 4.0) -> bool:
  return abs(p_hat - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def test_template_tables_have_the_paper_counts():
  for t in spark.TEMPLATES.values():
    labels = [(yes, no) for _, yes, no in t.pointwise]
    assert len(t.pointwise) == 24 and labels.count(labels[0]) == 12   # 12 Y/N + 12 A/B
    assert len(set(labels)) == 2 and len(t.pairwise) == 20
    for table in (t.cot_reflection, t.answer_reflection):
      assert len(table) == 30 and len({tag for _, tag in table[20:]}) == 1  # 10 explicit
    assert len({s for s, *_ in t.pointwise}) == 24 and len(set(t.pairwise)) == 20
  assert spark.TEMPLATES["short"].pointwise[spark.TEST_TIME_JUDGE][1:] == ("Y", "N")
  assert "Bad" in spark.TEMPLATES["short"].answer_reflection[spark.TEST_TIME_REVISE][1]
  assert "Incorrect" in spark.TEMPLATES["boxed"].answer_reflection[spark.TEST_TIME_REVISE][1]


def test_short_prompts_fit_32_tokens_for_the_tiny_model():
  # Longest question of difficulty 1, a 4-character answer: every judge and answer-reflection
  # prompt of the built-in task fits 32 tokens with <bos>.
  q, a, w = "99-99", "-90", "1988"
  t = spark.TEMPLATES["short"]
  lengths = [len(SHORT.pointwise(q, w, i)[0]) for i in range(24)]
  lengths += [len(SHORT.pairwise(q, a, w, i)) for i in range(20)]
  lengths += [len(SHORT.reflection(k, q, w, i)) for k in spark.REFLECTION_KINDS
              for i in range(len(t.cot_reflection))]
  assert max(lengths) <= 31


def test_all_correct_and_all_wrong_groups():
  items = _recycle(_batch(["cccccccc", "wwwwwwww", "xxxxxxxx", "xxxxxxxx", "cccccccc",
                           "xxwxxxxx", "xxxxxxxx", "xxxxxxxx"]), 0)
  judge = [it for it in items if it["kind"] == "pointwise"]
  # all-correct: rollout 0 with a positive label; all-wrong: a negative one on a rollout with
  # an answer; all-unanswered: no judge item.
  assert [it["question"] for it in judge] == ["0+0", "1+1", "4+4", "5+5"]
  assert [it["answer"] in ("Y", "A") for it in judge] == [True, False, True, False]
  # "<instruction>\n<yes label>\n<question>=\n<judged answer, 3 digits>\n"
  assert judge[0]["prompt"].split("\n")[2:] == ["0+0=", "000", ""]
  assert judge[3]["prompt"].split("\n")[2:] == ["5+5=", "011", ""]
  reflection = [it for it in items if it["kind"] in spark.REFLECTION_KINDS]
  # Every group with a wrong rollout; the first half (p < 4) reflects on a full text (even
  # an unanswered one), the second half only on an extracted answer.
  assert [(it["question"], it["kind"], it["answer"]) for it in reflection] == [
      ("1+1", "cot_reflection", "2"), ("2+2", "cot_reflection", "4"),
      ("3+3", "cot_reflection", "6"), ("5+5", "answer_reflection", "10")]
  assert reflection[3]["prompt"].split("\n")[1:] in (["Ans:11", "5+5="], ["BadAns:11", "5+5="])


def test_mixed_group_probabilities_statistically():
  kinds, positive, slot_a, templates = [], [], [], []
  for seed in range(600):
    for it in _recycle(_batch([MIXED] * 4), seed):
      if it["kind"] == "pointwise":
        positive.append(it["answer"] in ("Y", "A"))
        templates.append(it["prompt"].split("\n")[0])
      if it["kind"] in spark.JUDGE_KINDS:
        kinds.append(it["kind"])
      if it["kind"] == "pairwise":
        slot_a.append(it["answer"] == "A")
  n = len(kinds)
  assert n == 600 * 2  # capped at P // 2 = 2 judge items per call
  assert _within(kinds.count("pointwise") / n, 0.3, n)
  assert _within(np.mean(positive), 0.5, len(positive))
  assert _within(np.mean(slot_a), 0.5, len(slot_a))
  counts = np.unique(templates, return_counts=True)[1]
  assert len(counts) == 24  # every pointwise template is drawn; each near 1/24
  assert all(_within(c / len(templates), 1 / 24, len(templates), 5.0) for c in counts)


def test_pairwise_slot_holds_the_correct_answer():
  for seed in range(50):
    for it in _recycle(_batch([MIXED] * 4), seed, pointwise_prob=0.0):
      if it["kind"] == "pairwise":
        correct = SHORT.shown(str(2 * int(it["question"].split("+")[0])))
        assert f"\n{correct}\n{it['answer']}\n" in it["prompt"]
        assert f"\n{it['question']}=\n" in it["prompt"] and it["prompt"].endswith("B\n")


def test_caps_and_order():
  items = _recycle(_batch([MIXED] * 16), 3)
  kinds = [it["kind"] for it in items]
  judge = [k for k in kinds if k in spark.JUDGE_KINDS]
  assert len(judge) == 8 and len(kinds) == 16                    # each capped at P / 2 = 8
  assert kinds[:8] == judge                                      # judge items first
  first_half = {str(p) for p in range(8)}
  for it in items[8:]:  # CoT reflection iff the prompt is in the first half of the batch
    assert (it["question"].split("+")[0] in first_half) == (it["kind"] == "cot_reflection")


def test_judge_weight_marks_only_judge_items():
  items = _recycle(_batch([MIXED] * 4), 0, judge_weight=0.5)
  assert all(it.get("weight") == (0.5 if it["kind"] in spark.JUDGE_KINDS else None)
             for it in items)
  assert all("weight" not in it for it in _recycle(_batch([MIXED] * 4), 0))


@pytest.mark.parametrize("text,label,fmt,want", [
    ("Y", "Y", "short", 1.0), ("y", "Y", "short", 1.0), (" N \n7", "N", "short", 1.0),
    ("Yes", "Y", "short", 0.0), ("N\nY", "Y", "short", 0.0), ("\nY", "Y", "short", 1.0),
    ("B", "A", "short", 0.0),
    ("(A)", "A", "short", 1.0), ("\\box{Yes}", "Yes", "boxed", 1.0),
    ("so \\boxed{ no }.", "No", "boxed", 1.0), ("\\boxed{(B)}", "B", "boxed", 1.0),
    ("\\boxed{A} then \\boxed{B}", "A", "boxed", 0.0), ("\\boxed{Yes", "Yes", "boxed", 0.0),
    ("Yes", "Yes", "boxed", 0.0), ("\\boxed{\\text{Yes}}", "Yes", "boxed", 1.0),
])
def test_verifier_on_judge_labels(text, label, fmt, want):
  assert verifiers.math_verify(text, label, fmt) == want


class _FakeStream:
  """A prompt source of 4 task items per step."""
  batch_size = 4

  def prompts(self, step, round_index=0):
    return [{"prompt": f"{p}+{step}=", "answer": str(p + step), "question": f"{p}+{step}"}
            for p in range(4)]


def _fake_records(items, step):
  """Deterministic rollouts: prompt p of step s is right for rollouts < (p + s) % 5."""
  return [{"item": it, "text": it["answer"] if j < (p + step) % 5 else "0", "reward": 0.0}
          for p, it in enumerate(items) for j in range(G)]


def _drive(recycler, steps):
  """The loop's calls per step: prompts -> observe -> (update) -> followup, until "" ."""
  out = []
  for step in steps:
    while True:
      items = recycler.prompts(step, 0)
      out.append((step, recycler.period[1], [it["prompt"] for it in items]))
      recycler.observe(_fake_records(items, step), step)
      if not recycler.followup(step):
        break
  return out


def _recycler(**kwargs):
  return spark.Recycler(_FakeStream(), formatter=SHORT, group_size=G, seed=1, recycle=True,
                        pointwise_prob=0.3, judge_weight=1.0, **kwargs)


def test_reward_period_follows_the_task_period_and_is_not_recycled():
  recycler = _recycler()
  log = _drive(recycler, range(6))
  assert [s for s, k, _ in log if k == "infer"] == list(range(6))   # every step trains the task
  rewards = [(s, prompts) for s, k, prompts in log if k == "reward"]
  assert rewards and all(log[i - 1][:2] == (s, "infer") for i, (s, k, _) in enumerate(log)
                         if k == "reward")                          # right after its task batch
  assert all(p.endswith("=") and "\n" not in p for p in log[0][2])  # task prompts
  assert all("\n" in p for _, prompts in rewards for p in prompts)  # popped SPARK items
  # Reward periods add nothing: after one, the cache holds less than a batch.
  assert recycler.counts["reward_steps"] == len(rewards)
  assert recycler.counts["infer_steps"] == 6 and len(recycler.cache) < 4 + 4


def test_grpo_only_never_recycles():
  recycler = spark.Recycler(_FakeStream(), formatter=SHORT, group_size=G, seed=1,
                            recycle=False, pointwise_prob=0.3, judge_weight=1.0)
  assert [k for _, k, _ in _drive(recycler, range(4))] == ["infer"] * 4


def test_balanced_labels():
  """With balance_labels the recycled pointwise verdicts are half "correct", half "incorrect"
  (mostly-solved groups make them mostly "correct" otherwise)."""
  yes_labels = {yes for _, yes, _ in SHORT.templates.pointwise}
  counts = {}
  for balance in (False, True):
    yes = no = 0
    for step in range(40):
      items = _FakeStream().prompts(step)
      records = [{"item": it, "text": it["answer"] if j < G - (p == 0) else "0", "reward": 0.0}
                 for p, it in enumerate(items) for j in range(G)]   # 3 of 4 groups all right
      for it in spark.recycle(records, group_size=G, formatter=SHORT,
                              rng=np.random.default_rng(step), balance_labels=balance):
        if it["kind"] == "pointwise":
          yes += it["answer"] in yes_labels
          no += it["answer"] not in yes_labels
    counts[balance] = (yes, no)
  assert counts[False][0] > 2 * counts[False][1]
  assert counts[True][0] == counts[True][1] > 0


def test_resume_is_deterministic():
  full = _recycler()
  log = _drive(full, range(8))
  first = _recycler()
  _drive(first, range(5))
  resumed = _recycler()
  resumed.load_state(json.loads(json.dumps(first.state_dict())))  # the checkpoint's JSON
  assert _drive(resumed, range(5, 8)) == [x for x in log if x[0] >= 5]
  assert resumed.state_dict() == full.state_dict()


@pytest.mark.parametrize("labels,agreement", [("random", 0.5), ("true", 1.0)])
def test_format_warmstart_labels(labels, agreement):
  problems = tasks.problems(200, difficulty=1, seed=0)
  examples = spark.format_warmstart(problems, 400, formatter=SHORT, seed=0, labels=labels)
  pointwise = [e for e in examples if e["prompt"].split("\n")[0] in
               {s for s, *_ in spark.TEMPLATES["short"].pointwise}]
  assert len(pointwise) == 134  # kinds cycle pointwise, pairwise, twice, then the reflections
  truth = {p["question"]: p["answer"] for p in problems}
  # prompt "<instruction>\n<yes label>\n<question>=\n<answer, 3 digits>\n"
  equations = [(e["prompt"].split("\n")[2][:-1], e["prompt"].split("\n")[3])
               for e in pointwise]
  working = [e["completion"].split("\n")[0] for e in pointwise]
  # the judge works the answer out first, with 3 digits
  assert working == [SHORT.shown(truth[q]) for q, _ in equations]
  shown_ok = [answer == SHORT.shown(truth[question]) for question, answer in equations]
  # then checks it digit by digit against the shown answer ("=" same, "x" different)
  checks = [e["completion"].split("\n")[1] for e in pointwise]
  assert checks == [SHORT.check_line(w, a) for w, (_, a) in zip(working, equations)]
  assert [c == "===" for c in checks] == shown_ok
  says_yes = [SHORT.split_verdict(e["completion"])[1] in ("Y", "A") for e in pointwise]
  # "random": the verdict agrees with correctness at chance level; "true": always.
  assert _within(np.mean(np.equal(shown_ok, says_yes)), agreement, len(pointwise))
  pairwise = [e for e in examples if e["prompt"].split("\n")[0] in
              set(spark.TEMPLATES["short"].pairwise)]
  assert len(pairwise) == 134
  # prompt "<instruction>\n<question>=\n<a>\nA\n<b>\nB\n"
  picked_ok = [e["prompt"].split("\n")[2 if SHORT.split_verdict(e["completion"])[1] == "A"
                                      else 4] == SHORT.shown(truth[e["prompt"].split("\n")[1][:-1]])
               for e in pairwise]
  assert _within(np.mean(picked_ok), agreement, len(pairwise))


def test_format_warmstart_shows_the_carry_slip_as_half_the_wrong_answers():
  """Wrong answers shown on carry / borrow questions: the carry slip w.p. 1/2, plus the share of
  nearest-slip draws that happen to equal it."""
  problems = tasks.problems(300, difficulty=1, seed=0)
  truth = {p["question"]: p["answer"] for p in problems}
  examples = spark.format_warmstart(problems, 1800, formatter=SHORT, seed=0, labels="true")
  instructions = {s for s, *_ in spark.TEMPLATES["short"].pointwise}
  is_slip = []
  for e in examples:
    lines = e["prompt"].split("\n")  # "<instruction>\n<yes label>\n<question>=\n<answer>\n"
    if lines[0] not in instructions:
      continue
    question, shown = lines[2][:-1], int(lines[3])
    slip = tasks.carry_slip(question, int(truth[question]))
    if shown != int(truth[question]) and slip is not None:
      is_slip.append(shown == slip)
  assert len(is_slip) > 60
  assert 0.45 < np.mean(is_slip) < 0.8


def test_judge_reward_reads_the_last_line_or_box():
  assert SHORT.judge_reward("39\nN", "N") == 1.0 and SHORT.judge_reward("39\nN", "Y") == 0.0
  assert SHORT.judge_reward("N", "N") == 1.0 and SHORT.judge_reward("39", "N") == 0.0
  boxed = spark.Formatter("boxed")
  assert boxed.judge_reward("39 is right \\box{Yes}", "Yes") == 1.0
  assert boxed.judge_reward("\\boxed{39} so \\boxed{No}", "No") == 1.0
  assert boxed.split_verdict("so \\boxed{B}") == ("so ", "\\boxed{B}")


def test_chat_formatter_round_trip(tmp_path):
  from rewardjax.data import tokenizers

  tok = tokenizers.char_tokenizer()
  tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n"
                       "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
  tok.save_pretrained(str(tmp_path))
  formatter = spark._chat_formatter("boxed", str(tmp_path))
  prompt = formatter.wrap("What is 1+2? " + tasks.BOXED_INSTRUCTION)
  assert prompt.startswith("<user>What") and prompt.endswith("\n<assistant>")
  assert formatter.question({"prompt": prompt}) == "What is 1+2?"
  judge, yes, no = formatter.pointwise("What is 1+2?", "3", 0)
  assert judge.startswith("<user>") and "<Answers>:\n3" in judge and (yes, no) == ("Yes", "No")


def test_smoke_run_through_train(tmp_path):
  from rewardjax import train

  config = spark_config.get_config("smoke")
  config.recipe_args.judge_weight = 0.5  # exercises the per-item weight in the RL batch
  summary = train.run(config, str(tmp_path))
  assert summary["steps"] == 2
  assert summary["final/spark_infer_steps"] == 2   # every step trains on task prompts
  assert summary["final/spark_reward_steps"] <= 2
  # A step's judge period (after its task period) logs its own metrics under "judge/".
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  judged = [line for line in lines if "train/judge/loss" in line]
  assert len(judged) == summary["final/spark_reward_steps"]
  assert all("train/loss" in line for line in judged)
  for key in ("judge_accuracy", "reflection_fix_rate", "self_reflection_accuracy",
              "best_of_n_accuracy"):
    assert f"final/{key}" in summary
  assert 0.0 <= summary["final/self_reflection_accuracy"] <= 1.0
  # launch/eval.py restores the run's last checkpoint and reports the same metric set.
  out = subprocess.run([sys.executable, "launch/eval.py", "--config=configs/spark.py:smoke",
                        f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"evaluating {tmp_path} at step 2" in out.stdout
  with open(tmp_path / "eval_2.json") as f:
    evaluated = json.load(f)
  assert {k for k in summary if k.startswith("final/")} - {"final/steps"} <= {
      f"final/{k}" for k in evaluated}


def test_judge_weight_halves_exactly_the_judge_rows_advantages():
  """The same reward-period batch with judge_weight 1 and 0.5: judge rows' advantages halve,
  reflection rows' are unchanged (the weight is a per-row policy-loss weight). Rewards are
  scripted (alternating 0/1 within every group) so every group has a nonzero advantage."""
  import dataclasses  # noqa: PLC0415

  import jax  # noqa: PLC0415

  from rewardjax import algorithms, train, train_state  # noqa: PLC0415
  from rewardjax.rewards import composition  # noqa: PLC0415

  config = spark_config.get_config("smoke")
  config.train.batch_size = 4
  scripted = composition.Composition((composition.Term(
      "scripted", lambda s: (np.arange(len(s.texts)) % 2).astype(np.float32)),))
  out = {}
  for weight in (1.0, 0.5):
    config.recipe_args.judge_weight = weight
    mesh = train.sharding.make_mesh(-1, 1, 1)
    with jax.set_mesh(mesh):
      job = train.make_job(config, mesh)
      setup = dataclasses.replace(job.setup, recipe=dataclasses.replace(job.recipe,
                                                                        rewards=scripted))
      program = algorithms.get("grpo").build(config.algo, setup)
      state, _ = train_state.create_state(program.model_fn, train.make_optimizer(config.optim, 2),
                                          mesh, jax.random.key(0), with_ref=program.with_ref)
      recycler = job.recipe.source
      items = recycler.stream.prompts(0)
      # Scripted infer-period rollouts (half right, half wrong) fill the cache; the judge
      # period that follows pops it.
      recycler.period = [0, "infer"]
      recycler.observe([{"item": dict(it, kind="task"), "text": it["answer"] if j % 2 else "0",
                         "reward": 0.0} for it in items for j in range(2)], 0)
      recycler.cache = (recycler.cache * 4)[:4]
      kinds = [it["kind"] for it in recycler.cache]
      assert recycler.followup(0) == "judge"
      batch, _ = program.make_batch(state, 0, jax.random.key(3))
      out[weight] = np.asarray(batch.advantages).reshape(4, -1)
  is_judge = np.array([k in spark.JUDGE_KINDS for k in kinds])
  assert is_judge.any() and (~is_judge).any(), kinds
  assert np.abs(out[1.0][is_judge]).min() > 0.1
  np.testing.assert_allclose(out[0.5][is_judge], 0.5 * out[1.0][is_judge], rtol=1e-6)
  np.testing.assert_allclose(out[0.5][~is_judge], out[1.0][~is_judge], rtol=1e-6)


def test_format_warmstart_judge_slips_like_the_solver():
  """With slip_rate, the demonstrator's working on carry questions is its carry slip at that
  rate, and its check line and verdict follow its working (not the truth)."""
  problems = tasks.problems(300, difficulty=1, seed=0)
  truth = {p["question"]: int(p["answer"]) for p in problems}
  examples = spark.format_warmstart(problems, 1200, formatter=SHORT, seed=0, labels="true",
                                    slip_rate=0.5)
  instructions = {s for s, *_ in spark.TEMPLATES["short"].pointwise}
  slipped = []
  for e in examples:
    lines = e["prompt"].split("\n")  # "<instruction>\n<yes label>\n<question>=\n<answer>\n"
    if lines[0] not in instructions:
      continue
    question, shown = lines[2][:-1], lines[3]
    working, check, verdict = e["completion"].split("\n")
    assert check == SHORT.check_line(working, shown)
    assert (verdict in ("Y", "A")) == (check == "===")
    slip = tasks.carry_slip(question, truth[question])
    if slip is not None:
      slipped.append(int(working) == slip)
    else:
      assert int(working) == truth[question]
  assert len(slipped) > 80 and 0.35 < np.mean(slipped) < 0.65
