"""Tests for rewardjax.data: char tokenizer, padding, built-in tasks, loaders, resumable batches."""

import itertools
import json
import sys
import types
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from rewardjax.data import loaders, tasks, tokenizers
from rewardjax.rewards import verifiers

TEXT = "(12+7)*3 = \\boxed{57}\nYes, A-Z: {x_1} ~!?"


@pytest.fixture(scope="module")
def tok():
  return tokenizers.char_tokenizer()


# --- tokenizers -----------------------------------------------------------------------------


def test_char_tokenizer_one_token_per_char_and_round_trip(tok):
  ids = tok(TEXT, add_special_tokens=False)["input_ids"]
  assert len(ids) == len(TEXT)
  assert tok.decode(ids) == TEXT
  assert tok(TEXT)["input_ids"] == [tok.bos_token_id] + ids
  assert len(tokenizers.CHAR_ALPHABET) == len(set(tokenizers.CHAR_ALPHABET)) == 96
  assert len(tok) == 100 <= 128
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_save_load_round_trip_next_to_a_qwen2_config(tok, tmp_path):
  tok.save_pretrained(tmp_path)
  # A tiny-model checkpoint dir: AutoTokenizer would build a Qwen2Tokenizer from config.json.
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": 128}))
  loaded = tokenizers.load_tokenizer(str(tmp_path))
  assert loaded(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
  assert loaded.decode(loaded(TEXT)["input_ids"], skip_special_tokens=True) == TEXT
  assert (loaded.pad_token_id, loaded.eos_token_id, len(loaded)) == (0, 2, 100)
  assert loaded.padding_side == "left"


def test_load_tokenizer_is_local_only(tmp_path):
  assert len(tokenizers.load_tokenizer("char")) == 100
  with pytest.raises(FileNotFoundError, match="never downloads"):
    tokenizers.load_tokenizer(str(tmp_path / "missing"))


def test_load_tokenizer_names_a_directory_without_tokenizer_files_and_the_fix(tmp_path):
  # An empty dir used to fail inside transformers with a message about sentencepiece.
  fix = (r"point --config\.model\.checkpoint / --config\.model\.tokenizer at a Hugging Face "
         r"model directory.*or leave both empty for the built-in char tokenizer")
  with pytest.raises(FileNotFoundError,
                     match=rf"{tmp_path} holds no tokenizer: none of \['tokenizer\.json', "
                           rf"'tokenizer_config\.json'.*\(files: \[\]\); {fix}"):
    tokenizers.load_tokenizer(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
  with pytest.raises(FileNotFoundError, match=r"\(files: \['config\.json'\]\)"):
    tokenizers.load_tokenizer(str(tmp_path))


def test_check_vocab_names_both_sizes_and_fix(tok):
  tokenizers.check_vocab(tok, 100)
  with pytest.raises(ValueError, match=r"100 tokens.*vocab_size is 99.*vocab_size >= 100"):
    tokenizers.check_vocab(tok, 99)


def test_encode_prompts_left_pads_and_buckets(tok):
  prompts = ["1+2=", "10+20=", "123+4567="]
  tokens, mask = tokenizers.encode_prompts(tok, prompts, bucket=16)
  assert tokens.shape == mask.shape == (3, 16)
  assert tokens.dtype == mask.dtype == np.int32
  for row, m, p in zip(tokens, mask, prompts):
    ids = tok(p)["input_ids"]
    assert m.tolist() == [0] * (16 - len(ids)) + [1] * len(ids)     # padding on the left
    assert row[16 - len(ids):].tolist() == ids
    assert (row[:16 - len(ids)] == 0).all()                           # pad id 0
  # Lengths 5..16 share one shape, 17 moves to the next bucket: few jit recompilations.
  assert tokenizers.encode_prompts(tok, ["1" * 15])[0].shape == (1, 16)
  assert tokenizers.encode_prompts(tok, ["1" * 16])[0].shape == (1, 32)


@pytest.fixture
def warned(monkeypatch):
  """Marks the once-per-process truncation warning as given (restored after the test)."""
  monkeypatch.setattr(tokenizers, "_warned_truncation", True)


def test_encode_prompts_truncates_on_the_left_keeping_bos(tok, warned):
  tokens, mask = tokenizers.encode_prompts(tok, ["123456789+1=", "1+1="], bucket=8,
                                           max_length=6)
  assert tokens.shape == (2, 6) and mask.sum(axis=1).tolist() == [6, 5]
  # bos + the last 5 tokens: the question's end is kept, and so is the first-position BOS.
  assert tokens[0, 0] == tok.bos_token_id
  assert tok.decode(tokens[0], skip_special_tokens=True) == "89+1="
  assert tokens[1, 1:].tolist() == tok("1+1=")["input_ids"]          # short rows are untouched
  # Without a BOS (add_special_tokens=False) the row is just its last max_length tokens.
  plain, _ = tokenizers.encode_prompts(tok, ["123456789+1="], max_length=6,
                                       add_special_tokens=False)
  assert tok.decode(plain[0]) == "789+1="
  one, _ = tokenizers.encode_prompts(tok, ["12"], max_length=1)
  assert one.tolist() == [[tok.convert_tokens_to_ids("2")]]           # no room for BOS + text
  with pytest.raises(ValueError, match="max_length must be >= 1"):
    tokenizers.encode_prompts(tok, ["12"], max_length=0)


def test_truncated_prompts_are_counted_process_wide(tok, warned):
  before = tokenizers.truncated_prompt_count()
  tokenizers.encode_prompts(tok, ["1" * 10, "1+1=", "2" * 7, "3" * 6], max_length=6)
  assert tokenizers.truncated_prompt_count() == before + 3           # 11, 8 and 7 tokens > 6
  tokenizers.encode_prompts(tok, ["1" * 10], max_length=6)
  tokenizers.encode_prompts(tok, ["1" * 10])                          # no limit: nothing cut
  tokenizers.encode_prompts(tok, ["1" * 10], max_length=11)           # fits exactly
  assert tokenizers.truncated_prompt_count() == before + 4


def test_truncation_warns_once_per_process_with_lengths_and_fix(tok, monkeypatch):
  monkeypatch.setattr(tokenizers, "_warned_truncation", False)
  with pytest.warns(UserWarning, match=r"2 of 3 prompts are longer than max_length=8 tokens "
                    r"\(lengths up to 21\).*--config\.data\.max_prompt_length=32") as record:
    tokenizers.encode_prompts(tok, ["1" * 20, "1+1=", "2" * 9], max_length=8)
  assert len(record) == 1
  with warnings.catch_warnings(record=True) as later:
    warnings.simplefilter("always")                                   # would show any repeat
    tokenizers.encode_prompts(tok, ["1" * 20], max_length=8)
    tokenizers.encode_prompts(tok, ["4" * 30], max_length=8)
  assert not [w for w in later if "max_length" in str(w.message)]


def test_completions_encode_decode_round_trip(tok):
  completions = ["19", "-62", "\\boxed{7}"]
  tokens, mask = tokenizers.encode_completions(tok, completions, bucket=8)
  assert tokens.shape == (3, 16)                                      # 9 chars + eos -> 16
  assert mask.sum(axis=1).tolist() == [3, 4, 10]
  assert tokens[0, :3].tolist() == [tok.convert_tokens_to_ids("1"), 13, tok.eos_token_id]
  assert tokenizers.decode_completions(tok, tokens) == completions
  assert tokenizers.decode_completions(tok, jnp.asarray(tokens)) == completions


def test_decode_stops_at_first_eos_pad_or_stop_id(tok):
  one, two, x = (tok.convert_tokens_to_ids(c) for c in "12x")
  tokens = np.array([[one, two, 2, one], [one, 0, two, two], [one, x, two, two]], np.int32)
  assert tokenizers.decode_completions(tok, tokens) == ["12", "1", "1x22"]
  assert tokenizers.decode_completions(tok, tokens, stop_ids=[x])[2] == "1"


def test_pad_falls_back_to_eos():
  no_pad = tokenizers.char_tokenizer()
  no_pad.pad_token = None                                             # Llama-style: no pad token
  assert no_pad.pad_token_id is None and tokenizers.pad_token_id(no_pad) == 2
  tokens, mask = tokenizers.encode_prompts(no_pad, ["1=", "12="], bucket=4)
  assert tokens[0].tolist() == [2, 1, 5, 84] and mask[0].tolist() == [0, 1, 1, 1]


# --- built-in tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", range(len(tasks.LEVELS)))
def test_answers_match_python_arithmetic(difficulty):
  for item in tasks.problems(50, difficulty=difficulty, seed=5):
    assert set(item["question"]) <= set("0123456789+-*()")
    # Independent reference: Python's own parser and precedence rules.
    assert int(item["answer"]) == eval(item["question"])  # noqa: S307 (digits and + - * ( ) only)


def test_problems_are_deterministic_in_seed():
  a = tasks.problems(20, difficulty=3, seed=7)
  assert a == tasks.problems(20, difficulty=3, seed=7)
  assert a != tasks.problems(20, difficulty=3, seed=8)
  assert a[:10] == tasks.problems(10, difficulty=3, seed=7)         # a prefix is stable


def test_train_and_heldout_never_overlap():
  train = {p["question"] for seed in range(3) for fmt in tasks.FORMATS
           for p in tasks.problems(300, difficulty=1, seed=seed, fmt=fmt)}
  heldout = {p["question"] for seed in range(3, 5)
             for p in tasks.problems(100, difficulty=1, seed=seed, split="heldout")}
  assert heldout and not train & heldout
  assert all(tasks.heldout_bucket(q) < 0.1 for q in heldout)
  # The split is by hash, so the held-out share of fresh questions is close to the fraction.
  drawn = {tasks.make_problem(i, difficulty=2, seed=0)[0] for i in range(2000)}
  share = np.mean([tasks.heldout_bucket(q) < 0.1 for q in drawn])
  assert 0.07 < share < 0.13


def test_difficulty_changes_the_distribution():
  def stats(d):
    qs = [p["question"] for p in tasks.problems(300, difficulty=d, seed=0)]
    ops = set("".join(qs)) - set("0123456789")
    answers = [abs(int(p["answer"])) for p in tasks.problems(300, difficulty=d, seed=0)]
    return ops, np.mean([len(q) for q in qs]), np.mean(answers)
  (ops0, len0, ans0), (ops2, len2, ans2) = stats(0), stats(2)
  ops3, ops5 = stats(3)[0], stats(5)[0]
  assert ops0 == {"+"} and ops2 == {"+", "-"}
  assert "*" in ops3 and "(" not in ops3 and {"*", "(", ")"} <= ops5
  assert len0 == 3 and len2 > len0 and ans2 > 10 * ans0
  assert all(int(p["answer"]) <= 18 for p in tasks.problems(200, difficulty=0))


def test_unique_pool_exhaustion_and_bad_options_raise():
  assert len({p["question"] for p in tasks.problems(50, difficulty=0, unique=True)}) == 50
  # Level 0 has 100 questions, about 10 of them held out.
  with pytest.raises(ValueError, match="only .* unique heldout problems at difficulty=0"):
    tasks.problems(20, difficulty=0, split="heldout", unique=True)
  with pytest.raises(ValueError, match=r"difficulty must be in 0\.\.7"):
    tasks.problems(1, difficulty=9)
  with pytest.raises(ValueError, match="valid formats"):
    tasks.problems(1, fmt="latex")


# "steps" works chains of + and - (its own tests: tests/process_rewards_test.py).
@pytest.mark.parametrize("fmt", [f for f in tasks.FORMATS if f != "steps"])
def test_sft_targets_and_preferences_verify(fmt):
  items = tasks.problems(40, difficulty=4, seed=1, fmt=fmt)
  sft = tasks.sft_examples(items, fmt=fmt)
  assert [s["prompt"] for s in sft] == [p["prompt"] for p in items]
  assert all(verifiers.math_verify(s["completion"], s["answer"], fmt) == 1.0 for s in sft)
  assert all(verifiers.format_reward(s["completion"], fmt) == 1.0 for s in sft)
  pairs = tasks.preference_pairs(items, fmt=fmt, seed=2)
  assert pairs == tasks.preference_pairs(items, fmt=fmt, seed=2)
  for pair in pairs:
    assert verifiers.math_verify(pair["chosen"], pair["answer"], fmt) == 1.0
    assert verifiers.math_verify(pair["rejected"], pair["answer"], fmt) == 0.0
    assert verifiers.format_reward(pair["rejected"], fmt) == 1.0       # wrong, not malformed
  if fmt == "short":
    assert items[0]["prompt"].endswith("=") and len(items[0]["prompt"]) < 16


def test_several_pairs_per_question_have_distinct_wrong_answers():
  items = tasks.problems(30, difficulty=1, seed=4)
  pairs = tasks.preference_pairs(items, seed=5, pairs_per_question=3)
  assert len(pairs) == 3 * len(items)
  for i, it in enumerate(items):
    group = pairs[3 * i:3 * i + 3]
    assert {p["chosen"] for p in group} == {str(it["answer"])}
    assert len({p["rejected"] for p in group}) == 3 and str(it["answer"]) not in {
        p["rejected"] for p in group}
  with pytest.raises(ValueError, match="pairs_per_question"):
    tasks.preference_pairs(items, pairs_per_question=0)


def test_ranked_lists_best_first_without_ties():
  items = tasks.problems(30, difficulty=2, seed=3)
  for r in tasks.ranked_responses(items, k=5, seed=0):
    assert len(r["responses"]) == len(set(r["responses"])) == 5
    rewards = [verifiers.math_verify(x, r["answer"], "short") for x in r["responses"]]
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert r["scores"][0] == 1.0 and all(np.diff(r["scores"]) < 0)
    errors = [abs(int(x) - int(r["answer"])) for x in r["responses"]]
    assert r["scores"] == [1.0 / (1.0 + e) for e in errors]


def test_wrong_answers_are_distinct_and_wrong():
  rng = np.random.default_rng(0)
  for value in (0, 1, -5, 9, 14, 999, -1000):
    wrong = tasks.wrong_answers(value, 8, rng)
    distances = [abs(w - value) for w in wrong]
    assert value not in wrong and len(set(distances)) == 8 and distances == sorted(distances)


# --- loaders ----------------------------------------------------------------------------------


def _write_jsonl(path, rows):
  path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
  return path


def test_load_jsonl_records(tmp_path):
  path = _write_jsonl(tmp_path / "train.jsonl", [
      {"question": "1+2=", "answer": 3, "id": 0}, "", {"question": "2*3=", "answer": "6"}])
  rows = loaders.load_jsonl(path, field_map={"question": "prompt"})
  assert rows == [{"prompt": "1+2=", "answer": "3", "id": 0}, {"prompt": "2*3=", "answer": "6"}]
  chat = _write_jsonl(tmp_path / "chat.jsonl", [
      {"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}])
  assert loaders.load_jsonl(chat, kind="preference")[0]["chosen"] == "a"


@pytest.mark.parametrize("rows, kind, pattern", [
    ([{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2="}], "answer",
     r"bad\.jsonl, line 2: missing field 'answer'"),
    ([{"prompt": "a", "answer": "1"}, "", {"prompt": "  ", "answer": "2"}], "answer",
     r"bad\.jsonl, line 3: field 'prompt' is empty"),
    ([{"prompt": "p", "chosen": "c"}], "preference",
     r"bad\.jsonl, line 1: missing field 'rejected'"),
    ([{"prompt": "p", "chosen": "c", "rejected": ""}], "preference",
     r"bad\.jsonl, line 1: field 'rejected' is empty"),
    ([{"prompt": "p", "answer": "1"}, '{"prompt": "p",'], "answer",
     r"bad\.jsonl, line 2: invalid JSON"),
    (["[", {"prompt": "p", "answer": "1"}, "]"], "answer",
     r"bad\.jsonl, line 1: invalid JSON .*one complete JSON object per line"),
    ([{"prompt": 5, "answer": "1"}], "answer",
     r"bad\.jsonl, line 1: field 'prompt' must be a string or a list of messages, got int"),
    ([["p", "1"]], "answer", r"bad\.jsonl, line 1: expected an object"),
])
def test_load_jsonl_errors_name_file_line_and_field(tmp_path, rows, kind, pattern):
  path = _write_jsonl(tmp_path / "bad.jsonl", rows)
  with pytest.raises(ValueError, match=pattern) as e:
    loaders.load_jsonl(path, kind=kind)
  assert str(tmp_path) in str(e.value)


def test_load_jsonl_names_non_utf8_line_and_the_fix(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes(b'{"prompt": "1+1=", "answer": "2"}\n\n'
                   + '{"prompt": "café 1+2=", "answer": "3"}\n'.encode("latin-1"))
  with pytest.raises(ValueError, match=rf"{path}, line 3: byte 0xe9 .* is not UTF-8; "
                                       r"re-encode the file as UTF-8"):
    loaders.load_jsonl(path)
  # A UTF-8 byte-order mark (some editors write one) is not an error.
  path.write_bytes(b"\xef\xbb\xbf" + '{"prompt": "café", "answer": "1"}\n'.encode())
  assert loaders.load_jsonl(path) == [{"prompt": "café", "answer": "1"}]


def test_load_jsonl_rejects_unknown_kind_and_empty_file(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p"}])
  with pytest.raises(ValueError, match="valid kinds.*preference"):
    loaders.load_jsonl(path, kind="pairs")
  (tmp_path / "empty.jsonl").write_text("\n\n")
  with pytest.raises(ValueError, match="empty.jsonl: no records"):
    loaders.load_jsonl(tmp_path / "empty.jsonl")


@pytest.mark.parametrize("module, call, hint", [
    ("datasets", lambda p: loaders.load_hf_dataset(p), "pip install datasets"),
    ("tensorflow_datasets", lambda p: loaders.load_tfds("x", data_dir=p), "rewardjax[tfds]"),
])
def test_optional_dependencies_fail_with_install_hint(tmp_path, monkeypatch, module, call, hint):
  monkeypatch.setitem(sys.modules, module, None)                      # makes the import fail
  with pytest.raises(ImportError, match=rf"{module}.*{hint}".replace("[", r"\[")):
    call(tmp_path)


def test_load_hf_dataset_from_local_files(tmp_path):
  datasets = pytest.importorskip("datasets")
  path = _write_jsonl(tmp_path / "train.jsonl",
                      [{"q": "1+2=", "answer": 3}, {"q": "5-1=", "answer": 4}])
  rows = loaders.load_hf_dataset(path, field_map={"q": "prompt"}, cache_dir=str(tmp_path / "c"))
  assert rows == [{"prompt": "1+2=", "answer": "3"}, {"prompt": "5-1=", "answer": "4"}]
  bad = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": ""}])
  datasets.load_dataset("json", data_files=str(bad), split="train",
                        cache_dir=str(tmp_path / "c")).save_to_disk(str(tmp_path / "saved"))
  with pytest.raises(ValueError, match=r"saved \[train\], row 0: field 'rejected' is empty"):
    loaders.load_hf_dataset(tmp_path / "saved", kind="preference")


def test_load_tfds_decodes_bytes_with_a_stub(tmp_path, monkeypatch):
  calls = []
  stub = types.ModuleType("tensorflow_datasets")
  stub.load = lambda name, **kw: calls.append((name, kw)) or "ds"
  stub.as_numpy = lambda ds: iter([{"question": b"1+2=", "answer": np.int64(3)}])
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", stub)
  rows = loaders.load_tfds("toy", data_dir=tmp_path, split="test",
                           field_map={"question": "prompt"})
  assert rows == [{"prompt": "1+2=", "answer": "3"}]
  assert calls == [("toy", dict(split="test", data_dir=str(tmp_path), download=False))]


def test_load_tfds_prepared_dataset(tmp_path):
  tfds = pytest.importorskip(
      "tensorflow_datasets",
      reason="needs the `tfds` extra (TensorFlow, ~0.5 GB), kept out of the test extra; the "
             "loader's call path is covered without it by "
             "test_load_tfds_decodes_bytes_with_a_stub; run this one with "
             "pip install -e '.[tfds]'")

  class RjToyArithmetic(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"question": tfds.features.Text(), "answer": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(3):
        yield i, {"question": f"{i}+1=", "answer": str(i + 1)}

  RjToyArithmetic(data_dir=str(tmp_path)).download_and_prepare()
  rows = loaders.load_tfds("rj_toy_arithmetic", data_dir=tmp_path,
                           field_map={"question": "prompt"})
  assert sorted(r["prompt"] + r["answer"] for r in rows) == ["0+1=1", "1+1=2", "2+1=3"]


def test_format_prompts_applies_chat_template_only_when_present(tok):
  assert loaders.format_prompts(tok, ["1+2="]) == ["1+2="]
  with pytest.raises(ValueError, match="chat template"):
    loaders.format_prompts(tok, ["1+2="], system_prompt="be brief")
  chat = tokenizers.char_tokenizer()
  chat.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}<assistant>{% endif %}")
  assert loaders.format_prompts(chat, ["1+2="], system_prompt="sys") == [
      "<system>sys\n<user>1+2=\n<assistant>"]
  own_system = [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]
  assert loaders.format_prompts(chat, [own_system], system_prompt="sys") == [
      "<system>mine\n<user>q\n<assistant>"]


def test_resumed_batches_equal_uninterrupted():
  data = [f"x{i}" for i in range(7)]                                 # 7 % 3 != 0: batches straddle
  uninterrupted = list(itertools.islice(loaders.batches(data, 3, seed=4), 10))
  resumed = list(itertools.islice(loaders.batches(data, 3, seed=4, start_step=6), 4))
  assert resumed == uninterrupted[6:]
  assert uninterrupted == list(itertools.islice(loaders.batches(data, 3, seed=4), 10))
  assert uninterrupted != list(itertools.islice(loaders.batches(data, 3, seed=5), 10))


def test_every_epoch_is_a_permutation():
  flat = np.concatenate([loaders.batch_indices(7, 3, seed=0, step=s) for s in range(7)])
  epochs = flat.reshape(3, 7)                                         # 21 positions = 3 epochs
  assert all(sorted(e) == list(range(7)) for e in epochs)
  assert not (epochs[0] == epochs[1]).all()                           # reshuffled every epoch
  with pytest.raises(ValueError, match="batch_size >= 1"):
    loaders.batch_indices(7, 0, seed=0, step=0)


def test_digit_floods_are_not_steps_and_closeness_does_not_overflow():
  from rewardjax.data import preference_data, steps  # noqa: PLC0415

  flood = "9" * 5000  # past Python's 4300-digit int() limit
  assert steps.parse_step(f"{flood}+1=2") is None
  assert steps.consistency(f"1+2=3\n{flood}") == -1  # a wrong final answer, not a crash
  assert steps.consistency("1+2=3\n3") == 1
  assert preference_data.closeness(10**400, 3) == 0.0
  assert preference_data.closeness(5, 3) == 1 / 3
