"""Tokenizers: a built-in character-level tokenizer, local HF loading, padding and decoding.

The char tokenizer is a `tokenizers.Tokenizer` (WordLevel over a fixed alphabet, every character
its own pre-token, a `Fuse` decoder) wrapped as `transformers.PreTrainedTokenizerFast`, so the
tiny built-in models and real Hugging Face models go through the same code. Ids:

    0 <pad>   1 <bos>   2 <eos>   3 <unk>   4.. CHAR_ALPHABET (100 tokens, fits V = 128)

Prompts are LEFT-padded (the model derives positions from `cumsum(mask) - 1`, so padding does not
shift RoPE) and completions RIGHT-padded, which is the layout `rollouts.generate` produces. The
padded length is rounded up to a multiple of `bucket` so jitted code sees few distinct shapes.

Prompts longer than `max_length` are cut from the left (keeping a leading `<bos>`), counted in a
process-wide counter (`truncated_prompt_count`, logged as `data/truncated_prompts`) and warned
about once per process, so a too-small `--config.data.max_prompt_length` is never silent.
"""

import json
import math
import os
import string
import warnings
from collections.abc import Sequence

import numpy as np
from jaxtyping import Array, Int
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
# Digits first so "0".."9" get the small, stable ids 4..13.
CHAR_ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"
# Classes whose tokenizer.json is the whole pipeline. AutoTokenizer may instead rebuild a model
# family's tokenizer from config.json (e.g. Qwen2Tokenizer, which drops our spaces).
_GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
# The files AutoTokenizer builds a tokenizer from (fast, BPE, WordPiece, SentencePiece); on a
# directory with none of them it fails deep inside transformers, naming neither.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                   "vocab.txt", "spiece.model")
_TOKENIZER_FIX = ("point --config.model.checkpoint / --config.model.tokenizer at a Hugging Face "
                  "model directory (as written by save_pretrained), or leave both empty for the "
                  "built-in char tokenizer")
# Process-wide: prompt rows `encode_prompts` has truncated, and whether that was warned about.
_truncated_prompts = 0
_warned_truncation = False


def char_tokenizer(*, add_bos: bool = True) -> PreTrainedTokenizerFast:
  """Builds the character-level tokenizer (100 tokens, pad id 0, left padding).

  Args:
    add_bos: prepend `<bos>` when encoding with `add_special_tokens=True`.

  Returns:
    A `PreTrainedTokenizerFast`; characters outside `CHAR_ALPHABET` map to `<unk>` (id 3).

  >>> tok = char_tokenizer()
  >>> tok("12+7=")["input_ids"]
  [1, 5, 6, 76, 11, 84]
  >>> tok.decode([5, 6, 2], skip_special_tokens=True), len(tok), tok.pad_token_id
  ('12', 100, 0)
  """
  vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + tuple(CHAR_ALPHABET))}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  # "[\s\S]" rather than "." so newlines are tokens too.
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
  tok.decoder = decoders.Fuse()
  if add_bos:
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
  # clean_up_tokenization_spaces=False: the default would turn "1 ." into "1." on decode.
  return PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
      unk_token="<unk>", padding_side="left", clean_up_tokenization_spaces=False)


def load_tokenizer(path_or_name: str) -> PreTrainedTokenizerBase:
  """Loads a tokenizer from local files only; never downloads.

  Args:
    path_or_name: "char" for `char_tokenizer()`, a directory written by `save_pretrained`, or a
      hub id already in the local Hugging Face cache.

  Returns:
    The tokenizer. Directories whose `tokenizer_config.json` names a generic class (as saved by
    `char_tokenizer().save_pretrained`) load as `PreTrainedTokenizerFast` from `tokenizer.json`,
    since `AutoTokenizer` would rebuild a model family's tokenizer from `config.json`.

  Raises:
    FileNotFoundError: nothing local matches `path_or_name`, or it is a directory holding none
      of `TOKENIZER_FILES`; the message names the directory and the fix.
    ValueError: naming the directory, when transformers cannot build its tokenizer.
  """
  if path_or_name == "char":
    return char_tokenizer()
  # Checked here because AutoTokenizer on a directory without tokenizer files raises an unrelated
  # ValueError about sentencepiece / tiktoken that names neither the directory nor the fix.
  if os.path.isdir(path_or_name) and not any(
      os.path.isfile(os.path.join(path_or_name, f)) for f in TOKENIZER_FILES):
    present = sorted(os.listdir(path_or_name))
    raise FileNotFoundError(
        f"{path_or_name} holds no tokenizer: none of {list(TOKENIZER_FILES)} is there (files: "
        f"{present}); {_TOKENIZER_FIX}")
  config_path = os.path.join(path_or_name, "tokenizer_config.json")
  if os.path.isfile(config_path):
    with open(config_path, encoding="utf-8") as f:
      tokenizer_class = json.load(f).get("tokenizer_class")
    if tokenizer_class in _GENERIC_CLASSES:
      return PreTrainedTokenizerFast.from_pretrained(path_or_name, local_files_only=True)
  try:
    return AutoTokenizer.from_pretrained(path_or_name, local_files_only=True)
  except OSError as e:
    raise FileNotFoundError(
        f"no local tokenizer at {path_or_name!r}: rewardjax never downloads; pass a directory "
        f"holding tokenizer.json / tokenizer_config.json, or 'char'; {_TOKENIZER_FIX}") from e
  except ValueError as e:
    raise ValueError(f"{path_or_name}: transformers could not build its tokenizer: {e}") from e


def check_vocab(tokenizer: PreTrainedTokenizerBase, model_vocab_size: int) -> None:
  """Raises ValueError when the tokenizer can emit ids the model's embedding does not have.

  A model vocabulary larger than the tokenizer's is fine (HF checkpoints pad it to a multiple
  of 64 or 128); a smaller one would index out of range silently under jit.

  >>> check_vocab(char_tokenizer(), 128)
  >>> check_vocab(char_tokenizer(), 64)  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ValueError: tokenizer has 100 tokens but the model's vocab_size is 64; set ... (e.g. 128) ...
  """
  n = len(tokenizer)
  if n > model_vocab_size:
    suggestion = 128 * math.ceil(n / 128)
    raise ValueError(
        f"tokenizer has {n} tokens but the model's vocab_size is {model_vocab_size}; set "
        f"model.vocab_size >= {n} (e.g. {suggestion}) or use a tokenizer with at most "
        f"{model_vocab_size} tokens")


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
  """The pad id, falling back to EOS (Llama-style tokenizers have no pad token).

  >>> pad_token_id(char_tokenizer())
  0
  """
  for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
    if token_id is not None:
      return int(token_id)
  raise ValueError("tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


def bucketed_length(length: int, bucket: int, max_length: int | None = None) -> int:
  """Rounds `length` up to a multiple of `bucket` (at least one bucket), capped at max_length.

  >>> [bucketed_length(n, 16) for n in (0, 5, 16, 17)], bucketed_length(17, 16, max_length=20)
  ([16, 16, 16, 32], 20)
  """
  if bucket < 1:
    raise ValueError(f"bucket must be >= 1, got {bucket}")
  padded = bucket * max(1, math.ceil(length / bucket))
  return padded if max_length is None else min(padded, max_length)


def _pad(rows: list[list[int]], length: int, pad_id: int,
         left: bool) -> tuple[np.ndarray, np.ndarray]:
  tokens_BxS = np.full((len(rows), length), pad_id, np.int32)
  mask_BxS = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    span = slice(length - len(row), length) if left else slice(0, len(row))
    tokens_BxS[i, span] = row
    mask_BxS[i, span] = 1
  return tokens_BxS, mask_BxS


def truncated_prompt_count() -> int:
  """Prompt rows `encode_prompts` has cut to `max_length` in this process so far (cumulative).

  Every caller counts (training batches, evaluation, judge prompts); the training loop logs it
  as `data/truncated_prompts`.
  """
  return _truncated_prompts


def _truncate_left(row: list[int], max_length: int, bos_id: int | None) -> list[int]:
  if len(row) <= max_length:
    return row
  if bos_id is not None and row[0] == bos_id and max_length > 1:
    return row[:1] + row[len(row) - max_length + 1:]
  return row[len(row) - max_length:]


def _record_truncation(lengths: list[int], max_length: int, bucket: int) -> None:
  global _truncated_prompts, _warned_truncation
  long = [n for n in lengths if n > max_length]
  if not long:
    return
  _truncated_prompts += len(long)
  if _warned_truncation:  # once per process; the counter carries the rest
    return
  _warned_truncation = True
  warnings.warn(
      f"{len(long)} of {len(lengths)} prompts are longer than max_length={max_length} tokens "
      f"(lengths up to {max(long)}) and lose their beginning (left truncation keeps the last "
      f"tokens and a leading BOS); to keep them whole raise the limit, e.g. "
      f"--config.data.max_prompt_length={bucketed_length(max(long), bucket)} for training "
      "prompts. Warned once per process; tokenizers.truncated_prompt_count() (the metric "
      "data/truncated_prompts) counts every truncated prompt.", stacklevel=3)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    bucket: int = 16,
    max_length: int | None = None,
    add_special_tokens: bool = True,
) -> tuple[Int[np.ndarray, "B S"], Int[np.ndarray, "B S"]]:
  """Tokenizes prompts into LEFT-padded int32 arrays with S bucketed.

  Args:
    tokenizer: any HF tokenizer (pad id from `pad_token_id`).
    prompts: B prompt strings, already chat-formatted if the model needs it.
    bucket: S is the longest prompt rounded up to a multiple of `bucket`.
    max_length: if set, longer prompts keep their LAST max_length tokens (TRL's left
      truncation: the end of a prompt holds the question) and S <= max_length. A row that
      starts with the BOS token (prepended by the tokenizer, e.g. the char tokenizer's `<bos>`,
      or written by a chat template) keeps it first: bos + its last max_length - 1 tokens. The
      model saw BOS at position 0 in every training sequence, so a row without it would be out
      of distribution exactly on the longest prompts. Truncated rows are counted
      (`truncated_prompt_count`) and warned about once per process.
    add_special_tokens: let the tokenizer add its specials (the char tokenizer's `<bos>`).

  Returns:
    `(tokens, mask)`, both int32 `[B, S]`; mask is 1 on real tokens, 0 on left padding.

  >>> tokens, mask = encode_prompts(char_tokenizer(), ["1+2=", "10+20="], bucket=8)
  >>> tokens.tolist()
  [[0, 0, 0, 1, 5, 76, 6, 84], [0, 1, 5, 4, 76, 6, 4, 84]]
  >>> mask.sum(axis=1).tolist()
  [5, 7]
  """
  if not prompts:
    raise ValueError("encode_prompts needs at least one prompt")
  rows = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
  if max_length is not None:
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1 (or None), got {max_length}")
    _record_truncation([len(row) for row in rows], max_length, bucket)
    rows = [_truncate_left(row, max_length, tokenizer.bos_token_id) for row in rows]
  length = bucketed_length(max(len(r) for r in rows), bucket, max_length)
  return _pad(rows, length, pad_token_id(tokenizer), left=True)


def encode_completions(
    tokenizer: PreTrainedTokenizerBase,
    completions: Sequence[str],
    *,
    bucket: int = 16,
    max_length: int | None = None,
    append_eos: bool = True,
) -> tuple[Int[np.ndarray, "B T"], Int[np.ndarray, "B T"]]:
  """Tokenizes completions (SFT targets, preference responses) RIGHT-padded, EOS appended.

  Concatenating `encode_prompts` and this output along the time axis gives the same layout as
  a rollout: `[pad.. prompt | completion eos pad..]`.

  Args:
    tokenizer: any HF tokenizer with an eos token when `append_eos`.
    completions: B completion strings (no special tokens are added besides EOS).
    bucket: T is the longest completion (with EOS) rounded up to a multiple of `bucket`.
    max_length: if set, longer completions are cut on the right (EOS included in the count).
    append_eos: append `tokenizer.eos_token_id` to every completion.

  Returns:
    `(tokens, mask)`, both int32 `[B, T]`; mask is 1 on completion tokens including EOS.

  >>> tokens, mask = encode_completions(char_tokenizer(), ["19", "7"], bucket=4)
  >>> tokens.tolist(), mask.tolist()
  ([[5, 13, 2, 0], [11, 2, 0, 0]], [[1, 1, 1, 0], [1, 1, 0, 0]])
  """
  if not completions:
    raise ValueError("encode_completions needs at least one completion")
  rows = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
  if append_eos:
    if tokenizer.eos_token_id is None:
      raise ValueError("append_eos=True but the tokenizer has no eos token")
    rows = [row + [tokenizer.eos_token_id] for row in rows]
  if max_length is not None:
    rows = [row[:max_length] for row in rows]
  length = bucketed_length(max(len(r) for r in rows), bucket, max_length)
  return _pad(rows, length, pad_token_id(tokenizer), left=False)


def decode_completions(
    tokenizer: PreTrainedTokenizerBase,
    tokens: Int[np.ndarray, "B T"] | Int[Array, "B T"],
    *,
    stop_ids: Sequence[int] = (),
) -> list[str]:
  """Decodes generated completions, cutting each row at its first EOS, pad or stop token.

  Args:
    tokenizer: the tokenizer that produced the ids.
    tokens: `[B, T]` completion ids (prompt excluded), right-padded.
    stop_ids: extra ids that end a completion (e.g. an instruct model's `<|im_end|>`).

  Returns:
    B strings without special tokens.

  >>> decode_completions(char_tokenizer(), np.array([[5, 13, 2, 9], [11, 0, 0, 0]]))
  ['19', '7']
  """
  stops = {int(i) for i in stop_ids}
  stops |= {int(i) for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
  texts = []
  for row in np.asarray(tokens).tolist():
    end = next((t for t, token_id in enumerate(row) if token_id in stops), len(row))
    texts.append(tokenizer.decode(row[:end], skip_special_tokens=True))
  return texts
