"""A reward-model training run exports `<workdir>/hf` as a `*ForSequenceClassification`
directory (`algorithms/reward_model.py` `export`, `models/hf_reward.py`): transformers loads it
with no missing or unexpected tensors and scores a right-padded batch as rewardjax's
`load_reward_model(workdir)` does, and the exported weights are the final checkpoint's (plus
the zero q/k/v biases every Qwen2 checkpoint carries).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import transformers
from flax import nnx

from configs import common
from rewardjax import train
from rewardjax.data import tokenizers
from rewardjax.models import hf_reward

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5  # float32, max abs over the [B] scores


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rm_run"))
  config = common.load_config(
      os.path.join(REPO, "configs", "reward_model.py") + ":smoke",
      {"warmstart.steps": 0, "checkpoint.async_save": False, "train.eval_every": 100})
  assert config.train.export_hf
  train.run(config, workdir)
  return workdir


def _batch(tokenizer):
  """Right-padded rows of unequal length; no row ends with the pad id."""
  rows = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]
          for t in ("12+7=19", "3-5=-2", "9*9=81 and more text")]
  length = max(map(len, rows))
  pad = tokenizers.pad_token_id(tokenizer)
  tokens = np.array([r + [pad] * (length - len(r)) for r in rows], np.int64)
  mask = np.array([[1] * len(r) + [0] * (length - len(r)) for r in rows], np.int64)
  return tokens, mask


def test_transformers_loads_the_export_with_equal_scores(workdir):
  directory = os.path.join(workdir, "hf")
  with open(os.path.join(directory, "config.json")) as f:
    config = json.load(f)
  assert config["architectures"] == ["Qwen2ForSequenceClassification"]
  assert config["num_labels"] == 1 and config["pad_token_id"] == 0
  torch_model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  tokenizer = tokenizers.load_tokenizer(directory)   # the run saved its tokenizer with it
  tokens, mask = _batch(tokenizer)
  with torch.no_grad():
    expected = torch_model(input_ids=torch.tensor(tokens),
                           attention_mask=torch.tensor(mask)).logits[:, 0].numpy()
  model = hf_reward.load_reward_model(workdir)     # the workdir resolves to its hf/
  scores = np.asarray(model(jnp.asarray(tokens, jnp.int32),
                            attention_mask=jnp.asarray(mask, jnp.int32)))
  assert np.abs(expected).max() > 0.1  # O(1) scores, so TOL is a real test
  np.testing.assert_allclose(scores, expected, atol=TOL, rtol=0)


def test_export_holds_the_final_checkpoint(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  assert manager.latest_step() == 2
  state = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  exported = nnx.to_pure_dict(nnx.split(hf_reward.load_reward_model(workdir), nnx.Param)[1])
  trained, loaded = _by_path(state["params"]), _by_path(exported)
  assert set(trained) <= set(loaded)
  for path, x in trained.items():
    np.testing.assert_array_equal(x, loaded[path], err_msg=path)
  # Qwen2 checkpoints always carry q/k/v biases: a model without them is written with zeros.
  extra = set(loaded) - set(trained)
  assert {p.rsplit("/", 1)[1] for p in extra} == {"q_bias_hk", "k_bias_hk", "v_bias_hk"}, extra
  assert all(not np.any(loaded[p]) for p in extra)


def _by_path(tree):
  """{"backbone/layers/0/...": array}, list indices and dict keys alike as strings."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(x)
          for path, x in flat}
