"""Real data in: JSONL, HF `datasets` from local files, TFDS; chat templates; resumable batches.

Every loader returns a list of dicts with TRL column names (see `rewardjax.data`), validated
up front so a bad record fails at load time with its file, line and field, not as a shape error
mid-run. `kind` names the required fields (`KINDS`); `field_map` renames source columns first,
e.g. `{"question": "prompt", "solution": "answer"}`.

`datasets` and `tensorflow_datasets` are optional and imported only when their loader is called.
Nothing here downloads: HF datasets are read from local files, TFDS with `download=False`.

`batches` is stateless in its position: batch `step` is a pure function of
`(len(dataset), batch_size, seed, step)`, so a checkpoint stores only the step to resume exactly.
"""

import functools
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from jaxtyping import Int

KINDS = {
    "prompt": ("prompt",),
    "answer": ("prompt", "answer"),
    "sft": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
}
_HF_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _is_messages(value: Any) -> bool:
  return isinstance(value, list) and all(
      isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
      for m in value)


def validate_record(record: Any, *, kind: str, where: str,
                    field_map: dict[str, str] | None = None) -> dict:
  """Checks one record against `KINDS[kind]` and returns it (renamed, answer as a string).

  Args:
    record: a parsed JSON object / dataset row.
    kind: a key of KINDS.
    where: location used in error messages, e.g. "train.jsonl, line 3".
    field_map: source column -> rewardjax field, applied before the checks.

  Returns:
    A new dict; a numeric "answer" becomes its string ("19"), extra fields are kept.

  Raises:
    ValueError: naming `where` and the field, if a field is missing, empty or of the wrong type.
    A prompt may be a string or a TRL conversational list of {"role", "content"} messages;
    the other fields must be strings.

  >>> validate_record({"question": "1+2=", "answer": 3}, kind="answer", where="x",
  ...                 field_map={"question": "prompt"})
  {'prompt': '1+2=', 'answer': '3'}
  >>> validate_record({"prompt": " "}, kind="prompt", where="a.jsonl, line 2")
  Traceback (most recent call last):
  ValueError: a.jsonl, line 2: field 'prompt' is empty
  """
  if kind not in KINDS:
    raise ValueError(f"unknown kind {kind!r}; valid kinds: {tuple(KINDS)}")
  if not isinstance(record, dict):
    raise ValueError(f"{where}: expected an object with fields {KINDS[kind]}, "
                     f"got {type(record).__name__}")
  out = {(field_map or {}).get(k, k): v for k, v in record.items()}
  for field in KINDS[kind]:
    if field not in out:
      raise ValueError(
          f"{where}: missing field {field!r} (kind {kind!r} needs {KINDS[kind]}; the record has "
          f"{tuple(out)}; rename columns with field_map)")
    value = out[field]
    if field == "answer" and isinstance(value, (int, float)) and not isinstance(value, bool):
      value = out[field] = str(value)
    if field == "prompt" and _is_messages(value):
      empty = not value
    elif isinstance(value, str):
      empty = not value.strip()
    else:
      raise ValueError(f"{where}: field {field!r} must be a string"
                       f"{' or a list of messages' if field == 'prompt' else ''}, "
                       f"got {type(value).__name__}")
    if empty:
      raise ValueError(f"{where}: field {field!r} is empty")
  return out


def load_jsonl(path: str | os.PathLike, *, kind: str = "answer",
               field_map: dict[str, str] | None = None) -> list[dict]:
  """Reads one record per line (blank lines skipped); see `validate_record` for the checks.

  Raises:
    ValueError: "<path>, line <n>: ..." for bytes that are not UTF-8, invalid JSON, a missing or
      empty field; or no records.
  """
  records = []
  # Bytes, decoded line by line: a text-mode read raises UnicodeDecodeError at an offset in its
  # read buffer, naming neither the file, the line nor the fix.
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      where = f"{os.fspath(path)}, line {lineno}"
      try:  # utf-8-sig on line 1 drops the byte-order mark some editors write
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(
            f"{where}: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line is not "
            "UTF-8; re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.jsonl > "
            "out.jsonl` (latin1 being its actual encoding)") from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); JSONL needs one "
                         "complete JSON object per line") from None
      records.append(validate_record(record, kind=kind, where=where, field_map=field_map))
  if not records:
    raise ValueError(f"{os.fspath(path)}: no records")
  return records


def _import_optional(module: str, install: str, caller: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"{caller} needs the optional package {module!r}, which is not "
                      f"installed: run `{install}`") from e


def load_hf_dataset(path: str | os.PathLike, *, kind: str = "answer", split: str = "train",
                    field_map: dict[str, str] | None = None,
                    cache_dir: str | None = None) -> list[dict]:
  """Reads a Hugging Face `datasets` dataset from LOCAL files (no hub access).

  Args:
    path: a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, a
      .json / .jsonl / .csv / .parquet file, or a directory of such files.
    kind, field_map: as in `validate_record`.
    split: the split to read; a single file is exposed under this name.
    cache_dir: where `datasets` may cache Arrow files (default: its own).

  Returns:
    Validated records, one per row.

  Raises:
    ImportError: naming `pip install datasets` when the package is missing.
    FileNotFoundError: `path` does not exist locally.
  """
  datasets = _import_optional("datasets", "pip install datasets", "load_hf_dataset")
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist; load_hf_dataset reads local files only")
  saved = ("dataset_info.json", "state.json", "dataset_dict.json")
  if os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in saved):
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
      ds = ds[split]
  elif os.path.isfile(path):
    suffix = os.path.splitext(path)[1]
    if suffix not in _HF_BUILDERS:
      raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of "
                       f"{tuple(_HF_BUILDERS)}")
    ds = datasets.load_dataset(_HF_BUILDERS[suffix], data_files={split: path}, split=split,
                               cache_dir=cache_dir)
  else:
    ds = datasets.load_dataset(path, split=split, cache_dir=cache_dir)
  return [validate_record(row, kind=kind, where=f"{path} [{split}], row {i}",
                          field_map=field_map) for i, row in enumerate(ds)]


def _from_numpy(value: Any) -> Any:
  if isinstance(value, np.generic):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else value


def load_tfds(name: str, *, data_dir: str | os.PathLike, split: str = "train",
              kind: str = "answer", field_map: dict[str, str] | None = None) -> list[dict]:
  """Reads an already prepared TFDS dataset: `tfds.load(name, split, data_dir, download=False)`.

  Text features arrive as bytes and are decoded as UTF-8; numeric scalars become Python numbers.

  Raises:
    ImportError: naming the `tfds` extra when tensorflow_datasets is missing.
  """
  tfds = _import_optional("tensorflow_datasets",
                          "pip install 'rewardjax[tfds]' (tensorflow-datasets, tensorflow-cpu)",
                          "load_tfds")
  ds = tfds.load(name, split=split, data_dir=os.fspath(data_dir), download=False)
  return [validate_record({k: _from_numpy(v) for k, v in example.items()}, kind=kind,
                          where=f"tfds {name} [{split}], example {i}", field_map=field_map)
          for i, example in enumerate(tfds.as_numpy(ds))]


def format_prompts(tokenizer: Any, prompts: Sequence[str | list[dict]], *,
                   system_prompt: str | None = None) -> list[str]:
  """Applies the tokenizer's chat template, if it has one, ending with the generation prompt.

  With a template: `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
  tokenize=False)`, a string prompt becoming one user message (after `system_prompt`, if given).
  Without one (the char tokenizer): string prompts pass through unchanged.

  Args:
    tokenizer: an HF tokenizer.
    prompts: strings or TRL conversational message lists.
    system_prompt: optional system message; needs a chat template.

  Returns:
    One prompt string per input, ready for `tokenizers.encode_prompts`.
  """
  if not getattr(tokenizer, "chat_template", None):
    if system_prompt is not None or not all(isinstance(p, str) for p in prompts):
      raise ValueError("system prompts and message lists need a chat template, and this "
                       "tokenizer has none; pass plain string prompts")
    return list(prompts)
  system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
  formatted = []
  for p in prompts:
    messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
    if not (messages and messages[0]["role"] == "system"):  # a record's own system wins
      messages = system + messages
    formatted.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                   tokenize=False))
  return formatted


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False  # shared through the cache
  return perm


def batch_indices(num_examples: int, batch_size: int, *, seed: int,
                  step: int) -> Int[np.ndarray, " B"]:
  """Dataset indices of batch `step`: positions step*B .. step*B+B-1 of the epoch stream.

  The stream concatenates epoch permutations, epoch e shuffled by default_rng([seed, e]); a
  batch may straddle two epochs, so every batch is full and no example is dropped.

  Args:
    num_examples: dataset size n >= 1.
    batch_size: B >= 1.
    seed: shuffling seed.
    step: batch number (0-based), the only state a checkpoint needs.

  Returns:
    int64 `[B]` indices in [0, n).

  >>> sorted(batch_indices(4, 4, seed=0, step=1).tolist())  # batch 1 = epoch 1, a permutation
  [0, 1, 2, 3]
  """
  if num_examples < 1 or batch_size < 1 or step < 0:
    raise ValueError(f"need num_examples >= 1, batch_size >= 1 and step >= 0, got "
                     f"{num_examples}, {batch_size}, {step}")
  positions_B = step * batch_size + np.arange(batch_size)
  epochs_B, offsets_B = np.divmod(positions_B, num_examples)
  indices_B = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs_B).tolist():
    rows = epochs_B == epoch
    indices_B[rows] = _epoch_permutation(num_examples, seed, epoch)[offsets_B[rows]]
  return indices_B


def batches(dataset: Sequence[Any], batch_size: int, seed: int = 0,
            start_step: int = 0) -> Iterator[list]:
  """Endless, deterministic, resumable batches of records; epoch-wise shuffled by `seed`.

  Resuming at `start_step=k` yields exactly what an uninterrupted iterator yields from its k-th
  batch on (see `batch_indices`). Stop it with the training loop (or `itertools.islice`).

  >>> uninterrupted = batches(list("abcde"), 2, seed=1)
  >>> [next(uninterrupted) for _ in range(4)][3] == next(batches(list("abcde"), 2, 1, start_step=3))
  True
  """
  num_examples = len(dataset)
  step = start_step
  while True:
    yield [dataset[i] for i in batch_indices(num_examples, batch_size, seed=seed,
                                              step=step).tolist()]
    step += 1
