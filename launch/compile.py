"""Compiles a config's steps for a TPU pod on this (CPU) host and prints memory and roofline.

    pip install -e ".[aot]"   # libtpu: describes TPU topologies, no TPU needed
    python launch/compile.py --config=configs/grpo.py:qwen2_5_7b --topology=v5p:4x4x4
    python launch/compile.py --config=configs/dpo.py:llama3_1_70b --topology=v6e:16x16 \
        --mesh=fsdp:32,tensor:8 --stages=update

Prints one Markdown row per compiled program (update, reference pass, rollout): per-chip
memory against the chip's HBM, whether it fits (else by how much and which axis to grow),
model TFLOPs, roofline step time and MFU. All logic lives in `rewardjax.aot`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py:qwen2_5_7b",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5p:4x4x4", "TPU topology, e.g. v5p:4x4x4 (64 "
                                "chips), v6e:16x16 (256 chips).")
_MESH = flags.DEFINE_string("mesh", "", "e.g. fsdp:16,tensor:4 (data takes the chips left "
                            "over); empty: FSDP over every chip, tensor 8 above 20B params.")
_STAGES = flags.DEFINE_list("stages", ["update", "reference", "rollout"],
                            "Programs to compile: update, reference, rollout (GRPO).")


def main(argv):
  del argv
  from rewardjax import aot  # noqa: PLC0415 (after flag parsing, so --help is fast)

  config = _CONFIG.value
  m = config.model
  print(f"{flags.FLAGS['config'].config_filename}: {config.algorithm}, "
        f"{m.num_layers} layers, D={m.hidden_size}, params {m.param_dtype}, compute {m.dtype}, "
        f"attention {m.attention_impl}, remat {m.remat}")
  print(aot.HEADER, flush=True)
  reports = []
  for r in aot.iter_reports(config, aot.AotOptions(
      topology=_TOPOLOGY.value, mesh=_MESH.value, stages=tuple(_STAGES.value))):
    print(aot.table_row(r), flush=True)   # a big program takes minutes: show each at once
    reports.append(r)
  for r in reports:
    if not r.fits:
      print(f"{r.stage}: {r.advice()}")


if __name__ == "__main__":
  app.run(main)
