"""The shipped pretrained model: intact, produced by configs/pretrain.py, and loadable.

The manifest records each file's sha256, the pretraining config's fingerprint and the losses of
a re-run of the config's first steps (`launch/ship_pretrained.py`); this test repeats that
re-run, so a change to the code or data that the shipped model came from is caught.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest

from configs import dpo as dpo_config
from configs import grpo, spark
from configs import reward_model as reward_model_config
from launch import ship_pretrained
from rewardjax import pretrained, train


@pytest.fixture(scope="module")
def manifest():
  return pretrained.verify(pretrained.ARITH)


def test_shipped_files_match_the_manifest_and_the_config(manifest):
  config = ship_pretrained.pretrain_config()
  assert manifest["config_fingerprint"] == ship_pretrained.shipped_fingerprint(config)
  assert manifest["steps"] == config.train.steps
  assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
  size = sum(os.path.getsize(os.path.join(pretrained.ARITH, f)) for f in manifest["files"])
  assert size < 20e6  # a few MB in the repository


def test_first_steps_of_the_command_reproduce(manifest, tmp_path):
  losses = ship_pretrained.first_steps(str(tmp_path))
  assert losses.keys() == manifest["first_losses"].keys()
  np.testing.assert_allclose([losses[k] for k in sorted(losses)],
                             [manifest["first_losses"][k] for k in sorted(losses)], rtol=1e-4)


def test_every_default_config_starts_from_it():
  for module in (spark, grpo, dpo_config, reward_model_config):
    assert module.get_config().model.checkpoint == pretrained.ARITH, module.__name__


def _copy(tmp_path):
  target = tmp_path / "arith"
  shutil.copytree(pretrained.ARITH, target)
  return target


def test_corrupted_or_missing_file_is_named_with_the_rebuild_command(tmp_path):
  target = _copy(tmp_path)
  with open(target / "model.safetensors", "r+b") as f:
    f.seek(200)
    f.write(b"\x00\x01\x02\x03")
  with pytest.raises(ValueError, match=r"model\.safetensors is corrupted.*configs/pretrain\.py"):
    pretrained.verify(str(target))
  os.remove(target / "config.json")
  with pytest.raises(FileNotFoundError, match=r"config\.json is missing.*configs/pretrain\.py"):
    pretrained.verify(str(target))
  (target / pretrained.MANIFEST).write_text("{not json")
  with pytest.raises(ValueError, match=r"is corrupted.*configs/pretrain\.py"):
    pretrained.verify(str(target))


def test_a_model_directory_without_a_manifest_is_checked_too(tmp_path):
  """A user's --config.model.checkpoint: no manifest, but config.json and whole weights."""
  target = _copy(tmp_path)
  os.remove(target / pretrained.MANIFEST)
  assert pretrained.verify(str(target)) is None
  weights = target / "model.safetensors"
  with open(weights, "r+b") as f:
    f.truncate(weights.stat().st_size // 2)
  with pytest.raises(ValueError, match=rf"{re.escape(str(weights))} is truncated: .*"
                                       r"re-download it or re-export the model"):
    pretrained.verify(str(target))
  os.remove(weights)
  with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or "
                                              r"model\.safetensors\.index\.json in"):
    pretrained.verify(str(target))
  fix = r"point --config\.model\.checkpoint at a Hugging Face model directory"
  os.remove(target / "config.json")
  with pytest.raises(FileNotFoundError, match=rf"{target} has no config\.json.*{fix}"):
    pretrained.verify(str(target))
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'gone'} does not exist; {fix}"):
    pretrained.verify(str(tmp_path / "gone"))


def test_a_run_from_an_empty_checkpoint_directory_names_it_and_the_fix(tmp_path):
  # It used to fail in the tokenizer loader with a message about sentencepiece.
  (tmp_path / "empty").mkdir()
  config = grpo.get_config()
  config.model.checkpoint = str(tmp_path / "empty")
  # The config check names the field before any work (no workdir is even created) ...
  with pytest.raises(ValueError, match=r"--config\.model\.checkpoint='.*empty': has no "
                     r"config\.json; point it at a Hugging Face model directory"):
    train.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
  # ... and `pretrained.verify` (the make_job check) names the directory and its files.
  with pytest.raises(FileNotFoundError, match=r"empty has no config\.json, so it is not a Hugging "
                     r"Face model directory \(files: \[\]\); point --config\.model\.checkpoint"):
    pretrained.verify(str(tmp_path / "empty"))


def test_missing_shipped_directory_is_named(monkeypatch, tmp_path):
  monkeypatch.setattr(pretrained, "ARITH", str(tmp_path / "gone"))
  with pytest.raises(FileNotFoundError, match=r"shipped model is missing.*configs/pretrain\.py"):
    pretrained.verify(str(tmp_path / "gone"))


def test_a_run_refuses_a_corrupted_model_before_any_work(tmp_path):
  target = _copy(tmp_path)
  with open(target / "model.safetensors", "r+b") as f:
    f.truncate(1000)
  config = grpo.get_config()
  config.model.checkpoint = str(target)
  with pytest.raises(ValueError, match="model.safetensors is corrupted"):
    train.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_the_shipped_model_solves_and_judges_a_little(manifest):
  """Its recorded held-out results: the starting point every default config assumes."""
  heldout = manifest["heldout"]
  assert 0.4 < heldout["final/accuracy"] < 0.95
  assert heldout["final/judge_accuracy"] > 0.5
  json.dumps(manifest)


def test_shipped_reward_model_matches_its_manifest_and_loads_as_a_reward_model():
  from rewardjax.models import hf_reward  # noqa: PLC0415

  manifest = pretrained.verify(pretrained.ARITH_RM)
  config = ship_pretrained.pretrain_config(model="arith_rm")
  assert manifest["config_fingerprint"] == ship_pretrained.shipped_fingerprint(config)
  assert manifest["steps"] == config.train.steps
  assert manifest["heldout"]["final/pair_accuracy"] > 0.9
  model = hf_reward.load_reward_model(pretrained.ARITH_RM)
  assert model.pool == "last" and model.backbone.config.vocab_size == 128


def test_shipped_process_reward_model_matches_its_manifest_and_scores_steps():
  from rewardjax.models import hf_reward  # noqa: PLC0415

  manifest = pretrained.verify(pretrained.ARITH_PRM)
  config = ship_pretrained.pretrain_config(model="arith_prm")
  assert manifest["config_fingerprint"] == ship_pretrained.shipped_fingerprint(config)
  assert manifest["steps"] == config.train.steps
  # Better than the majority label (correct steps are ~63% of the held-out steps).
  assert manifest["heldout"]["final/step_accuracy"] > 0.7
  model = hf_reward.load_reward_model(pretrained.ARITH_PRM)
  assert model.backbone.config.vocab_size == 128
